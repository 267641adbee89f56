"""Study C's tables and claims: C1 (training per optimiser), C2 (U-Net vs U-Net++), the results table
with CIs and Holm-corrected paired tests, and the seed's claims tested on per-volume DSC. Read from the
grid's results; nothing here trains."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seglib.config import schema
from seglib.report.tables import format_number

from seglib.eval.stats import paired_test, test_claim
from seglib.eval.tables import ci_columns, ci_summary, results_table

METRICS = ["dice", "precision", "recall", "hd95"]
#: loss.name → how the tables and texts name it
LOSS_LABELS = {**schema.LOSS_LABELS, "dice": "Dice", "bce": "BCE"}  # every loss a configuration may choose
MODEL_LABELS = {"unet": "U-Net", "unetpp": "U-Net++"}
OPTIM_LABELS = {"adam": "Adam", "sgd": "SGD"}
BASELINE = ("unet", "dice", "adam")
# the seed's best validation mean DSC (Table of the seed; U-Net++ with log-cosh Dice: 0.914266 / 0.914497)
SEED_DSC = {("unet", "dice", "adam"): 0.915472, ("unet", "bce", "adam"): 0.914088,
            ("unet", "log_cosh_dice", "adam"): 0.911516, ("unet", "shape_aware", "adam"): 0.914978,
            ("unet", "dice", "sgd"): 0.812136, ("unet", "bce", "sgd"): 0.798099,
            ("unet", "log_cosh_dice", "sgd"): 0.794323, ("unet", "shape_aware", "sgd"): 0.793439,
            ("unetpp", "dice", "adam"): 0.913730, ("unetpp", "log_cosh_dice", "adam"): 0.914497}



# --------------------------------------------------------------------------- labels


def with_names(runs: pd.DataFrame) -> pd.DataFrame:
    """Add readable ``model``, ``loss``, ``optimizer`` columns and a ``name`` ("U-Net + Dice + Adam")."""
    out = runs.copy()
    for col, default in (("model", "unet"), ("loss", "dice"), ("optim", "adam")):
        if col not in out:
            out[col] = default
    out["name"] = [f"{MODEL_LABELS[m]} + {LOSS_LABELS[l]} + {OPTIM_LABELS[o]}"
                   for m, l, o in zip(out["model"], out["loss"], out["optim"])]
    return out


def named_cases(grid) -> pd.DataFrame:
    """Per-case metrics with ``config`` replaced by the readable name."""
    return with_names(grid.cases).assign(config=lambda d: d["name"])


def baseline_name() -> str:
    m, l, o = BASELINE
    return f"{MODEL_LABELS[m]} + {LOSS_LABELS[l]} + {OPTIM_LABELS[o]}"


# --------------------------------------------------------------------------- tables


def table_c1(grid) -> pd.DataFrame:
    """C1: training per optimiser (U-Net): loss, lr, max epoch, batch, converge time (best epoch),
    training time, time per epoch, best validation mean DSC; means over seeds, the seed's DSC beside."""
    runs = with_names(grid.runs)
    runs = runs[runs["model"] == "unet"]
    rows = []
    for name, sub in runs.groupby("name", sort=False):
        m, l, o = sub.iloc[0][["model", "loss", "optim"]]
        # what the runs trained with (their own configs), not what the profile's defaults say
        lrs, batches = sorted(set(sub["lr"])), sorted(set(sub["batch_size"]))
        rows.append({"optimizer": OPTIM_LABELS[o], "loss": LOSS_LABELS[l],
                     "lr": lrs[0] if len(lrs) == 1 else ", ".join(f"{v:g}" for v in lrs),
                     "max epoch": int(sub["epochs_run"].max()),
                     "batch": batches[0] if len(batches) == 1 else ", ".join(map(str, batches)),
                     "converge time (best epoch)": float(sub["best_epoch"].mean()),
                     "training time (s)": float(sub["train_time_s"].mean()),
                     "time per epoch (s)": float(sub["time_per_epoch_s"].mean()),
                     "seed's DSC": SEED_DSC.get((m, l, o), np.nan)})
    if not rows:  # no U-Net in this grid: the notebook says so
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    out["name"] = [n for n, _ in runs.groupby("name", sort=False)]
    out = out.merge(_ci_and_test(grid), on="name", how="left").drop(columns="name")
    first = ["optimizer", "loss", "lr", "max epoch", "batch", "converge time (best epoch)", "training time (s)",
             "time per epoch (s)", DSC, *ci_columns(DSC), "seed's DSC"]
    out = out[first + [c for c in out.columns if c not in first]]
    return out.sort_values(["optimizer", "loss"], kind="stable").reset_index(drop=True)


#: C1's and C2's DSC column: mean per volume (over seeds first) with its 95 % CI over volumes
DSC = "validation mean DSC (per volume)"


def _ci_and_test(grid) -> pd.DataFrame:
    """Mean DSC per volume with its 95 % CI, and the Holm-corrected test against the baseline, by ``name``."""
    res = table_results(grid)
    src = ["dice (per case)", *ci_columns("dice (per case)")]
    return res[["configuration", *src, "p (Holm)", "differs from baseline"]].rename(
        columns={"configuration": "name", **dict(zip(src, [DSC, *ci_columns(DSC)]))})


def table_c2(grid) -> pd.DataFrame:
    """C2: U-Net against U-Net++ with the same loss and optimiser, paired per volume."""
    cases = with_names(grid.cases)
    tests = _ci_and_test(grid).set_index("name")
    differs = tests["differs from baseline"].to_dict()
    rows = []
    for (l, o), sub in cases.groupby(["loss", "optim"], sort=False):
        if set(sub["model"]) != {"unet", "unetpp"}:
            continue
        per_case = sub.groupby(["model", "case_id"])["dice"].mean().unstack("model")
        t = paired_test(per_case["unetpp"].to_numpy(), per_case["unet"].to_numpy())
        pp_name, unet_name = (f"{net} + {LOSS_LABELS[l]} + {OPTIM_LABELS[o]}" for net in ("U-Net++", "U-Net"))
        row = {"loss": LOSS_LABELS[l], "optimizer": OPTIM_LABELS[o]}
        for label, name in (("U-Net DSC", unet_name), ("U-Net++ DSC", pp_name)):
            for src, dst in zip((DSC, *ci_columns(DSC)), (label, *ci_columns(label))):
                row[dst] = tests[src].get(name, np.nan)
        row.update({"difference (points)": 100 * (per_case["unetpp"].mean() - per_case["unet"].mean()),
                    "seed's U-Net": SEED_DSC.get(("unet", l, o)), "seed's U-Net++": SEED_DSC.get(("unetpp", l, o)),
                    "Wilcoxon p": t["p"], "cases": t["n"],
                    "U-Net++ differs from U-Net + Dice + Adam": differs.get(pp_name)})
        rows.append(row)
    return pd.DataFrame(rows)


def table_results(grid) -> pd.DataFrame:
    """Every configuration: per-volume metrics, mean [95 % CI], and the paired test against U-Net + Dice + Adam."""
    cases = named_cases(grid)
    return results_table(cases, METRICS, baseline_name())


def optimizer_pairs(grid) -> tuple[pd.Series, pd.Series]:
    """Per-volume DSC with Adam and with SGD (U-Net, averaged over losses and seeds), paired by case."""
    cases = with_names(grid.cases)
    cases = cases[cases["model"] == "unet"]
    per = cases.groupby(["optim", "case_id"])["dice"].mean().unstack("optim")
    return per.get("adam", pd.Series(dtype=float)), per.get("sgd", pd.Series(dtype=float))


def claims(grid) -> list[dict]:
    cases = with_names(grid.cases)
    out = []
    adam, sgd = optimizer_pairs(grid)
    if len(adam) and len(sgd):
        c = test_claim(adam.to_numpy(), sgd.to_numpy(), "Adam beats SGD", "greater", name_a="Adam", name_b="SGD")
        out.append(_claim("C-adam-sgd", "Adam beats SGD", "Adam 0.911-0.915 vs SGD 0.793-0.812 DSC", c))
    unet = cases[(cases["model"] == "unet") & (cases["optim"] == "adam")]
    pp = cases[(cases["model"] == "unetpp") & (cases["optim"] == "adam")]
    if len(pp):
        losses = sorted(set(pp["loss"]))
        a = pp[pp["loss"].isin(losses)].groupby("case_id")["dice"].mean()
        b = unet[unet["loss"].isin(losses)].groupby("case_id")["dice"].mean()
        t = paired_test(a.to_numpy(), b.reindex(a.index).to_numpy())
        diff = 100 * (a.mean() - b.mean())
        verdict = "inconclusive" if not np.isfinite(t["p"]) else (
            "supported" if diff > 0 and t["p"] >= 0.05 else "not supported")
        out.append({"id": "C-unetpp", "claim": "U-Net++ beats U-Net, but not significantly",
                    "seed_says": "U-Net++ 0.2-0.3 points higher, not significant (untested)",
                    "measured": f"U-Net++ − U-Net = {diff:+.2f} points of DSC (two-sided Wilcoxon p = {format_number(t['p'], p_value=True)}, "
                                f"{t['n']} volumes)", "p": _num(t["p"]), "verdict": verdict})
    good = unet[unet["loss"].isin(["dice", "shape_aware"])].groupby("case_id")["dice"].mean()
    bad = unet[unet["loss"].isin(["bce", "log_cosh_dice"])].groupby("case_id")["dice"].mean()
    if len(good) and len(bad):
        c = test_claim(good.to_numpy(), bad.reindex(good.index).to_numpy(),
                       "Dice and shape-aware beat BCE and log-cosh Dice", "greater")
        out.append(_claim("C-losses", "Dice and shape-aware beat BCE and log-cosh Dice",
                          "Dice 0.9155 and shape-aware 0.9150 vs BCE 0.9141 and log-cosh 0.9115 (Adam)", c))
    return out


def _claim(cid, claim, seed_says, c) -> dict:
    return {"id": cid, "claim": claim, "seed_says": seed_says, "measured": c["measured"], "p": _num(c["p"]),
            "verdict": c["verdict"]}


def _num(x):
    return float(x) if x is not None and np.isfinite(x) else None


def headline(grid) -> dict:
    cases = named_cases(grid)
    per = cases.groupby(["config", "seed"])["dice"].mean().groupby("config").mean().sort_values(ascending=False)
    return {"best_config": per.index[0], "best_mean_dsc": float(per.iloc[0]),
            "baseline_mean_dsc": float(per.get(baseline_name(), np.nan)),
            "mean_dsc": {k: float(v) for k, v in per.items()}}


def shown_name(grid) -> str:
    """The configuration C4 and C5 show: the baseline, or the grid's first one where it has no baseline."""
    names = list(dict.fromkeys(with_names(grid.runs)["name"]))
    return baseline_name() if baseline_name() in names else names[0]


def per_volume(grid, name: str | None = None) -> pd.Series:
    """Per-volume DSC (mean over seeds) of one configuration (default the baseline), for C4."""
    cases = named_cases(grid)
    name = name or shown_name(grid)
    return cases[cases["config"] == name].groupby("case_id")["dice"].mean()


def examples(grid, name: str | None = None, seed: int | None = None, n: int | None = None) -> list[dict]:
    """C5: the stored example slices of one run (image FLAIR channel, truth, prediction); the first ``n``
    (``settings.n_examples``) of the ones the run stored, all when ``n`` is None."""
    runs = with_names(grid.runs)
    name = name or shown_name(grid)
    sub = runs[runs["name"] == name]
    row = sub.iloc[0] if seed is None else sub[sub["seed"] == seed].iloc[0]
    preds = grid.predictions[row["key"]]
    items = []
    for k in sorted(p for p in preds if p.endswith("/pred")):
        s = k.split("/")[0]
        img = np.asarray(preds[f"{s}/image"], dtype=np.float32)
        truth = np.asarray(preds[f"{s}/truth"])
        items.append({"image": img[1] if img.ndim == 3 and img.shape[0] > 1 else img.reshape(img.shape[-2:]),
                      "truth": truth, "pred": np.asarray(preds[k]),
                      "label": f"{s}: tumour {int(truth.sum())} px"})
    return items[:n]


def named_history(grid) -> pd.DataFrame:
    """Per-epoch history with ``config`` replaced by the readable name, and for C3's small multiples a
    ``network + optimiser`` column (one row of panels each) and a ``loss function`` column (the lines)."""
    h = with_names(grid.history).assign(config=lambda d: d["name"])
    h["network + optimiser"] = [f"{MODEL_LABELS[m]} + {OPTIM_LABELS[o]}" for m, o in zip(h["model"], h["optim"])]
    h["loss function"] = [LOSS_LABELS[l] for l in h["loss"]]
    return h


def index_summary(grid) -> pd.DataFrame:
    """Mean DSC per volume of every configuration with its 95 % CI and the seed's best validation DSC."""
    seeds = {f"{MODEL_LABELS[m]} + {LOSS_LABELS[l]} + {OPTIM_LABELS[o]}": v for (m, l, o), v in SEED_DSC.items()}
    return ci_summary(table_results(grid), "dice", seeds)
