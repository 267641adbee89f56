"""Figures of values along an axis: training curves per configuration, and metrics against Tversky α.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D

from seglib.plots.style import (
    GREY,
    PALETTE,
    label,
    new_figure,
    note_figure,
    ordered,
    outside_legend,
    palette,
    require_columns,
    styled,
)
from seglib.registry import look_up, suggest

logger = logging.getLogger(__name__)


DARK_RED = "#67000D"  # α = β = 0.5 (Dice) in B3, after the seed's Fig. 3


def _t_interval(values) -> tuple[float, float]:
    """The t-based 95 % CI of the mean of ``values`` (the seeds' values at one epoch)."""
    from scipy import stats as sstats  # noqa: PLC0415 (scipy.stats is slow to import; only the CI needs it)

    v = np.asarray(values, float)
    mean, sd, n = v.mean(), v.std(ddof=1), len(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = sstats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    return mean - half, mean + half


#: ``band`` → seaborn's ``errorbar``: the range over seeds (the 100 % percentile interval) or the t-based CI
BANDS = {"minmax": ("pi", 100), "ci": _t_interval}


LINESTYLES = ("-", "--", ":", "-.")


@styled
def training_curves(history: pd.DataFrame, metrics: Sequence[str] = ("train_loss", "val_loss"),
                    hue: str = "config", facet: str | None = None, band: str | None = "minmax",
                    colors: Mapping | None = None, lines: str = "hue", col_wrap: int = 4,
                    max_lines: int = 5):
    """Training curves as small multiples: the mean over seeds per epoch with a shaded band (seaborn's
    ``lineplot``), a few lines per panel so each stays readable at the page width.

    - ``lines="hue"`` (default): one row of panels per ``facet`` value (or one row without ``facet``), one
      panel per metric, one line per ``hue`` value. Without ``facet`` and with more than ``max_lines`` hue
      values, the hues are split into panels of at most ``max_lines`` lines (one row each), so ten
      configurations are never drawn on one axis.
    - ``lines="metrics"``: one panel per ``facet`` value (wrapped in ``col_wrap`` columns), each with every
      metric as a line (solid, dashed, ...) in the colour of its facet value: for losses on different
      scales (B2), where each panel needs its own y axis.

    ``band``: ``"minmax"`` (range over seeds), ``"ci"`` (t-based 95 % CI of the mean) or ``None``.
    Metrics absent from ``history`` (or all NaN) are skipped with a log message (A3, B2, C3).
    """
    require_columns(history, ["epoch"] + ([hue] if lines == "hue" else []) + ([facet] if facet else []),
                    "training_curves")
    if lines not in ("hue", "metrics"):
        raise ValueError(f"lines={lines!r}: expected 'hue' or 'metrics'.")
    errorbar = look_up(band, BANDS, "band") if band is not None else None
    present = [m for m in metrics if m in history.columns and history[m].notna().any()]
    if len(present) < len(metrics):
        logger.info("training_curves: no data for %s; panel(s) skipped", sorted(set(metrics) - set(present)))
    if not present:
        raise ValueError(f"training_curves: none of {list(metrics)} has values; columns: {list(history.columns)}.")

    def draw(ax, d, metric, color, style="-"):
        d = d[["epoch", metric]].dropna()
        if d.empty:
            return
        spread = errorbar is not None and d.groupby("epoch")[metric].count().max() > 1
        sns.lineplot(data=d, x="epoch", y=metric, estimator="mean", errorbar=errorbar if spread else None,
                     color=color, linestyle=style, err_kws={"alpha": 0.18, "linewidth": 0}, legend=False, ax=ax)

    if lines == "metrics":
        if facet is None:
            raise ValueError("training_curves(lines='metrics') needs facet= (one panel per facet value).")
        panels = ordered(history[facet], None)
        cmap = palette(panels, colors)
        ncols = min(col_wrap, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = new_figure(nrows, ncols, width=2.45 * ncols + 1.4, height=2.1 * nrows + 0.3, sharex=True)
        for i, value in enumerate(panels):
            ax = axes[i // ncols, i % ncols]
            sub = history[history[facet] == value]
            for j, metric in enumerate(present):
                draw(ax, sub, metric, cmap[value], LINESTYLES[j % len(LINESTYLES)])
            ax.set_title(str(value))
            ax.set_ylabel(("loss (a.u.)" if all("loss" in m for m in present) else "value") if i % ncols == 0 else "")
            ax.set_xlabel("epoch" if i // ncols == nrows - 1 else "")
        for k in range(len(panels), nrows * ncols):
            axes[k // ncols, k % ncols].set_visible(False)
        handles = [Line2D([], [], color="black", linestyle=LINESTYLES[j % len(LINESTYLES)])
                   for j in range(len(present))]
        outside_legend(fig, handles, [label(m) for m in present])
        return fig

    hues = ordered(history[hue], None)
    cmap = palette(hues, colors)
    if facet:
        rows = [(value, history[history[facet] == value], str(value)) for value in ordered(history[facet], None)]
    elif len(hues) > max_lines:
        chunks = [hues[i:i + max_lines] for i in range(0, len(hues), max_lines)]
        rows = [(None, history[history[hue].isin(c)], f"{hue}: {i + 1} of {len(chunks)}")
                for i, c in enumerate(chunks)]
    else:
        rows = [(None, history, None)]
    fig, axes = new_figure(len(rows), len(present), width=3.0 * len(present) + 2.6,
                           height=2.3 * len(rows) + 0.4, sharex=True)
    for r, (_, sub, title) in enumerate(rows):
        for c, metric in enumerate(present):
            ax = axes[r, c]
            for h in hues:
                draw(ax, sub.loc[sub[hue] == h], metric, cmap[h])
            ax.set_ylabel(label(metric))
            ax.set_xlabel("epoch" if r == len(rows) - 1 else "")
            if title:
                ax.set_title(title)
    handles = [Line2D([], [], color=cmap[h]) for h in hues]
    outside_legend(fig, handles, [str(h) for h in hues], title=hue)
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
