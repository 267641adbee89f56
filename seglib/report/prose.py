"""Sentences that state results, generated from the results so they are true under every profile and grid.

A notebook's static Markdown says what does not depend on the results (the question, the method, what a
table holds); each sentence about what was measured comes from a function here (or a study's
``report.py``) returning Markdown, displayed with ``IPython.display.Markdown``. Numbers are printed by
:func:`seglib.report.tables.format_number`, as in the tables.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from seglib.eval.stats import describe_design_power
from seglib.eval.tables import ci_columns
from seglib.report.tables import format_number

ALPHA = 0.05


def mean_ci_text(mean, low, high) -> str:
    """"0.803 [0.783, 0.820]" (unit-interval numbers with 3 decimals, as the tables show them)."""
    unit = all(v is not None and np.isfinite(v) and 0 <= v <= 1 for v in (mean, low, high))
    f = lambda v: format_number(v, unit_interval=unit)  # noqa: E731
    if low is None or not np.isfinite(low):
        return f(mean)
    return f"{f(mean)} [{f(low)}, {f(high)}]"


def design_of(table: pd.DataFrame, baseline: str) -> tuple[int, int]:
    """``(n, m)`` of a results table: the paired cases of the baseline comparison, the comparisons."""
    if "configuration" not in table or baseline not in set(table["configuration"]):
        return 0, 0
    others = table[table["configuration"] != baseline]
    n = int(table["cases"].min()) if "cases" in table and len(table) else 0
    return n, int(len(others))


def describe_results(table: pd.DataFrame, baseline: str, primary: str = "dice", metric: str = "Dice",
                     what: str = "held-out cases") -> str:
    """A paragraph on a :func:`seglib.eval.tables.results_table`: the best configuration and the
    baseline (mean [95 % CI]), which configurations differ from the baseline after Holm, and the
    smallest p the design allows (:func:`seglib.eval.stats.describe_design_power`)."""
    col = f"{primary} (per case)"
    low, high = ci_columns(col)
    if table.empty or col not in table:
        return "No configuration was measured."
    t = table.reset_index(drop=True)
    best = t.loc[t[col].astype(float).idxmax()] if t[col].notna().any() else None
    text = []
    if best is not None:
        text.append(f"The highest mean {metric} per case is **{best['configuration']}** "
                    f"({mean_ci_text(best[col], best[low], best[high])}; {len(t)} configurations).")
    if baseline in set(t["configuration"]):
        b = t[t["configuration"] == baseline].iloc[0]
        if best is None or best["configuration"] != baseline:
            text.append(f"The baseline {baseline} reaches {mean_ci_text(b[col], b[low], b[high])}.")
        others = t[t["configuration"] != baseline]
        tested = others[pd.to_numeric(others["p (Holm)"], errors="coerce").notna()]
        differ = tested[tested["differs from baseline"] == "yes"]
        if others.empty:
            pass
        elif tested.empty:
            text.append("No configuration could be tested against the baseline (too few paired cases).")
        elif differ.empty:
            text.append(f"None of the {len(tested)} configurations tested differs from the baseline "
                        f"(Holm-corrected Wilcoxon p ≥ {ALPHA:g} for each).")
        else:
            names = ", ".join(f"{r['configuration']} (p = {format_number(r['p (Holm)'], p_value=True)}, "
                              f"{'higher' if r[col] > b[col] else 'lower'})" for _, r in differ.iterrows())
            text.append(f"{len(differ)} of {len(tested)} configurations differ from the baseline after Holm's "
                        f"correction: {names}.")
        n, m = design_of(t, baseline)
        if m:
            text.append(describe_design_power(n, m, ALPHA, what))
    else:
        text.append(f"This grid has no baseline ({baseline}), so nothing is tested against it.")
    return " ".join(text)


def describe_runs(grid) -> str:
    """How many runs, from the cache or trained now, and on which device and in which precision (from each
    run's provenance)."""
    s = grid.summary
    runs = grid.runs
    text = (f"{s['runs']} runs: {s['hits']} read from the cache, {s['trained']} trained now "
            f"({s['seconds']:.0f} s).")
    return text + " " + describe_devices(runs) + describe_folds(grid) + describe_refit(grid)


def describe_refit(grid) -> str:
    """For a grid with runs trained on every patient (``data.refit``): that they are left out of the tables and
    figures (they trained on the validation patients) and that ``seglib predict`` applies them; else ""."""
    refit = getattr(grid, "refit", None)
    if refit is None or not len(refit):
        return ""
    n = len(refit)
    return (f" {'One run was' if n == 1 else f'{n} runs were'} also trained on every patient, the validation "
            f"patients too (`data.refit`), to be the model `seglib predict` applies to new patients; "
            f"{'it is' if n == 1 else 'they are'} left out of every table and figure here, which show the runs "
            f"validated on patients they did not train on (the runs' wall time above counts {'it' if n == 1 else 'them'}).")


def describe_folds(grid) -> str:
    """For a grid that sweeps ``data.fold``: that its results are a cross-validation (every patient scored
    once, by the fold that did not train on it) and that ``seglib predict`` averages the folds; else ""."""
    runs = grid.runs
    if "fold" not in runs or runs["fold"].nunique() < 2:
        return ""
    n = runs["fold"].nunique()
    patients = grid.cases["case_id"].nunique() if "case_id" in grid.cases else 0
    return (f" The runs are the {n} folds of a patient-level cross-validation: each fold's model is scored on "
            f"the patients it did not train on, so the per-volume results below pool {patients} patients, each "
            f"validated once (not the held-out patients of one split, named above). For new patients, `seglib "
            f"predict` with every fold's run (`--run` once each) averages the {n} models.")


def describe_devices(runs: pd.DataFrame) -> str:
    """"Every run trained on **cpu** in **fp32**." or the count per device and precision."""
    if runs.empty:
        return "No run was trained."
    dev = runs["device"] if "device" in runs else pd.Series([None] * len(runs))
    prec = runs["precision"] if "precision" in runs else pd.Series([None] * len(runs))
    pairs = Counter((str(d) if d is not None and d == d else "unknown device",
                     str(p) if p is not None and p == p else "unknown precision") for d, p in zip(dev, prec))
    if len(pairs) == 1:
        (d, p), = pairs
        return f"Every run trained on **{d}** in **{p}** precision (from each run's provenance)."
    parts = ", ".join(f"{n} on **{d}** in **{p}**" for (d, p), n in pairs.most_common())
    return f"The runs trained on more than one device or precision: {parts} (from each run's provenance)."


def describe_claims(claims: list[dict]) -> str:
    """How many of the seed's claims this build supports, does not support, or cannot decide."""
    if not claims:
        return "This grid tests none of the seed's claims."
    c = Counter(x.get("verdict") for x in claims)
    parts = [f"{c[v]} {v}" for v in ("supported", "not supported", "inconclusive") if c.get(v)]
    ids = {v: ", ".join(f"`{x['id']}`" for x in claims if x.get("verdict") == v) for v in c}
    text = f"Of the seed's {len(claims)} claims tested here: " + "; ".join(parts) + "."
    if ids.get("supported"):
        text += f" Supported: {ids['supported']}."
    return text


__all__ = ["mean_ci_text", "describe_results", "describe_runs", "describe_devices", "describe_claims",
           "design_of"]
