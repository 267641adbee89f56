"""Confidence intervals, paired tests and multiple-comparison correction for the study reports.

Everything uses ``scipy.stats`` (``bootstrap``, ``wilcoxon``, ``t``); written by hand only what
scipy lacks here: Holm's step-down adjustment (statsmodels is not a dependency), the matched-pairs
rank-biserial correlation and the per-configuration comparison table.

NaN policy: every function drops NaN values (unpaired ones for paired statistics) and reports
the ``n`` it actually used.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from seglib.registry import look_up, suggest

CI_METHODS = {"percentile": "percentile", "bca": "BCa", "basic": "basic", "t": "t"}
ALTERNATIVES = {"two-sided": "two-sided", "greater": "greater", "less": "less"}
NAN = float("nan")


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    return x[~np.isnan(x)]


def _rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}.")


def bootstrap_ci(values, n_resamples: int = 10000, confidence: float = 0.95, method: str = "percentile",
                 rng: np.random.Generator | int | None = None) -> tuple[float, float]:
    """Confidence interval of the mean of ``values`` (over seeds or over cases).

    ``method``: ``"percentile"``, ``"bca"`` or ``"basic"`` — ``scipy.stats.bootstrap`` with
    ``n_resamples`` resamples of the NaN-free values (``rng`` a Generator or seed; None means seed
    0, so a report is reproducible); ``"t"``: Student-t interval ``mean ± t(n-1) * sd / sqrt(n)``
    (better than any bootstrap for the 3-5 seeds of a grid cell).

    Rules: fewer than 2 values → ``(nan, nan)``; all values equal → ``(v, v)`` (the bootstrap
    distribution is degenerate; BCa would be undefined).
    """
    kind = look_up(method, CI_METHODS, "CI method")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    x = _clean(values)
    if x.size < 2:
        return (NAN, NAN)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    if kind == "t":
        half = st.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
        return (float(x.mean() - half), float(x.mean() + half))
    # scipy >= 1.15 takes ``rng``; older releases call the same argument ``random_state``
    key = "rng" if "rng" in inspect.signature(st.bootstrap).parameters else "random_state"
    res = st.bootstrap((x,), np.mean, n_resamples=int(n_resamples), confidence_level=confidence,
                       method=kind, vectorized=True, **{key: _rng(rng)})
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def mean_ci(values, n_resamples: int = 10000, confidence: float = 0.95, method: str = "percentile",
            rng: np.random.Generator | int | None = None) -> dict:
    """``{"mean", "low", "high", "n"}`` of the NaN-free values (see :func:`bootstrap_ci`)."""
    x = _clean(values)
    low, high = bootstrap_ci(x, n_resamples, confidence, method, rng)
    return {"mean": float(x.mean()) if x.size else NAN, "low": low, "high": high, "n": int(x.size)}


def format_mean_ci(d: dict, digits: int = 3) -> str:
    """``"0.812 [0.790, 0.833]"``; NaN bounds print as ``nan``."""
    f = f"{{:.{int(digits)}f}}"
    return f"{f.format(d['mean'])} [{f.format(d['low'])}, {f.format(d['high'])}]"


def rank_biserial(a, b) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014, "The simple difference formula"):

    ``r = (R+ - R-) / (R+ + R-)`` with ``R+`` (``R-``) the sum of the ranks of ``|a - b|`` over the
    pairs where ``a > b`` (``a < b``); zero differences are dropped (as ``zero_method="wilcox"``),
    ties get average ranks. ``r`` is in [-1, 1]; +1 means ``a`` larger in every pair. NaN when
    no non-zero difference remains.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[~np.isnan(d)]
    d = d[d != 0]
    if d.size == 0:
        return NAN
    ranks = st.rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def paired_test(a, b, alternative: str = "two-sided", min_pairs: int = 5, zero_method: str = "wilcox") -> dict:
    """Wilcoxon signed-rank test of paired per-case values ``a`` vs ``b``.

    ``scipy.stats.wilcoxon(a, b, zero_method="wilcox", alternative=...)``: zero differences are
    dropped before ranking (Wilcoxon's original rule); scipy picks the exact null distribution for
    small samples without ties, the normal approximation otherwise. Pairs with NaN on either side
    are dropped first. ``alternative="greater"`` tests ``a > b``.

    Returns ``{"statistic", "p", "n", "effect_size", "median_diff"}``: ``n`` = pairs used,
    ``effect_size`` = :func:`rank_biserial` (a vs b), ``median_diff`` = median of ``a - b``.

    Rules (never raising on data), in this order: all differences zero (n >= 1) → ``statistic``
    0, ``p`` 1.0, ``effect_size`` 0.0 (no evidence of any difference); fewer than ``min_pairs``
    pairs → ``statistic`` and ``p`` NaN (too few to test; the descriptive fields are still
    filled). With 5 pairs the smallest two-sided exact p is 2/32 = 0.0625, so below about 6
    pairs no result can reach 0.05 anyway.
    """
    alt = look_up(alternative, ALTERNATIVES, "alternative")
    a, b = np.asarray(a, float).reshape(-1), np.asarray(b, float).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"Paired values need equal lengths, got {a.size} and {b.size}.")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d = a - b
    out = {"statistic": NAN, "p": NAN, "n": int(d.size), "effect_size": rank_biserial(a, b),
           "median_diff": float(np.median(d)) if d.size else NAN}
    if d.size and np.all(d == 0):
        out.update(statistic=0.0, p=1.0, effect_size=0.0)
    elif d.size >= max(int(min_pairs), 1):
        res = st.wilcoxon(a, b, zero_method=zero_method, alternative=alt)
        out.update(statistic=float(res.statistic), p=float(res.pvalue))
    return out


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (Holm 1979).

    With the m non-NaN p-values sorted ascending, ``p_adj(i) = max_{j<=i} min(1, (m - j + 1) p(j))``
    (1-based), returned in the input order; NaN entries stay NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must be in [0, 1], got {p[ok].min()!r}..{p[ok].max()!r}.")
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def compare_to_baseline(df: pd.DataFrame, config_col: str, case_col: str, metric: str, baseline,
                        alpha: float = 0.05, n_resamples: int = 10000, ci_method: str = "percentile",
                        rng: np.random.Generator | int | None = None, alternative: str = "two-sided") -> pd.DataFrame:
    """One row per configuration: its per-case values against the baseline's.

    Each configuration's metric is first averaged over seeds (and any other repeated rows) per
    case; the test pairs those case means with the baseline's by ``case_col`` (cases present in
    both, NaN dropped). Columns: ``config, n (cases), n_pairs, mean, ci_low, ci_high, median,
    effect_size`` (rank-biserial, config vs baseline: > 0 = config higher), ``median_diff, p``
    (Wilcoxon, :func:`paired_test`), ``p_holm`` (Holm over the non-baseline rows) and ``differs``
    (``p_holm < alpha``). The baseline row has NaN effect size and p and ``differs`` False.
    The CI is :func:`bootstrap_ci` of the mean over cases.
    """
    for col in (config_col, case_col, metric):
        if col not in df.columns:
            raise ValueError(f"Column {col!r} not in the table.{suggest(col, map(str, df.columns))} Columns: {list(df.columns)}.")
    per_case = df.groupby([config_col, case_col], sort=False)[metric].mean().unstack(config_col)
    configs = list(pd.unique(df[config_col]))
    if baseline not in configs:
        raise ValueError(f"Baseline {baseline!r} is not a value of {config_col!r}.{suggest(str(baseline), map(str, configs))} "
                         f"Values: {configs}.")
    gen = _rng(rng)
    base = per_case[baseline]
    rows = []
    for config in [baseline] + [c for c in configs if c != baseline]:
        values = per_case[config].dropna()
        ci = mean_ci(values.to_numpy(), n_resamples, 0.95, ci_method, gen)
        row = {"config": config, "n": ci["n"], "n_pairs": int(values.size), "mean": ci["mean"],
               "ci_low": ci["low"], "ci_high": ci["high"], "median": float(values.median()) if values.size else NAN,
               "effect_size": NAN, "median_diff": NAN, "p": NAN}
        if config != baseline:
            t = paired_test(per_case[config].to_numpy(), base.to_numpy(), alternative=alternative)
            row.update(n_pairs=t["n"], effect_size=t["effect_size"], median_diff=t["median_diff"], p=t["p"])
        rows.append(row)
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p"].to_numpy())
    out["differs"] = out["p_holm"] < alpha  # NaN compares False
    return out


def _signed(x: float) -> str:
    """A signed difference for a sentence: 3 decimals, or 2 significant digits in e-notation when smaller."""
    if not math.isfinite(x):
        return "nan"
    return f"{x:+.3f}" if x == 0 or abs(x) >= 0.001 else f"{x:+.1e}"


def test_claim(a, b, claim: str = "A beats B", alternative: str = "greater", alpha: float = 0.05,
               min_pairs: int = 5, name_a: str = "A", name_b: str = "B") -> dict:
    """Turn a hypothesis about paired per-case values into a verdict.

    ``alternative`` states the claim in terms of ``a - b``: ``"greater"`` (A higher than B),
    ``"less"``, or ``"two-sided"`` (A differs from B); the test is :func:`paired_test`.
    Verdict: ``"supported"`` if ``p < alpha``; ``"inconclusive"`` if there were too few pairs
    (``p`` NaN); ``"not supported"`` otherwise. Returns
    ``{"claim", "measured", "p", "verdict", "n", "effect_size", "median_diff"}``.
    """
    t = paired_test(a, b, alternative=alternative, min_pairs=min_pairs)
    measured = (f"median({name_a} - {name_b}) = {_signed(t['median_diff'])}, rank-biserial r = "
                f"{t['effect_size']:+.2f}, n = {t['n']} pairs")
    if math.isnan(t["p"]):
        verdict = "inconclusive"
    else:
        verdict = "supported" if t["p"] < alpha else "not supported"
    return {"claim": claim, "measured": measured, "p": t["p"], "verdict": verdict, "n": t["n"],
            "effect_size": t["effect_size"], "median_diff": t["median_diff"]}


test_claim.__test__ = False  # not a pytest test despite its name


def smallest_p(n_pairs: int, m: int = 1, alternative: str = "two-sided") -> float:
    """The smallest p-value an exact Wilcoxon signed-rank test on ``n_pairs`` pairs can give, after
    Holm's correction over ``m`` comparisons (capped at 1).

    Under the null each of the 2**n sign patterns of the ranked differences is equally likely, and
    the most extreme statistic (every difference of one sign) is a single pattern: one-sided
    ``1/2**n``, two-sided ``2/2**n``. Holm multiplies the smallest p by ``m``. A design whose value
    is at or above the significance level cannot find any difference, whatever the data:
    5 pairs give 0.0625 two-sided; 12 pairs 0.00049, 11 comparisons after Holm 0.0054.
    """
    alt = look_up(alternative, ALTERNATIVES, "alternative")
    if int(n_pairs) < 1 or int(m) < 1:
        raise ValueError(f"n_pairs and m must be at least 1, got n_pairs={n_pairs!r}, m={m!r}.")
    p = (2.0 if alt == "two-sided" else 1.0) / 2.0 ** int(n_pairs)
    return float(min(1.0, int(m) * p))


def describe_design_power(n_pairs: int, m: int = 1, alpha: float = 0.05, what: str = "cases") -> str:
    """One Markdown sentence: the smallest p this design allows (:func:`smallest_p`) and whether it can
    reach ``alpha``."""
    if n_pairs < 1:
        return f"No paired test is possible: no held-out {what} with a defined value."
    p1, pm = smallest_p(n_pairs), smallest_p(n_pairs, max(m, 1))
    text = (f"With {n_pairs} paired {what}, the exact two-sided Wilcoxon signed-rank test cannot give a p below "
            f"2/2^{n_pairs} = {p1:.2g}")
    if m > 1:
        text += f", and after Holm's correction over {m} comparisons not below {m}·2/2^{n_pairs} = {pm:.2g}"
    if pm >= alpha:
        text += f": this design **cannot** find a difference at the {alpha:g} level, whatever the data."
    else:
        text += f": differences can reach the {alpha:g} level."
    return text


__all__: Sequence[str] = ("bootstrap_ci", "mean_ci", "format_mean_ci", "rank_biserial", "paired_test", "holm",
                          "compare_to_baseline", "test_claim", "smallest_p", "describe_design_power")
