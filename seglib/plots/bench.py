"""Study A's benchmark figures: memory/time of 3D vs (2+1)D convolution (A2) and the patch samplers (A5).

Part of :mod:`seglib.plots` (re-exported there); written by hand on matplotlib.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from seglib.plots.style import GREY, label, new_figure, ordered, outside_legend, palette, require_columns, styled

logger = logging.getLogger(__name__)

_LINESTYLES = ("-", "--", ":", "-.")
_WIDE = 20.0  # max/min ratio above which a panel gets a log-scale y axis


def _log_if_wide(ax, values: np.ndarray) -> None:
    v = values[np.isfinite(values) & (values > 0)]
    if v.size and v.max() / v.min() > _WIDE:
        ax.set_yscale("log")


@styled
def memory_time(bench: pd.DataFrame, metrics=("peak_mem_mb", "time_per_step_s")):
    """A2: peak memory and time per step against input size, one line per conv mode per panel.

    ``bench`` has ``conv`` ("3d" / "2+1d"), ``size`` (voxels per edge of the cubic input) and the
    metric columns; an optional ``precision`` column (e.g. "fp32"/"amp") adds line styles. Repeated
    rows are reduced to their median. A NaN (out of memory / not run) is marked by a "×" at the
    bottom of the panel in the line's colour. A panel spanning more than a factor 20 is log-scaled.
    """
    require_columns(bench, ["conv", "size"], "memory_time")
    present = [m for m in metrics if m in bench.columns]
    if not present:
        raise ValueError(f"memory_time: none of {list(metrics)} present; columns: {list(bench.columns)}.")
    keys = ["conv"] + (["precision"] if "precision" in bench.columns and bench["precision"].nunique() > 1 else [])
    df = bench.copy()
    for m in present:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    agg = df.groupby(keys + ["size"], dropna=False)[present].median().reset_index()
    sizes = sorted(agg["size"].dropna().unique())
    convs = ordered(df["conv"], None)
    ccol = palette(convs)
    precs = ordered(df["precision"], None) if "precision" in keys else [None]
    fig, axes = new_figure(1, len(present), width=3.6 * len(present) + 1.6, height=3.3)
    missing_any = False
    for ax, metric in zip(axes[0], present):
        mark = blended_transform_factory(ax.transData, ax.transAxes)
        for gi, (conv, prec) in enumerate((c, p) for c in convs for p in precs):
            g = agg[agg["conv"] == conv] if prec is None else agg[(agg["conv"] == conv) & (agg["precision"] == prec)]
            if g.empty:
                continue
            g = g.set_index("size").reindex(sizes)
            y = g[metric].to_numpy(float)
            ok = np.isfinite(y)
            ax.plot(np.asarray(sizes, float)[ok], y[ok], marker="o", markersize=4, color=ccol[conv],
                    linestyle=_LINESTYLES[precs.index(prec) % len(_LINESTYLES)])
            for s in np.asarray(sizes)[~ok]:
                missing_any = True
                ax.text(s, 0.02 + 0.06 * gi, "×", transform=mark, color=ccol[conv], ha="center",
                        va="bottom", fontsize=12, fontweight="bold")
        _log_if_wide(ax, agg[metric].to_numpy(float))
        ax.set_xticks(sizes, [f"{int(s)}³" for s in sizes])
        ax.set_xlabel("input size (voxels)")
        ax.set_ylabel(label(metric))
    handles = [Line2D([], [], color=ccol[c], marker="o", markersize=4) for c in convs]
    names = [f"conv {c}" for c in convs]
    if precs != [None]:
        handles += [Line2D([], [], color=GREY, linestyle=_LINESTYLES[i % len(_LINESTYLES)])
                    for i in range(len(precs))]
        names += [str(p) for p in precs]
    if missing_any:
        handles.append(Line2D([], [], color=GREY, marker="x", linestyle="none"))
        names.append("× out of memory / not run")
    outside_legend(fig, handles, names)
    return fig


def _fractions_long(df: pd.DataFrame, fractions: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per-patch lesion fractions as a long table (sampler, threshold, lesion_fraction), or None."""
    if fractions is not None:
        require_columns(fractions, ["sampler", "threshold", "lesion_fraction"], "sampler_figure fractions")
        long = fractions[["sampler", "threshold", "lesion_fraction"]].copy()
    elif "lesion_fraction" in df.columns:
        long = df[["sampler", "threshold", "lesion_fraction"]].explode("lesion_fraction")
    else:
        return None
    long["lesion_fraction"] = pd.to_numeric(long["lesion_fraction"], errors="coerce")
    long = long[np.isfinite(long["lesion_fraction"].to_numpy(float))]
    return long if not long.empty else None


@styled
def sampler_figure(df: pd.DataFrame, fractions: pd.DataFrame | None = None):
    """A5: patch samplers against the acceptance threshold, naive rejection vs lesion-aware.

    ``df``: one row per (sampler, threshold[, subject]) with any of ``acceptance_rate`` (accepted /
    drawn), ``draws_per_accepted`` (log y) and ``lesion_fraction_mean`` (rows of a group are
    averaged, NaN skipped). Per-patch fractions, from a list column ``lesion_fraction`` or a long
    table ``fractions`` (sampler, threshold, lesion_fraction), add boxes to the lesion-fraction
    panel; a dotted grey y = threshold line shows the rejection sampler's acceptance bound.
    """
    require_columns(df, ["sampler", "threshold"], "sampler_figure")
    panels = [c for c in ("acceptance_rate", "draws_per_accepted", "lesion_fraction_mean") if c in df.columns]
    long = _fractions_long(df, fractions)
    if long is not None and "lesion_fraction_mean" not in panels:
        panels.append("lesion_fraction_mean")
    if not panels:
        raise ValueError("sampler_figure: needs acceptance_rate, draws_per_accepted or lesion_fraction_mean; "
                         f"columns: {list(df.columns)}.")
    num = df[["sampler", "threshold"] + [p for p in panels if p in df.columns]].copy()
    for p in panels:
        if p in num:
            num[p] = pd.to_numeric(num[p], errors="coerce")
    agg = num.groupby(["sampler", "threshold"]).mean().reset_index()
    samplers = ordered(df["sampler"], None)
    scol = palette(samplers)
    th = sorted(pd.to_numeric(df["threshold"], errors="coerce").dropna().unique())
    step = float(np.min(np.diff(th))) if len(th) > 1 else 0.2
    fig, axes = new_figure(1, len(panels), width=3.2 * len(panels) + 1.6, height=3.3)
    for ax, p in zip(axes[0], panels):
        if p == "lesion_fraction_mean" and long is not None:
            for i, s in enumerate(samplers):
                offs = (i - (len(samplers) - 1) / 2) * 0.3 * step
                boxes = [(t, long.loc[(long["sampler"] == s) & (long["threshold"] == t), "lesion_fraction"])
                         for t in th]
                boxes = [(t, v.to_numpy(float)) for t, v in boxes if len(v)]
                if boxes:
                    bp = ax.boxplot([v for _, v in boxes], positions=[t + offs for t, _ in boxes],
                                    widths=0.25 * step, showfliers=False, patch_artist=True,
                                    manage_ticks=False, medianprops={"color": "black"})
                    for patch in bp["boxes"]:
                        patch.set(facecolor=scol[s], alpha=0.3, edgecolor=scol[s])
        for s in samplers:
            g = agg[agg["sampler"] == s].sort_values("threshold") if p in agg else agg.iloc[:0]
            g = g[np.isfinite(g[p].to_numpy(float))] if p in g else g
            if not g.empty:
                ax.plot(g["threshold"], g[p], marker="o", markersize=4, color=scol[s])
        if p == "lesion_fraction_mean":
            ax.plot(th, th, ":", color=GREY, linewidth=1.2)
            ax.set_ylabel(label("lesion_fraction"))
        else:
            ax.set_ylabel(label(p))
        if p == "draws_per_accepted":
            ax.set_yscale("log")
        ax.set_xticks(th, [f"{t:g}" for t in th])
        ax.set_xlabel("threshold (fraction of whole lesion)")
    handles = [Line2D([], [], color=scol[s], marker="o", markersize=4) for s in samplers]
    names = [str(s).replace("_", "-") for s in samplers]
    if "lesion_fraction_mean" in panels:
        handles.append(Line2D([], [], color=GREY, linestyle=":"))
        names.append("y = threshold")
    outside_legend(fig, handles, names)
    return fig
