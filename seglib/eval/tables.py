"""Results tables shared by the studies: mean with 95 % CI (over cases and over seeds) and the paired
test of each configuration against the study's baseline (Wilcoxon, Holm-corrected)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seglib.eval.metrics import pooled_metrics
from seglib.eval.stats import compare_to_baseline, mean_ci

N_RESAMPLES = 2000  # bootstrap resamples (percentile method) behind every CI in the report
#: a column ``X`` holding a mean has its 95 % CI in ``X + CI_LOW`` and ``X + CI_HIGH`` (raw numbers in the
#: CSV; :mod:`seglib.report.tables` shows the three as one cell "0.803 [0.783, 0.820]")
CI_LOW = " (95 % CI low)"
CI_HIGH = " (95 % CI high)"


def ci_columns(name: str) -> tuple[str, str]:
    """The companion columns that hold the 95 % CI of column ``name``."""
    return name + CI_LOW, name + CI_HIGH


def with_ci(row: dict, name: str, ci: dict) -> dict:
    """Put ``ci`` (``{"mean", "low", "high"}``) into ``row`` as column ``name`` and its two CI companions."""
    low, high = ci_columns(name)
    row[name], row[low], row[high] = float(ci["mean"]), float(ci["low"]), float(ci["high"])
    return row


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
    """Per configuration: each metric's mean with its 95 % CI over cases (columns ``<m> (per case)`` and
    their :func:`ci_columns`), the primary metric's mean and CI over seeds, and the paired Wilcoxon test of the primary metric against ``baseline`` (Holm-corrected
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
            with_ci(row, f"{m} (per case)", ci)
        s = by_seed.loc[config]
        with_ci(row, f"{primary} over seeds",
                {"mean": s[f"{primary}_mean"], "low": s[f"{primary}_low"], "high": s[f"{primary}_high"]})
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



def ci_summary(table: pd.DataFrame, primary: str = "dice", seeds=None) -> pd.DataFrame:
    """From a :func:`results_table`: ``configuration, mean, low, high, seed`` of the primary metric per case
    (the seed's published value from the mapping ``seeds`` by configuration, NaN where it has none): the
    report index's figure of a study."""
    col = f"{primary} (per case)"
    low, high = ci_columns(col)
    seeds = dict(seeds or {})
    return pd.DataFrame({"configuration": table["configuration"].to_numpy(),
                         "mean": table[col].to_numpy(float), "low": table[low].to_numpy(float),
                         "high": table[high].to_numpy(float),
                         "seed": [float(seeds[c]) if seeds.get(c) is not None else np.nan
                                  for c in table["configuration"]]})
