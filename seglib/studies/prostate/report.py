"""Study B's tables and claims: Table B1 (the seed's Table 1 beside ours, per patient and pooled), the
results table with CIs and Holm-corrected paired tests against BCE, and the seed's hypothesis (α = 0.25
best) and finding (α = 0.75 highest Dice) tested. Read from the grid's results; nothing here trains."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seglib.config import schema
from seglib.report.tables import format_number

from seglib.eval.stats import paired_test
from seglib.eval.tables import ci_columns, ci_summary, pooled_vs_per_case, results_table, summary

METRICS = ["dice", "precision", "recall", "f1"]
BASELINE = "BCE"
# Table 1 of the seed (validation; Dice a mean of per-batch values, F1 from other counts)
SEED_TABLE = pd.DataFrame(
    [("BCE", None, 0.85551, 0.81207, 0.91116, 0.85876), ("Tversky α=0.25", 0.25, 0.85253, 0.81798, 0.92828, 0.86965),
     ("Tversky α=0.35", 0.35, 0.85776, 0.91000, 0.92189, 0.91590), ("Tversky α=0.45", 0.45, 0.83326, 0.43057, 0.97267, 0.59691),
     ("Dice (α=0.50)", 0.50, 0.86958, 0.76809, 0.94913, 0.84907), ("Tversky α=0.65", 0.65, 0.86581, 0.70920, 0.52906, 0.60603),
     ("Tversky α=0.75", 0.75, 0.89506, 0.76617, 0.81707, 0.79081), ("Tversky α=0.85", 0.85, 0.88112, 0.64821, 0.91519, 0.75890)],
    columns=["loss", "alpha", "dice", "precision", "recall", "f1"])



# --------------------------------------------------------------------------- names


def name_of(loss: str, alpha) -> str:
    if loss == "bce":
        return "BCE"
    if loss == "dice" or (loss == "tversky" and alpha is not None and abs(float(alpha) - 0.5) < 1e-9):
        return "Dice (α=0.50)"
    if loss == "tversky" and alpha is not None:
        return f"Tversky α={float(alpha):.2f}"
    return schema.LOSS_LABELS.get(loss, str(loss))  # a loss outside the study's (no α on the trade-off axis)


def _named(frame: pd.DataFrame) -> pd.DataFrame:
    alpha = frame["alpha"] if "alpha" in frame else pd.Series([None] * len(frame), index=frame.index)
    out = frame.copy()
    out["config"] = [name_of(l, a if a == a else None) for l, a in zip(frame["loss"], alpha)]  # a == a: not NaN
    out["alpha_value"] = [0.5 if l == "dice" else (float(a) if l == "tversky" and a == a and a is not None else None)
                          for l, a in zip(frame["loss"], alpha)]
    return out


def named_cases(grid) -> pd.DataFrame:
    return _named(grid.cases)


def named_history(grid) -> pd.DataFrame:
    return _named(grid.history)


def order(grid) -> list[str]:
    """BCE first, then by α."""
    runs = _named(grid.runs)
    alphas = runs.drop_duplicates("config").set_index("config")["alpha_value"]
    return sorted(alphas.index, key=lambda c: -1 if alphas[c] is None else alphas[c])


# --------------------------------------------------------------------------- tables and claims


def table_b1(grid) -> pd.DataFrame:
    """B1: the seed's Table 1 beside ours: Dice (with its 95 % CI over patients), precision, recall, F1 as
    the mean per patient (over seeds) and Dice pooled over every validation pixel, the seed's four numbers,
    and the Holm-corrected test of Dice against BCE. The best of each of our columns is shown in bold by
    :func:`seglib.report.tables.display_table`."""
    cases = named_cases(grid)
    ours = summary(cases, METRICS, order(grid)).set_index("config")
    pooled = pooled_vs_per_case(cases, order(grid)).set_index("configuration")
    tests = table_results(grid).set_index("configuration")
    seed = SEED_TABLE.set_index("loss")
    rows = []
    for config in order(grid):
        row = {"loss": config}
        for m in METRICS:
            row[f"{m} (per patient)"] = ours.loc[config, f"{m}_mean"]
            if m == "dice":
                for src, dst in zip(ci_columns("dice (per case)"), ci_columns("dice (per patient)")):
                    row[dst] = tests.loc[config, src]
        row["dice (pooled)"] = pooled.loc[config, "dice (pooled)"]
        for m in METRICS:
            row[f"seed {m}"] = seed.loc[config, m] if config in seed.index else np.nan
        row["p (Holm) vs BCE"] = tests.loc[config, "p (Holm)"]
        row["differs from BCE"] = tests.loc[config, "differs from baseline"]
        rows.append(row)
    return pd.DataFrame(rows)


def table_results(grid) -> pd.DataFrame:
    return results_table(named_cases(grid), METRICS, BASELINE, order=order(grid))


def table_pooled(grid) -> pd.DataFrame:
    """Per-patient means against pooled values: pooled Dice equals pooled F1 (same pixels, same counts)."""
    return pooled_vs_per_case(named_cases(grid), order(grid))


def summary_with_alpha(grid) -> pd.DataFrame:
    """Mean and 95 % CI over seeds of each metric, with the α of each configuration (B3, B4, B6)."""
    cases = named_cases(grid)
    s = summary(cases, METRICS, order(grid), over="seeds")
    alphas = cases.drop_duplicates("config").set_index("config")["alpha_value"]
    s["alpha"] = [alphas[c] for c in s["config"]]
    return s


def alpha_map(grid) -> dict:
    s = summary_with_alpha(grid)
    return dict(zip(s["config"], s["alpha"]))


def claims(grid) -> list[dict]:
    cases = named_cases(grid)
    per_case = cases.groupby(["config", "case_id"])["dice"].mean().unstack("config")
    means = per_case.mean().sort_values(ascending=False)
    best = means.index[0]
    out = []
    for cid, alpha, claim, says in (
            ("B-alpha-0.25", 0.25, "α = 0.25 segments best (the seed's hypothesis)",
             "hypothesis: α = 0.25 best, with higher recall and lower precision"),
            ("B-alpha-0.75", 0.75, "α = 0.75 gives the highest Dice (the seed's finding)",
             "α = 0.75 had the highest Dice, 0.895, in one run")):
        name = name_of("tversky", alpha)
        if name not in per_case:
            continue
        rival = means.index[1] if best == name else best
        t = paired_test(per_case[name].to_numpy(), per_case[rival].to_numpy(), alternative="greater")
        if not np.isfinite(t["p"]):
            verdict = "inconclusive"
        elif best == name and t["p"] < 0.05:
            verdict = "supported"
        else:
            verdict = "not supported"
        measured = (f"{name}: mean Dice {means[name]:.3f}; best configuration {best} ({means[best]:.3f}); "
                    f"one-sided Wilcoxon {name} > {rival}: p = {format_number(t['p'], p_value=True)} ({t['n']} patients)")
        out.append({"id": cid, "claim": claim, "seed_says": says, "measured": measured,
                    "p": float(t["p"]) if np.isfinite(t["p"]) else None, "verdict": verdict})
    # the convention: α weighs false positives, so precision rises and recall falls with α
    s = summary_with_alpha(grid).dropna(subset=["alpha"])
    if len(s) >= 3:
        from scipy.stats import spearmanr

        rp = spearmanr(s["alpha"], s["precision_mean"]).statistic
        rr = spearmanr(s["alpha"], s["recall_mean"]).statistic
        ok = rp > 0 and rr < 0
        out.append({"id": "B-tradeoff", "claim": "A higher α trades recall for precision",
                    "seed_says": "α weighs false positives: higher α, higher precision, lower recall",
                    "measured": f"Spearman ρ(α, precision) = {rp:.2f}, ρ(α, recall) = {rr:.2f} over {len(s)} Tversky losses",
                    "p": None, "verdict": "supported" if ok else "not supported"})
    return out


def headline(grid) -> dict:
    s = summary_with_alpha(grid).set_index("config")
    best = s["dice_mean"].idxmax()
    return {"best_config": best, "best_mean_dice": float(s.loc[best, "dice_mean"]),
            "baseline_mean_dice": float(s.loc[BASELINE, "dice_mean"]) if BASELINE in s.index else None,
            "mean_dice": {k: float(v) for k, v in s["dice_mean"].items()}}


def example(grid, seed: int | None = None) -> dict:
    """B5: the example slice's image and truth, and every configuration's prediction (first seed)."""
    runs = _named(grid.runs)
    seed = int(runs["seed"].min()) if seed is None else seed
    preds, image, truth = {}, None, None
    for config in order(grid):
        row = runs[(runs["config"] == config) & (runs["seed"] == seed)].iloc[0]
        stored = grid.predictions[row["key"]]
        k = next(p for p in stored if p.endswith("/pred"))
        s = k.split("/")[0]
        preds[config] = np.asarray(stored[k])
        image = np.asarray(stored[f"{s}/image"], dtype=np.float32)[0]
        truth = np.asarray(stored[f"{s}/truth"])
    return {"image": image, "truth": truth, "preds": preds}


def index_summary(grid) -> pd.DataFrame:
    """Mean Dice per patient of every loss with its 95 % CI and the seed's Table 1 Dice."""
    return ci_summary(table_results(grid), "dice", dict(zip(SEED_TABLE["loss"], SEED_TABLE["dice"])))


def describe_pooled(grid) -> str:
    """What the pooled table shows: pooled Dice against pooled F1, and per-patient against pooled Dice."""
    t = table_pooled(grid)
    gap = (t["dice (pooled)"] - t["f1 (pooled)"]).abs().max()
    spread = (t["dice (mean per case)"] - t["dice (pooled)"])
    return (f"Over the {len(t)} losses, pooled Dice and pooled F1 differ by at most {gap:.1e} (floating-point "
            f"rounding: the same counts give the same number), while the mean per-patient Dice lies "
            f"{spread.min():+.3f} to {spread.max():+.3f} from the pooled Dice: the two aggregates are not "
            f"interchangeable, which is why every table names which one it shows.")
