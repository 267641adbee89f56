"""Figures of values per configuration or per case: bars with CIs, per-case distributions, per-volume
bars, paired scatter plots.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from seglib.plots.style import (
    GREY,
    LOWER_IS_BETTER,
    PALETTE,
    SEED_MARKERS,
    label,
    new_figure,
    note_figure,
    ordered,
    outside_legend,
    palette,
    require_columns,
    styled,
)
from seglib.registry import look_up

logger = logging.getLogger(__name__)

_HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo")


def _config_ticks(ax, configs) -> None:
    """Config names under their positions, slanted when many or long."""
    names = [str(c) for c in configs]
    slant = len(names) > 3 or max(map(len, names)) * len(names) > 36
    ax.set_xticks(np.arange(len(names)), names, rotation=30 if slant else 0, ha="right" if slant else "center")


def _summary_rows(summary: pd.DataFrame, metrics, order, what: str) -> pd.DataFrame:
    require_columns(summary, ["config"] + [f"{m}_mean" for m in metrics], what)
    configs = ordered(summary["config"], order)
    if not configs:
        raise ValueError(f"{what}: no config to draw (order={order!r}).")
    return summary.drop_duplicates("config").set_index("config").loc[configs]


def _err(rows: pd.DataFrame, metric: str, mean: np.ndarray):
    """(finite mask, 2×n yerr) from ``<metric>_low/_high``; all-False mask when absent."""
    lo_c, hi_c = f"{metric}_low", f"{metric}_high"
    if lo_c not in rows or hi_c not in rows:
        return np.zeros(len(mean), bool), None
    lo, hi = rows[lo_c].to_numpy(float), rows[hi_c].to_numpy(float)
    ok = np.isfinite(mean) & np.isfinite(lo) & np.isfinite(hi)
    return ok, np.vstack([np.clip(mean - lo, 0, None), np.clip(hi - mean, 0, None)])


@styled
def metric_bars(summary: pd.DataFrame, metrics: Sequence[str] = ("dice", "f1"), order=None,
                colors: Mapping | None = None, highlight_best: bool = True):
    """Grouped bars of the metric means with 95 % CI error bars, one group per config (B3, B4).

    Without ``colors`` each metric has its colour; with ``colors`` (config → colour, e.g. from
    :func:`alpha_colors`) bars take their config's colour and metrics are told apart by hatching.
    ``highlight_best`` outlines the best mean per metric (lowest for losses/HD95/volume
    difference) and puts a ``*`` above it. A NaN mean draws no bar but an "n/a" mark.
    """
    metrics = list(metrics)
    rows = _summary_rows(summary, metrics, order, "metric_bars")
    configs = list(rows.index)
    n, k = len(configs), len(metrics)
    width = 0.8 / k
    fig, axes = new_figure(1, 1, width=2.6 + 0.45 * n * k, height=3.6)
    ax = axes[0, 0]
    by_config = colors is not None
    ccol = palette(configs, colors) if by_config else None
    mcol = palette(metrics)
    x = np.arange(n, dtype=float)
    for j, metric in enumerate(metrics):
        mean = rows[f"{metric}_mean"].to_numpy(float)
        pos = x - 0.4 + width * (j + 0.5)
        ok = np.isfinite(mean)
        face = [ccol[c] for c in configs] if by_config else [mcol[metric]] * n
        bars = ax.bar(pos[ok], mean[ok], width * 0.92, color=[face[i] for i in np.flatnonzero(ok)],
                      edgecolor="#333333", linewidth=0.5, hatch=_HATCHES[j % len(_HATCHES)] if by_config else None,
                      label=label(metric))
        err_ok, yerr = _err(rows, metric, mean)
        if err_ok.any():
            ax.errorbar(pos[err_ok], mean[err_ok], yerr=yerr[:, err_ok], fmt="none", ecolor="black",
                        elinewidth=1.0, capsize=2.5)
        for p in pos[~ok]:
            ax.text(p, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color=GREY)
        if highlight_best and ok.any():
            best = int(np.nanargmin(mean) if metric in LOWER_IS_BETTER else np.nanargmax(mean))
            bars[int(np.flatnonzero(ok).tolist().index(best))].set(linewidth=1.8, edgecolor="black")
            top = yerr[1, best] + mean[best] if err_ok[best] else mean[best]
            ax.annotate("*", (pos[best], top), xytext=(0, 1), textcoords="offset points", ha="center",
                        va="bottom", fontsize=12, fontweight="bold")
    _config_ticks(ax, configs)
    labels = {label(m) for m in metrics}
    ax.set_ylabel(labels.pop() if len(labels) == 1 else
                  "score (0–1)" if all("(0–1)" in label(m) for m in metrics) else "value")
    ax.set_xlim(-0.6, n - 0.4)
    if by_config:
        handles = [Patch(facecolor="white", edgecolor="#333333", hatch=_HATCHES[j % len(_HATCHES)])
                   for j in range(k)]
    else:
        handles = [Patch(facecolor=mcol[m], edgecolor="#333333") for m in metrics]
    outside_legend(fig, handles, [m.replace("_", " ") for m in metrics])
    return fig


@styled
def per_case_distribution(cases: pd.DataFrame, metric: str = "dice", order=None, kind: str = "box",
                          colors: Mapping | None = None, rng: np.random.Generator | None = None):
    """A6: per-case distribution of ``metric`` per config: box (seaborn's ``boxplot``; or none) plus jittered points.

    Seeds are told apart by marker (legend when several). ``kind``: ``"box"`` or ``"strip"``
    (points and a black bar at the mean). ``rng`` drives the jitter (default: a fixed generator,
    so the figure is reproducible). Configs without finite values get an "n/a" mark.
    """
    look_up(kind, {"box": 1, "strip": 1}, "kind")
    require_columns(cases, ["config", metric], "per_case_distribution")
    rng = rng if rng is not None else np.random.default_rng(0)
    configs = ordered(cases["config"], order)
    ccol = palette(configs, colors)
    pos = {c: i for i, c in enumerate(configs)}
    d = cases[cases["config"].isin(configs)].copy()
    d[metric] = pd.to_numeric(d[metric], errors="coerce")
    d = d[np.isfinite(d[metric].to_numpy(float))]
    fig, axes = new_figure(1, 1, width=2.8 + 0.7 * len(configs), height=3.6)
    ax = axes[0, 0]
    groups = {c: d.loc[d["config"] == c, metric].to_numpy(float) for c in configs}
    filled = [c for c in configs if groups[c].size]
    if kind == "box" and filled:
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated ``vert`` itself
            warnings.filterwarnings("ignore", message=".*vert: bool was deprecated", category=DeprecationWarning)
            sns.boxplot(data=d, x="config", y=metric, order=configs, hue="config", hue_order=configs,
                        palette=ccol, width=0.55, showfliers=False, legend=False, ax=ax,
                        medianprops={"color": "black"}, boxprops={"alpha": 0.35, "edgecolor": "#333333"})
    elif filled:
        ax.hlines([groups[c].mean() for c in filled], [pos[c] - 0.3 for c in filled],
                  [pos[c] + 0.3 for c in filled], colors="black", linewidth=2)
    for c in configs:
        if not groups[c].size:
            ax.text(pos[c], 0.5, "n/a", transform=ax.get_xaxis_transform(), ha="center", color=GREY)
    seeds = sorted(ordered(d["seed"], None), key=str) if "seed" in d else [None]
    for i, s in enumerate(seeds):
        ds = d if s is None else d[d["seed"] == s]
        if ds.empty:
            continue
        x = ds["config"].map(pos).to_numpy(float) + rng.uniform(-0.2, 0.2, len(ds))
        ax.scatter(x, ds[metric], s=14, marker=SEED_MARKERS[i % len(SEED_MARKERS)],
                   c=[ccol[c] for c in ds["config"]], edgecolors="black", linewidths=0.3, alpha=0.8, zorder=3)
    _config_ticks(ax, configs)
    ax.set_xlim(-0.6, len(configs) - 0.4)
    ax.set_ylabel("per-case " + label(metric))
    if len(seeds) > 1:
        handles = [Line2D([], [], marker=SEED_MARKERS[i % len(SEED_MARKERS)], linestyle="none", color=GREY)
                   for i in range(len(seeds))]
        outside_legend(fig, handles, [f"seed {s}" for s in seeds])
    return fig


@styled
def per_volume_bars(values, mean_color: str = "red", median_color: str = "green",
                    ylabel: str = "DSC per volume (0–1)"):
    """C4: one bar per volume, sorted ascending, with the mean and median as horizontal lines.

    ``values`` is a Series indexed by case id (a mapping is accepted); NaN cases are dropped and
    counted in the log. The legend gives the mean and median of the remaining values.
    """
    if isinstance(values, Mapping):
        values = pd.Series(values)
    if not isinstance(values, pd.Series):
        raise TypeError(f"per_volume_bars expects a pandas Series indexed by case_id, got {type(values).__name__}.")
    v = pd.to_numeric(values, errors="coerce")
    v = v[np.isfinite(v.to_numpy(float))].sort_values(kind="stable")
    if len(v) < len(values):
        logger.info("per_volume_bars: %d volume(s) without a value dropped", len(values) - len(v))
    if v.empty:
        raise ValueError("per_volume_bars: no finite value to draw.")
    n = len(v)
    fig, axes = new_figure(1, 1, width=4.5 + 0.15 * n, height=3.6)
    ax = axes[0, 0]
    ax.bar(np.arange(n), v.to_numpy(float), 0.8, color=PALETTE[5], edgecolor="none")
    mean, median = float(v.mean()), float(v.median())
    ax.axhline(mean, color=mean_color, linestyle="--", label=f"mean = {mean:.3f}")
    ax.axhline(median, color=median_color, linestyle=":", linewidth=2, label=f"median = {median:.3f}")
    if n <= 60:
        ax.set_xticks(np.arange(n), [str(i) for i in v.index], rotation=90, fontsize=7)
    else:
        ax.set_xticks([])
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xlabel(f"volume (n = {n}, sorted by value)")
    ax.set_ylabel(ylabel)
    outside_legend(fig, *ax.get_legend_handles_labels())
    return fig


@styled
def paired_scatter(a: pd.Series, b: pd.Series, label_a: str, label_b: str, metric: str = "dice",
                   rng: np.random.Generator | None = None, empty: str | None = None):
    """C6: per-case values of ``b`` against ``a`` with the identity line, and a panel of ``b − a``.

    Cases are paired on the index; a pair with a NaN on either side is dropped. The right panel
    shows the differences (box and jittered points) with a zero line. Without any pair: a figure
    saying ``empty`` when it is given (a grid without the compared runs), else ``ValueError``.
    """
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, pd.Series):
            raise TypeError(f"paired_scatter: {name} must be a pandas Series indexed by case, "
                            f"got {type(s).__name__}.")
    d = pd.concat({"a": pd.to_numeric(a, errors="coerce"), "b": pd.to_numeric(b, errors="coerce")},
                  axis=1, join="inner").dropna()
    if d.empty:
        if empty:
            return note_figure(f"{label_a} against {label_b}: {empty}")
        raise ValueError("paired_scatter: no case has a finite value on both sides.")
    rng = rng if rng is not None else np.random.default_rng(0)
    fig, axes = new_figure(1, 2, width=7.5, height=3.8, width_ratios=[1.0, 0.45])
    ax, axd = axes[0]
    x, y = d["a"].to_numpy(float), d["b"].to_numpy(float)
    ax.scatter(x, y, s=18, color=PALETTE[0], edgecolors="black", linewidths=0.3, zorder=3)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.05 * (hi - lo) if hi > lo else 0.05
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color=GREY, linewidth=1)
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), aspect="equal")
    ax.set_xlabel(f"{label_a}: {label(metric)}")
    ax.set_ylabel(f"{label_b}: {label(metric)}")
    ax.text(0.03, 0.97, f"n = {len(d)}; above identity: {(y > x).sum()}", transform=ax.transAxes,
            va="top", fontsize=8)
    diff = y - x
    axd.boxplot([diff], positions=[0], widths=0.5, showfliers=False, medianprops={"color": "black"})
    axd.scatter(rng.uniform(-0.15, 0.15, diff.size), diff, s=12, color=PALETTE[0], alpha=0.7, zorder=3)
    axd.axhline(0, color=GREY, linewidth=1)
    axd.set_xticks([])
    axd.set_ylabel(f"{label_b} − {label_a} ({metric.replace('_', ' ')} difference)")
    return fig


@styled
def config_ci_dots(summary: pd.DataFrame, metric: str = "Dice", title: str | None = None,
                   seed_label: str = "seed's published value"):
    """The index page's figure of a study: per configuration the mean of ``metric`` with its 95 % CI
    (a dot and a horizontal bar), and the seed's published value as a marker where one exists.

    ``summary`` has columns ``configuration, mean, low, high, seed`` (NaN where nothing applies), one row
    per configuration in the order drawn top to bottom.
    """
    require_columns(summary, ["configuration", "mean", "low", "high"], "config_ci_dots")
    rows = summary.reset_index(drop=True)
    n = len(rows)
    fig, axes = new_figure(1, 1, width=7.5, height=0.75 + 0.28 * max(n, 2))
    ax = axes[0][0]
    y = np.arange(n)[::-1]
    mean = rows["mean"].to_numpy(float)
    lo, hi = rows["low"].to_numpy(float), rows["high"].to_numpy(float)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(mean)
    ax.errorbar(mean[ok], y[ok], xerr=np.vstack([mean[ok] - lo[ok], hi[ok] - mean[ok]]), fmt="o", color=PALETTE[0],
                ecolor=PALETTE[0], elinewidth=1.6, capsize=2.5, markersize=5)
    ax.plot(mean[~ok], y[~ok], "o", color=PALETTE[0], markersize=5)
    handles = [Line2D([], [], color=PALETTE[0], marker="o", linestyle="-")]
    names = ["this build: mean and 95 % CI"]
    if "seed" in rows and pd.to_numeric(rows["seed"], errors="coerce").notna().any():
        seed = pd.to_numeric(rows["seed"], errors="coerce").to_numpy(float)
        has = np.isfinite(seed)
        ax.plot(seed[has], y[has], "D", color=PALETTE[3], markersize=6, markerfacecolor="none", markeredgewidth=1.6)
        handles.append(Line2D([], [], color=PALETTE[3], marker="D", linestyle="", markerfacecolor="none"))
        names.append(seed_label)
    ax.set_yticks(y, [str(c) for c in rows["configuration"]])
    ax.set_xlabel(f"{metric} (0–1)")
    finite = np.concatenate([v[np.isfinite(v)] for v in (mean, lo, hi)] +
                            ([pd.to_numeric(rows["seed"], errors="coerce").dropna().to_numpy(float)]
                             if "seed" in rows else []))
    if finite.size:
        pad = max(0.02, 0.05 * (finite.max() - finite.min()))
        ax.set_xlim(max(-0.02, finite.min() - pad), min(1.02, finite.max() + pad))
    ax.grid(axis="y", alpha=0)
    if title:
        ax.set_title(title, loc="left")
    fig.legend(handles, names, loc="outside lower center", ncol=2)
    return fig
