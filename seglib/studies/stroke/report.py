"""Study A's tables (A1, A2, A5), the sentences that report them, the claims and the headline.

Everything here reads the results of the grid (:class:`seglib.studies.collect.GridResults`), the
memory measurement and the sampler study; nothing trains or measures. Configuration labels are
those of :func:`seglib.runs.cell_label` (``"conv=3d, size=32, loss=dice_bce"``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seglib.config import schema
from seglib.eval.stats import mean_ci, test_claim
from seglib.studies.collect import config_order
from seglib.eval.tables import ci_columns, ci_summary, results_table

A1_METRICS = ("dice", "precision", "recall", "volume_diff", "lesion_f1")
#: loss.name → how the tables and texts name it
LOSS_LABELS = {**schema.LOSS_LABELS, "dice_bce": "DiceBCE", "gdl_ce": "GDL+CE (corrected)",
               "gdl_ce_as_published": "GDL+CE as published"}  # every loss a configuration may choose
CONV_NAMES = {"3d": "3D", "2+1d": "(2+1)D"}
ALPHA = 0.05


# ----------------------------------------------------------------------------- helpers
def _run_axes(grid) -> pd.DataFrame:
    cols = [c for c in ("key", "config", "seed", "conv", "size", "loss") if c in grid.runs.columns]
    return grid.runs[cols]


def _cases(grid) -> pd.DataFrame:
    """Per-case rows with the run's grid values (joined on the run key, so a per-case column
    named like an axis cannot shadow it)."""
    axes = _run_axes(grid).drop(columns=["config", "seed"])
    cases = grid.cases.drop(columns=[c for c in ("conv", "size", "loss") if c in grid.cases.columns
                                     and c in axes.columns])
    return cases.merge(axes, on="key", how="left")


def _per_case(grid, metric: str = "dice") -> pd.DataFrame:
    """Mean over seeds per (config, case): columns config, conv, size, loss, case_id, value."""
    c = _cases(grid)
    keys = ["config"] + [k for k in ("conv", "size", "loss") if k in c.columns] + ["case_id"]
    return c.groupby(keys, sort=False)[metric].mean().rename("value").reset_index()


def baseline_label(grid) -> str:
    """The label of DiceBCE with 3D convolution at the smallest size (the first config if absent)."""
    runs = grid.runs
    sel = pd.Series(True, index=runs.index)
    if "conv" in runs:
        sel &= runs["conv"] == "3d"
    if "loss" in runs:
        sel &= runs["loss"] == "dice_bce"
    if "size" in runs and sel.any():
        sel &= runs["size"] == runs.loc[sel, "size"].min()
    labels = runs.loc[sel, "config"]
    return str(labels.iloc[0]) if len(labels) else config_order(runs)[0]


def _dice_by_config(grid) -> pd.Series:
    """Mean per-case Dice of each config (cases averaged over seeds first), in grid order."""
    per_case = grid.cases.groupby(["config", "case_id"], sort=False)["dice"].mean()
    return per_case.groupby(level="config", sort=False).mean().reindex(config_order(grid.runs))


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


# ----------------------------------------------------------------------------- A1
def table_a1(grid, bench: pd.DataFrame | None = None) -> pd.DataFrame:
    """A1: per configuration the final training and held-out loss (mean over seeds), per-case
    Dice / precision / recall / ISLES'22 absolute volume difference (ml) and lesion-wise F1
    (mean [95 % CI over cases]), Dice over seeds, the paired Wilcoxon test against DiceBCE-3D
    (Holm), parameters, peak memory and time per epoch.

    Peak memory: the runs' own CUDA peak when trained on a GPU; on a CPU (where the process peak
    cannot be reset between runs) the A2 measurement of the same conv and size from ``bench``,
    named as such in the column header, or NaN without it.
    """
    order = config_order(grid.runs)
    res = results_table(grid.cases, list(A1_METRICS), baseline_label(grid), primary="dice", order=order)
    runs = grid.runs
    agg = runs.groupby("config", sort=False).agg(
        train_loss=("final_train_loss", "mean"), test_loss=("final_val_loss", "mean"),
        parameters=("parameters", "first"), time_per_epoch=("time_per_epoch_s", "mean"),
        peak=("peak_mem_mb", "mean"), device=("device", "first")).reindex(order)
    on_gpu = agg["device"].astype(str).str.startswith("cuda").all()
    peak_col = "peak memory (MiB)"
    if on_gpu:
        peak = agg["peak"]
    elif bench is not None and not bench.empty and {"conv", "size"} <= set(runs.columns):
        b = bench.groupby(["conv", "size"])["peak_mem_mb"].median()
        first = runs.drop_duplicates("config").set_index("config").reindex(order)
        peak = pd.Series([b.get((c, s), np.nan) for c, s in zip(first["conv"], first["size"])], index=order)
        peak_col = (f"peak memory (MiB, A2: U-Net {bench['features'].iloc[0]}, batch {bench['batch'].iloc[0]})"
                    if "features" in bench else "peak memory (MiB, A2)")
    else:
        peak = pd.Series(np.nan, index=order)
    names = {"volume_diff (per case)": "abs. volume diff, ml (per case)",
             "lesion_f1 (per case)": "lesion-wise F1 (per case)"}
    out = res.rename(columns={a: b for old_, new in names.items()
                              for a, b in zip((old_, *ci_columns(old_)), (new, *ci_columns(new)))})
    out.insert(1, "train loss", agg["train_loss"].round(4).to_numpy())
    out.insert(2, "test loss", agg["test_loss"].round(4).to_numpy())
    out["parameters"] = agg["parameters"].to_numpy()
    out[peak_col] = peak.round(1).to_numpy()
    out["time per epoch (s)"] = agg["time_per_epoch"].round(2).to_numpy()
    return out


def describe_a1(grid) -> str:
    """A paragraph with the numbers of A1: best configuration, baseline, the as-published loss."""
    dice = _dice_by_config(grid)
    base = baseline_label(grid)
    best = str(dice.idxmax()) if dice.notna().any() else None
    runs = grid.runs
    s = grid.summary
    text = [f"{len(runs)} runs ({runs['config'].nunique()} configurations × {runs['seed'].nunique()} seeds; "
            f"{s.get('trained', 0)} trained now, {s.get('hits', 0)} read from the run cache)."]
    if best is not None:
        text.append(f"The highest mean per-case Dice is **{best}** ({_fmt(dice[best])}); the baseline {base} "
                    f"reaches {_fmt(dice.get(base))}.")
    if "loss" in runs:
        by_loss = runs.groupby("loss")[["final_train_loss", "final_val_loss"]].mean()
        d_loss = _per_case(grid).groupby("loss")["value"].mean() if "loss" in _cases(grid) else pd.Series()
        for name in ("dice_bce", "gdl_ce", "gdl_ce_as_published"):
            if name in by_loss.index:
                text.append(f"{LOSS_LABELS[name]}: final training loss {_fmt(by_loss.loc[name, 'final_train_loss'], 4)}, "
                            f"held-out loss {_fmt(by_loss.loc[name, 'final_val_loss'], 4)}, mean Dice "
                            f"{_fmt(d_loss.get(name, np.nan))}.")
        if "gdl_ce_as_published" in by_loss.index:
            text.append("The as-published GDL+CE minimises the generalised Dice *coefficient* and its CE term is "
                        "identically zero, so a small loss value there says nothing about the masks (the seed "
                        "reported 0.0093).")
    return " ".join(text)


# ----------------------------------------------------------------------------- A2
def table_a2(bench: pd.DataFrame) -> pd.DataFrame:
    """A2 as a table: per size, peak memory and time per step of each conv mode and their ratio."""
    b = bench.groupby(["size", "conv"], sort=True)[["peak_mem_mb", "time_per_step_s", "params"]].median()
    wide = b.unstack("conv")
    out = pd.DataFrame({"input size": [f"{s}³" for s in wide.index]})
    for conv in ("3d", "2+1d"):
        if ("peak_mem_mb", conv) in wide:
            out[f"peak memory {CONV_NAMES[conv]} (MiB)"] = wide[("peak_mem_mb", conv)].round(1).to_numpy()
            out[f"time per step {CONV_NAMES[conv]} (s)"] = wide[("time_per_step_s", conv)].round(4).to_numpy()
            out[f"parameters {CONV_NAMES[conv]}"] = wide[("params", conv)].astype(int).to_numpy()
    if ("peak_mem_mb", "3d") in wide and ("peak_mem_mb", "2+1d") in wide:
        out["memory ratio (2+1)D / 3D"] = (wide[("peak_mem_mb", "2+1d")] / wide[("peak_mem_mb", "3d")]).round(3).to_numpy()
        out["time ratio (2+1)D / 3D"] = (wide[("time_per_step_s", "2+1d")] / wide[("time_per_step_s", "3d")]).round(3).to_numpy()
    return out


def describe_a2(bench: pd.DataFrame) -> str:
    t = table_a2(bench)
    r = bench.iloc[0]
    head = (f"Measured on {r['device']} ({r['precision']}, {r['memory_format']}), U-Net widths {r['features']}, "
            f"batch {r['batch']}, {r['steps']} timed steps after a warm-up; peak memory is the "
            f"{r['peak_source']}.")
    if "memory ratio (2+1)D / 3D" not in t:
        return head
    parts = [f"at {row['input size']} (2+1)D needs {row['memory ratio (2+1)D / 3D']:.2f}× the memory and "
             f"{row['time ratio (2+1)D / 3D']:.2f}× the time per step of 3D" for _, row in t.iterrows()]
    return head + " " + "; ".join(parts) + "."


# ----------------------------------------------------------------------------- A5
def table_a5(samplers: pd.DataFrame) -> pd.DataFrame:
    cols = {"sampler": "sampler", "threshold": "threshold", "patch_size": "patch", "n_patches": "patches requested",
            "acceptance_rate": "acceptance rate", "draws_per_accepted": "draws per accepted patch",
            "p_exact": "exact acceptance probability per draw", "lesion_fraction_mean": "lesion fraction (mean)",
            "fallbacks": "fallbacks", "fallback_reasons": "fallback reasons"}
    out = samplers[[c for c in cols if c in samplers]].rename(columns=cols)
    return out.round(4)


def describe_a5(samplers: pd.DataFrame) -> str:
    parts = []
    for _, r in samplers.iterrows():
        parts.append(f"{r['sampler'].replace('_', '-')} at {r['threshold']:g}: {r['acceptance_rate']:.0%} accepted, "
                     f"{_fmt(r['draws_per_accepted'], 1)} draws per accepted patch, {int(r['fallbacks'])} fallbacks")
    r0 = samplers.iloc[0]
    return (f"{int(r0['cases'])} training cases, {int(r0['n_patches'])} patches of {int(r0['patch_size'])}³ per "
            f"sampler and threshold: " + "; ".join(parts) + ".")


# ----------------------------------------------------------------------------- A6 and A4
def describe_a6(grid) -> str:
    c = _cases(grid)
    col = "case_loss" if "case_loss" in c else "loss"
    c = c[pd.to_numeric(c[col], errors="coerce").notna()] if col in c else c.iloc[:0]
    if c.empty:
        return "No per-case loss was recorded."
    worst = c.loc[c[col].astype(float).idxmax()]
    low = c.loc[c["dice"].fillna(-1).idxmin()]
    return (f"The largest per-case held-out loss is {float(worst[col]):.3f} ({worst['case_id']}, {worst['config']}, "
            f"seed {worst['seed']}); the seed saw outliers up to 0.72. The lowest per-case Dice is "
            f"{_fmt(low['dice'])} ({low['case_id']}, {low['config']}, seed {low['seed']}).")


def best_config(grid) -> str:
    dice = _dice_by_config(grid)
    return str(dice.idxmax()) if dice.notna().any() else config_order(grid.runs)[0]


def overlay_cases(grid, config: str | None = None) -> list[dict]:
    """A4 items for :func:`seglib.plots.overlay_rows`: the best and the worst held-out case (by Dice)
    of ``config`` (default: the best configuration), from its first seed's stored predictions."""
    config = config or best_config(grid)
    run = grid.runs[grid.runs["config"] == config].sort_values("seed").iloc[0]
    preds = grid.predictions.get(run["key"], {})
    cases = grid.cases[grid.cases["key"] == run["key"]].set_index("case_id")["dice"]
    ids = sorted({k.rsplit("/", 1)[0] for k in preds}, key=lambda c: -np.nan_to_num(cases.get(c, np.nan), nan=-1))
    items = []
    for cid, what in zip(ids, ("best", "worst")):
        sp = preds.get(f"{cid}/spacing")
        items.append({"image": preds[f"{cid}/image"].astype(np.float32), "truth": preds[f"{cid}/truth"],
                      "pred": preds[f"{cid}/pred"], "spacing": None if sp is None else tuple(float(v) for v in sp),
                      "label": f"{what}: {cid}\nDice {_fmt(cases.get(cid, np.nan))}"})
    if not items:
        raise ValueError(f"no stored predictions for {config} (run {run['key']}).")
    return items


# ----------------------------------------------------------------------------- claims
def _pairs(grid, a: dict, b: dict, match: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-case Dice (mean over seeds) of the cells selected by ``a`` and ``b``, paired on ``match`` + case."""
    pc = _per_case(grid)
    if not all(k in pc for k in (*a, *b, *match)):
        return np.array([]), np.array([])

    def sel(d):
        m = pd.Series(True, index=pc.index)
        for k, v in d.items():
            m &= pc[k].isin(v if isinstance(v, (list, tuple)) else [v])
        return pc[m]

    j = sel(a).merge(sel(b), on=[*match, "case_id"], suffixes=("_a", "_b"))
    return j["value_a"].to_numpy(float), j["value_b"].to_numpy(float)


def _claim(cid: str, claim: str, seed_says: str, t: dict, verdict: str | None = None) -> dict:
    return {"id": cid, "claim": claim, "seed_says": seed_says, "measured": t["measured"], "p": t["p"],
            "verdict": verdict or t["verdict"]}


#: the smallest difference of two sampled peaks that counts: 1 MiB, or a tenth of the larger peak (the resident set
#: of the same step varies by about half a MiB from process to process, and by a few per cent at larger sizes)
MEMORY_RESOLUTION_MIB, MEMORY_RESOLUTION_REL = 1.0, 0.10


def memory_verdict(a: pd.Series, b: pd.Series) -> str:
    """"supported" when ``a`` (the (2+1)D peaks by size) is below ``b`` (3D's) at every size by more than the
    resolution, "not supported" when it is above at some size by more than it, else "inconclusive" (a size where
    the two are equal within what the sampled resident set resolves)."""
    res = np.maximum(MEMORY_RESOLUTION_MIB, MEMORY_RESOLUTION_REL * np.maximum(a, b))
    if bool(((a - b) > res).any()):
        return "not supported"
    return "supported" if bool(((b - a) > res).all()) else "inconclusive"


def claims(grid, bench: pd.DataFrame | None = None) -> list[dict]:
    """The study's hypotheses, measured: memory of (2+1)D (A2), its accuracy, GDL+CE vs DiceBCE
    (as published and corrected) and the larger input. Dice pairs are per case, averaged over seeds,
    at equal conv / size / loss as stated in each claim."""
    out = []
    if bench is not None and not bench.empty:
        m = bench.groupby(["size", "conv"])["peak_mem_mb"].median().unstack("conv")
        if {"3d", "2+1d"} <= set(m.columns):
            ratio = m["2+1d"] / m["3d"]
            measured = ", ".join(f"{s}³: {m.loc[s, '2+1d']:.0f} vs {m.loc[s, '3d']:.0f} MiB ({r:.2f}×)"
                                 for s, r in ratio.items())
            out.append({"id": "a2-memory", "claim": "(2+1)D convolution needs less peak training memory than 3D",
                        "seed_says": "(2+1)D saves enough memory to train at 128³ instead of 64³",
                        "measured": f"peak memory (2+1)D vs 3D per step, {measured}", "p": None,
                        "verdict": memory_verdict(m["2+1d"], m["3d"])})
    a, b = _pairs(grid, {"conv": "3d", "loss": ["dice_bce", "gdl_ce"]}, {"conv": "2+1d"}, ("size", "loss"))
    t = test_claim(a, b, "(2+1)D costs no accuracy", alternative="two-sided", name_a="3D", name_b="(2+1)D")
    if np.isnan(t["p"]):
        verdict = "inconclusive"
    elif t["p"] >= ALPHA or t["median_diff"] <= 0:
        verdict = "supported"  # no significant difference, or (2+1)D significantly better
    else:
        verdict = "not supported"
    out.append(_claim("a1-conv-accuracy", "(2+1)D convolution costs no Dice against 3D (same size and loss; "
                      "supported = no significant difference)", "not tested (no Dice was computed)", t, verdict))
    for cid, loss, what in (("a1-gdl-published", "gdl_ce_as_published", "as published"),
                            ("a1-gdl-corrected", "gdl_ce", "corrected")):
        a, b = _pairs(grid, {"loss": loss}, {"loss": "dice_bce"}, ("conv", "size"))
        t = test_claim(a, b, f"GDL+CE ({what}) beats DiceBCE", alternative="greater", name_a=f"GDL+CE {what}",
                       name_b="DiceBCE")
        out.append(_claim(cid, f"GDL+CE ({what}) gives a higher per-case Dice than DiceBCE",
                          "GDL+CE reached a lower loss (0.0093 vs 0.66) but worse-looking masks", t))
    pc = _per_case(grid)
    if "size" in pc and pc["size"].nunique() > 1:
        lo, hi = pc["size"].min(), pc["size"].max()
        a, b = _pairs(grid, {"size": hi, "loss": "dice_bce"}, {"size": lo, "loss": "dice_bce"}, ("conv",))
        t = test_claim(a, b, "a larger input improves Dice", alternative="greater", name_a=f"{hi}³", name_b=f"{lo}³")
        out.append(_claim("a1-size", f"Training at {hi}³ instead of {lo}³ improves per-case Dice (DiceBCE)",
                          "128³ should help if memory allows it", t))
    return out


def headline(grid) -> dict:
    dice = _dice_by_config(grid)
    base = baseline_label(grid)
    best = best_config(grid)
    cases = grid.cases
    best_vals = cases[cases["config"] == best].groupby("case_id")["dice"].mean().to_numpy()
    ci = mean_ci(best_vals, n_resamples=2000, rng=0)
    out = {"best_config": best, "best_dice": float(dice[best]), "best_dice_low": ci["low"],
           "best_dice_high": ci["high"], "baseline_config": base, "baseline_dice": float(dice.get(base, np.nan))}
    runs = grid.runs
    if "loss" in runs:
        by = runs.groupby("loss")[["final_train_loss", "final_val_loss"]].mean()
        pc = _per_case(grid)
        for name in by.index:
            out[f"{name}_train_loss"] = float(by.loc[name, "final_train_loss"])
            out[f"{name}_test_loss"] = float(by.loc[name, "final_val_loss"])
            if "loss" in pc:
                out[f"{name}_dice"] = float(pc.loc[pc["loss"] == name, "value"].mean())
    return out


def table_results(grid) -> pd.DataFrame:
    """Per-volume Dice of every configuration, mean [95 % CI], and the paired test against DiceBCE-3D."""
    return results_table(grid.cases, ["dice"], baseline_label(grid), primary="dice", order=config_order(grid.runs))


def index_summary(grid) -> pd.DataFrame:
    """Mean Dice per volume of every configuration with its 95 % CI (the seed computed no Dice)."""
    return ci_summary(table_results(grid), "dice")


def describe_a3(grid) -> str:
    """What A3's curves show for the as-published GDL+CE against the other losses, from the histories."""
    h = grid.history
    if "loss" not in h or h.empty:
        return "No per-epoch history was recorded."
    last = h.sort_values("epoch").groupby(["loss", "seed", "config"]).tail(1)
    cols = [c for c in ("train_loss", "val_dice") if c in last]
    by = last.groupby("loss")[cols].mean()
    parts = []
    for name in ("dice_bce", "gdl_ce", "gdl_ce_as_published"):
        if name in by.index:
            txt = f"{LOSS_LABELS[name]} ends at a training loss of {_fmt(by.loc[name, 'train_loss'], 4)}"
            if "val_dice" in by:
                txt += f" with a held-out pooled Dice of {_fmt(by.loc[name, 'val_dice'])}"
            parts.append(txt)
    text = "At the last epoch (mean over configurations and seeds): " + "; ".join(parts) + "."
    if {"gdl_ce_as_published", "dice_bce"} <= set(by.index) and "val_dice" in by:
        pub, ref = by.loc["gdl_ce_as_published"], by.loc["dice_bce"]
        if pub["train_loss"] < ref["train_loss"] and pub["val_dice"] < ref["val_dice"]:
            text += (" The as-published GDL+CE has the smaller loss and the lower Dice: its loss value is not a "
                     "measure of the masks.")
        elif pub["val_dice"] >= ref["val_dice"]:
            text += " In this build the as-published GDL+CE does not give a lower Dice than DiceBCE."
        else:
            text += " In this build the as-published GDL+CE gives a lower Dice than DiceBCE without a smaller loss."
    return text


def curve_history(grid) -> pd.DataFrame:
    """Per-epoch history for A3's small multiples: a ``loss function`` column (one row of panels each) and
    a ``convolution, size`` column (the lines of a panel)."""
    h = grid.history.copy()
    if "loss" in h:
        h["loss function"] = [LOSS_LABELS.get(l, l) for l in h["loss"]]
    conv = h["conv"] if "conv" in h else pd.Series(["3d"] * len(h), index=h.index)
    size = h["size"] if "size" in h else pd.Series([""] * len(h), index=h.index)
    h["convolution, size"] = [f"{CONV_NAMES.get(c, c)}, {s}³" for c, s in zip(conv, size)]
    return h
