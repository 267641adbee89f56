"""Results tables shared by the studies: mean with 95 % CI (over cases and over seeds) and the paired
test of each configuration against the study's baseline (Wilcoxon, Holm-corrected)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seglib.eval.metrics import pooled_metrics
from seglib.eval.stats import compare_to_baseline, format_mean_ci, mean_ci

N_RESAMPLES = 2000  # bootstrap resamples (percentile method) behind every CI in the report


def summary(cases: pd.DataFrame, metrics, order=None, over: str = "seeds") -> pd.DataFrame:
    """One row per config with ``<m>_mean``, ``<m>_low``, ``<m>_high`` for each metric.

    ``over="seeds"``: the CI of the mean over seeds of each run's mean over cases;
    ``over="cases"``: the CI over cases of the mean over seeds of each case.
    """
    order = order or list(dict.fromkeys(cases["config"]))
    rows = []
    for config in order:
        sub = cases[cases["config"] == config]
        row = {"config": config}
        for m in metrics:
            if over == "seeds":
                values = sub.groupby("seed")[m].mean().to_numpy()
            else:
                values = sub.groupby("case_id")[m].mean().to_numpy()
            ci = mean_ci(values, n_resamples=N_RESAMPLES, rng=0)
            row.update({f"{m}_mean": ci["mean"], f"{m}_low": ci["low"], f"{m}_high": ci["high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def results_table(cases: pd.DataFrame, metrics, baseline: str, primary: str = "dice", order=None,
                  digits: int = 3) -> pd.DataFrame:
    """Per configuration: each metric as "mean [95 % CI over cases]", the primary metric's CI over
    seeds, and the paired Wilcoxon test of the primary metric against ``baseline`` (Holm-corrected
    across the table), with its effect size (rank-biserial) and a yes/no "differs from baseline"."""
    order = order or list(dict.fromkeys(cases["config"]))
    has_baseline = baseline in set(cases["config"])
    cmp = (compare_to_baseline(cases, "config", "case_id", primary, baseline, n_resamples=N_RESAMPLES, rng=0)
           .set_index("config") if has_baseline else None)
    by_seed = summary(cases, [primary], order, over="seeds").set_index("config")
    rows = []
    for config in order:
        sub = cases[cases["config"] == config]
        per_case = sub.groupby("case_id")
        row = {"configuration": config, "runs (seeds)": int(sub["seed"].nunique()),
               "cases": int(per_case[primary].mean().notna().sum())}
        for m in metrics:
            ci = mean_ci(per_case[m].mean().to_numpy(), n_resamples=N_RESAMPLES, rng=0)
            row[f"{m} (per case)"] = format_mean_ci(ci, digits)
        s = by_seed.loc[config]
        row[f"{primary} over seeds"] = format_mean_ci(
            {"mean": s[f"{primary}_mean"], "low": s[f"{primary}_low"], "high": s[f"{primary}_high"]}, digits)
        if cmp is None:  # a grid without the study's baseline: nothing to test against, said in the table
            row["effect size"], row["p (Holm)"] = np.nan, np.nan
            row["differs from baseline"] = f"no baseline ({baseline}) in this grid"
            rows.append(row)
            continue
        c = cmp.loc[config]
        is_base = config == baseline
        row["effect size"] = np.nan if is_base else round(float(c["effect_size"]), 3)
        row["p (Holm)"] = np.nan if is_base else float(c["p_holm"])
        row["differs from baseline"] = "baseline" if is_base else ("yes" if bool(c["differs"]) else "no")
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_vs_per_case(cases: pd.DataFrame, order=None) -> pd.DataFrame:
    """Dice and F1 per case (mean) beside the pooled values (sums of counts first): pooled Dice = pooled F1."""
    order = order or list(dict.fromkeys(cases["config"]))
    rows = []
    for config in order:
        sub = cases[cases["config"] == config]
        pooled = pooled_metrics(*(float(sub[k].sum()) for k in ("tp", "fp", "fn")))
        rows.append({"configuration": config, "dice (mean per case)": sub["dice"].mean(),
                     "f1 (mean per case)": sub["f1"].mean(), "dice (pooled)": pooled["dice"],
                     "f1 (pooled)": pooled["f1"], "precision (pooled)": pooled["precision"],
                     "recall (pooled)": pooled["recall"]})
    return pd.DataFrame(rows)

