"""House style shared by every figure of :mod:`seglib.plots`: rcParams, palette, labels, saving.

Figures are built as :class:`matplotlib.figure.Figure` objects that pyplot does not track, so a
notebook cell that returns one shows it once, nothing leaks when a loop makes many, and no
function here ever calls ``plt.show()``. Under Jupyter's inline backend the backend module is
imported on the first figure, since that import is what registers IPython's PNG display of a
Figure (pyplot alone defers it until pyplot draws something).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

DPI = 100

#: Okabe & Ito (2008) colour-blind-safe palette, ordered for contrast; yellow last (weak on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
GREY = "#7F7F7F"
TRUTH_COLOR = "#009E73"   # ground-truth contours (green, as in the seeds' figures)
PRED_COLOR = "#D55E00"    # predicted contours (red/vermillion)
SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (8.0, 4.0),
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "axes.prop_cycle": mpl.cycler(color=list(PALETTE)),
    "image.cmap": "gray",
    "image.interpolation": "nearest",
}

#: Axis labels with units; ``volume_diff`` is in mL when the metrics had a spacing, voxels otherwise.
METRIC_LABELS = {
    "train_loss": "training loss (a.u.)",
    "val_loss": "validation loss (a.u.)",
    "loss": "loss (a.u.)",
    "val_dice": "validation DSC (0–1)",
    "dice": "Dice / DSC (0–1)",
    "iou": "IoU (0–1)",
    "precision": "precision (0–1)",
    "recall": "recall (0–1)",
    "f1": "F1 (0–1)",
    "lesion_f1": "lesion-wise F1 (0–1)",
    "hd95": "HD95 (mm)",
    "volume_diff": "|volume difference| (mL or voxels)",
    "peak_mem_mb": "peak memory (MB)",
    "time_per_step_s": "time per step (s)",
    "acceptance_rate": "acceptance rate (accepted / drawn)",
    "draws_per_accepted": "draws per accepted patch (count)",
    "lesion_fraction": "lesion fraction per patch (0–1)",
}
#: Metrics for which a lower value is better (used to mark "best").
LOWER_IS_BETTER = frozenset({"loss", "train_loss", "val_loss", "hd95", "volume_diff"})


def style() -> mpl.rc_context:
    """The house style as an rcParams context: ``with style(): ...`` (every plot function uses it).

    100 dpi, 9–10 pt fonts, no top/right spines, light grid, Okabe–Ito colour cycle.
    """
    return mpl.rc_context(RC)


def styled(func):
    """Decorator: run a plot function inside :func:`style`."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with style():
            return func(*args, **kwargs)
    return wrapper


def _register_notebook_display() -> None:
    """Load the inline backend module when it is the configured backend (registers Figure → PNG)."""
    try:
        backend = mpl.get_backend(auto_select=False)
    except TypeError:  # matplotlib < 3.10 has no auto_select
        backend = mpl.rcParams["backend"]
    if backend in ("inline", "module://matplotlib_inline.backend_inline"):
        importlib.import_module("matplotlib_inline.backend_inline")


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 8.0, height: float | None = None,
               squeeze: bool = False, **subplot_kw):
    """An untracked constrained-layout Figure and its axes grid (2-D array unless ``squeeze``)."""
    _register_notebook_display()
    height = height if height is not None else 3.2 * nrows
    fig = Figure(figsize=(min(max(width, 4.0), 10.0), height), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def label(metric: str) -> str:
    """Axis label with units for ``metric`` (the name itself when unknown)."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def palette(keys: Iterable[Hashable], colors: Mapping | None = None) -> dict:
    """Map each key to a colour: ``colors[key]`` when given, else the house palette in order."""
    keys = list(dict.fromkeys(keys))
    colors = dict(colors or {})
    out, i = {}, 0
    for k in keys:
        if k in colors:
            out[k] = colors[k]
        else:
            out[k] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``df`` is a DataFrame holding ``columns``."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} expects a pandas DataFrame, got {type(df).__name__}.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; available: {list(df.columns)}.")


def ordered(values: Iterable, order: Iterable | None) -> list:
    """Unique ``values`` in first-seen order, or ``order`` restricted to those present."""
    present = list(dict.fromkeys(v for v in values if not (isinstance(v, float) and np.isnan(v))))
    if order is None:
        return present
    order = list(order)
    unknown = [o for o in order if o not in present]
    if unknown:
        logger.warning("order names %s, absent from the data; skipped", unknown)
    return [o for o in order if o in present]


def outside_legend(fig: Figure, handles, labels, title: str | None = None) -> None:
    """One figure legend to the right of the panels (no-op without handles)."""
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title=title)


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at 100 dpi (``.png`` appended when the name has no suffix).

    Parent folders are created; the figure is closed; the written path is returned. The PNG
    carries no software/date metadata, so the same figure gives the same bytes.
    """
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".png")
    if path.suffix.lower() != ".png":
        raise ValueError(f"save writes PNG files; got {str(path)!r} (expected a name ending in .png).")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt  # noqa: PLC0415 (only to close a pyplot-managed figure)

    plt.close(fig)
    return path


def note_figure(text: str, width: float = 6.0, height: float = 1.6):
    """A figure that only says why there is nothing to plot (e.g. the grid lacks the compared runs)."""
    fig, axes = new_figure(1, 1, width=width, height=height)
    ax = axes[0][0]
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, transform=ax.transAxes)
    return fig
