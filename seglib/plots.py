"""Every figure of the three study notebooks, in one house style (see :mod:`seglib.plots_style`).

Each function takes plain DataFrames / arrays, skips NaN values, returns a
:class:`matplotlib.figure.Figure` (never shown, never titled: captions come from the notebook)
and is saved with :func:`save` (PNG, 100 dpi). Input tables (from the run cache):

- ``history``: one row per (run, epoch): ``config``, ``seed``, ``epoch`` (1-based), ``train_loss``,
  ``val_loss``, ``val_dice`` (any may be absent);
- ``cases``: one row per (run, case): ``config``, ``seed``, ``case_id`` and per-case metrics;
- ``summary``: one row per config: ``config`` and ``<metric>_mean``, ``_low``, ``_high`` (95 % CI).

Image figures live in :mod:`seglib.plots_images`, benchmark figures in :mod:`seglib.plots_bench`;
both are re-exported here. Written by hand on matplotlib (no library draws these layouts).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from seglib.plots_bench import memory_time, sampler_figure
from seglib.plots_images import contour_grid, multi_contours, overlay_planes, overlay_rows
from seglib.plots_style import (GREY, LOWER_IS_BETTER, METRIC_LABELS, PALETTE, SEED_MARKERS, label,
                                new_figure, note_figure, ordered, outside_legend, palette, require_columns, save,
                                style, styled)
from seglib.registry import look_up, suggest

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_LABELS", "PALETTE", "alpha_colors", "contour_grid", "memory_time", "metric_bars",
    "multi_contours", "overlay_planes", "overlay_rows", "paired_scatter", "per_case_distribution",
    "per_volume_bars", "sampler_figure", "save", "style", "tradeoff_vs_alpha", "training_curves",
]

DARK_RED = "#67000D"  # α = β = 0.5 (Dice) in B3, after the seed's Fig. 3
_HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo")


def _band(group, band: str):
    """Lower/upper band of a per-epoch groupby over seeds: min–max or a t-based 95 % CI."""
    if band == "minmax":
        return group.min().to_numpy(float), group.max().to_numpy(float)
    from scipy import stats as sstats  # noqa: PLC0415 (scipy.stats is slow to import; only the CI needs it)

    mean, sd, n = group.mean().to_numpy(float), group.std().to_numpy(float), group.count().to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = sstats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    return mean - half, mean + half


@styled
def training_curves(history: pd.DataFrame, metrics: Sequence[str] = ("train_loss", "val_loss"),
                    hue: str = "config", facet: str | None = None, band: str | None = "minmax",
                    colors: Mapping | None = None):
    """Mean over seeds per epoch with a shaded band; one panel per metric, one row per ``facet`` value.

    ``band``: ``"minmax"`` (range over seeds), ``"ci"`` (t-based 95 % CI of the mean) or ``None``.
    Metrics absent from ``history`` (or all NaN) are skipped with a log message (A3, B2, C3).
    """
    require_columns(history, ["epoch", hue] + ([facet] if facet else []), "training_curves")
    if band is not None:
        look_up(band, {"minmax": 1, "ci": 1}, "band")
    present = [m for m in metrics if m in history.columns and history[m].notna().any()]
    if len(present) < len(metrics):
        logger.info("training_curves: no data for %s; panel(s) skipped", sorted(set(metrics) - set(present)))
    if not present:
        raise ValueError(f"training_curves: none of {list(metrics)} has values; columns: {list(history.columns)}.")
    rows = ordered(history[facet], None) if facet else [None]
    hues = ordered(history[hue], None)
    cmap = palette(hues, colors)
    fig, axes = new_figure(len(rows), len(present), width=3.4 * len(present) + 1.8,
                           height=2.7 * len(rows), sharex=True)
    for r, value in enumerate(rows):
        sub = history if value is None else history[history[facet] == value]
        for c, metric in enumerate(present):
            ax = axes[r, c]
            for h in hues:
                d = sub.loc[sub[hue] == h, ["epoch", metric]].dropna()
                if d.empty:
                    continue
                g = d.groupby("epoch")[metric]
                x = np.asarray(sorted(d["epoch"].unique()), float)
                ax.plot(x, g.mean().to_numpy(float), color=cmap[h], label=str(h))
                if band is not None and g.count().max() > 1:
                    lo, hi = _band(g, band)
                    ax.fill_between(x, lo, hi, color=cmap[h], alpha=0.18, linewidth=0)
            ax.set_ylabel(label(metric))
            if r == len(rows) - 1:
                ax.set_xlabel("epoch")
            if value is not None:
                ax.set_title(f"{facet} = {value}")
    handles = [Line2D([], [], color=cmap[h]) for h in hues]
    outside_legend(fig, handles, [str(h) for h in hues], title=hue)
    return fig


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


def alpha_colors(configs_alpha: Mapping[str, float | None], cmap: str = "Reds",
                 special: str = DARK_RED, none_color: str = GREY) -> dict[str, str]:
    """B3's colour rule: config → hex colour, lighter for higher Tversky α.

    α is mapped linearly onto ``cmap`` from position 0.78 (lowest α, dark) to 0.22 (highest,
    light); α = β = 0.5 (Dice) gets ``special`` (dark red); α ``None``/NaN (BCE) gets grey.
    """
    import matplotlib as mpl  # noqa: PLC0415

    if not isinstance(configs_alpha, Mapping):
        raise TypeError(f"alpha_colors expects a mapping config -> alpha, got {type(configs_alpha).__name__}.")
    clean: dict[str, float | None] = {}
    for cfg, a in configs_alpha.items():
        if a is None or (isinstance(a, float) and math.isnan(a)):
            clean[cfg] = None
            continue
        if isinstance(a, bool) or not isinstance(a, (int, float, np.number)):
            raise TypeError(f"alpha of {cfg!r} must be a number or None, got {a!r}.")
        if not 0.0 <= float(a) <= 1.0:
            raise ValueError(f"alpha of {cfg!r} must lie in [0, 1], got {a!r}.")
        clean[cfg] = float(a)
    levels = sorted({a for a in clean.values() if a is not None and not math.isclose(a, 0.5)})
    cm = mpl.colormaps[cmap]
    dark, light = 0.78, 0.22
    out = {}
    for cfg, a in clean.items():
        if a is None:
            out[cfg] = to_hex(none_color)
        elif math.isclose(a, 0.5):
            out[cfg] = to_hex(special)
        else:
            span = levels[-1] - levels[0]
            t = 0.5 if span == 0 else (a - levels[0]) / span
            out[cfg] = to_hex(cm(dark + t * (light - dark)))
    return out


def _baseline_values(summary: pd.DataFrame, baseline, alpha_col: str):
    """The baseline's row (a Series) from a config name, a mapping/Series, or the one α-less row."""
    if baseline is None:
        rows = summary[summary[alpha_col].isna()]
        if len(rows) == 1:
            return rows.iloc[0], str(rows.iloc[0].get("config", "baseline"))
        if len(rows) > 1:
            logger.warning("tradeoff_vs_alpha: %d rows without alpha and no baseline named; none drawn", len(rows))
        return None, None
    if isinstance(baseline, str):
        rows = summary[summary["config"] == baseline] if "config" in summary else summary.iloc[:0]
        if rows.empty and not summary[alpha_col].isna().any():  # the grid has no baseline run: none drawn
            logger.warning("tradeoff_vs_alpha: this grid has no baseline run %r; none drawn", baseline)
            return None, None
        if rows.empty:
            options = summary["config"].astype(str).tolist() if "config" in summary else []
            raise ValueError(f"Unknown baseline {baseline!r}.{suggest(baseline, options)} Options: {options}.")
        return rows.iloc[0], baseline
    if isinstance(baseline, (Mapping, pd.Series)):
        s = pd.Series(baseline)
        return s, str(s.get("config", "baseline"))
    raise TypeError(f"baseline must be None, a config name or a mapping, got {type(baseline).__name__}.")


@styled
def tradeoff_vs_alpha(summary_with_alpha: pd.DataFrame, metrics: Sequence[str] = ("precision", "recall", "dice"),
                      baseline=None, mark_alpha: float | None = 0.25, alpha_col: str = "alpha"):
    """B6: metric mean against Tversky α with its 95 % CI band, one panel per metric.

    The baseline (BCE) is a dashed horizontal line with its CI as a grey band; ``baseline`` is a
    config name, a mapping ``{"dice_mean": ..., "dice_low": ...}``, or ``None`` (the single row whose
    α is missing, if any). A dotted vertical line marks ``mark_alpha`` (the seed's hypothesis).
    """
    metrics = list(metrics)
    if alpha_col not in summary_with_alpha or summary_with_alpha.empty:
        return note_figure("Trade-off against Tversky α: this grid has no Tversky run with an α, so there is "
                           "nothing to draw (add loss.name: [tversky] with loss.alpha values to the grid).")
    require_columns(summary_with_alpha, [alpha_col] + [f"{m}_mean" for m in metrics], "tradeoff_vs_alpha")
    df = summary_with_alpha.copy()
    df[alpha_col] = pd.to_numeric(df[alpha_col], errors="coerce")
    df = df[~np.isinf(df[alpha_col].to_numpy(float))]
    base, base_name = _baseline_values(df, baseline, alpha_col)
    curve = df[df[alpha_col].notna()].sort_values(alpha_col)
    if curve.empty:
        return note_figure("Trade-off against Tversky α: this grid has no Tversky run with an α, so there is "
                           "nothing to draw (add loss.name: [tversky] with loss.alpha values to the grid).")
    fig, axes = new_figure(1, len(metrics), width=3.0 * len(metrics) + 1.8, height=3.2, sharex=True)
    color = PALETTE[3]
    xs = curve[alpha_col].tolist() + ([mark_alpha] if mark_alpha is not None else [])
    pad = max(0.05 * (max(xs) - min(xs)), 0.02)
    for ax, metric in zip(axes[0], metrics):
        d = curve[[alpha_col, f"{metric}_mean"]].join(curve.filter([f"{metric}_low", f"{metric}_high"]))
        d = d[np.isfinite(d[f"{metric}_mean"].to_numpy(float))]
        x, y = d[alpha_col].to_numpy(float), d[f"{metric}_mean"].to_numpy(float)
        ax.plot(x, y, "o-", color=color, markersize=4)
        if f"{metric}_low" in d and f"{metric}_high" in d:
            ax.fill_between(x, d[f"{metric}_low"].to_numpy(float), d[f"{metric}_high"].to_numpy(float),
                            color=color, alpha=0.2, linewidth=0)
        if base is not None and np.isfinite(float(base.get(f"{metric}_mean", np.nan))):
            ax.axhline(float(base[f"{metric}_mean"]), color=GREY, linestyle="--")
            lo, hi = float(base.get(f"{metric}_low", np.nan)), float(base.get(f"{metric}_high", np.nan))
            if np.isfinite(lo) and np.isfinite(hi):
                ax.axhspan(lo, hi, color=GREY, alpha=0.15, linewidth=0)
        if mark_alpha is not None:
            ax.axvline(mark_alpha, color="black", linestyle=":", linewidth=1.2)
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
        ax.set_xlabel("Tversky α (FP weight)")
        ax.set_ylabel(label(metric))
    handles = [Line2D([], [], color=color, marker="o", markersize=4)]
    names = ["Tversky, mean and 95 % CI"]
    if base is not None:
        handles.append(Line2D([], [], color=GREY, linestyle="--"))
        names.append(f"baseline: {base_name}")
    if mark_alpha is not None:
        handles.append(Line2D([], [], color="black", linestyle=":"))
        names.append(f"hypothesis α = {mark_alpha:g}")
    outside_legend(fig, handles, names)
    return fig


@styled
def per_case_distribution(cases: pd.DataFrame, metric: str = "dice", order=None, kind: str = "box",
                          colors: Mapping | None = None, rng: np.random.Generator | None = None):
    """A6: per-case distribution of ``metric`` per config: box (or none) plus jittered points.

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
        bp = ax.boxplot([groups[c] for c in filled], positions=[pos[c] for c in filled], widths=0.55,
                        showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for patch, c in zip(bp["boxes"], filled):
            patch.set(facecolor=ccol[c], alpha=0.35, edgecolor="#333333")
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
