"""Image figures with segmentation contours: A4 three-plane overlays, C5 contour grid, B5 multi-model slice.

Part of :mod:`seglib.plots` (re-exported there). Contours are matplotlib's ``contour`` at level
0.5 of the binarised mask (a probability map is thresholded at 0.5). Truth is green and solid,
prediction red and dashed, so the two differ in line style as well as colour. NaN image voxels
are left blank, NaN mask voxels count as background. Written by hand on matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.lines import Line2D
from scipy import ndimage

from seglib.plots.style import PRED_COLOR, TRUTH_COLOR, new_figure, outside_legend, palette, styled
from seglib.registry import check_kwargs

TRUTH_MULTI_COLOR = "#F0E442"  # B5: truth in yellow, dashed, over every model's contour
_ITEM_KEYS = ("image", "truth", "pred", "label", "spacing")


def _binary(mask, name: str, shape: tuple[int, ...]) -> np.ndarray:
    m = np.nan_to_num(np.asarray(mask, dtype=float)) > 0.5
    if m.shape != shape:
        raise ValueError(f"{name} has shape {m.shape}, expected the image's {shape}.")
    return m


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display window: 1st–99th percentile of the finite voxels (0–1 when there are none)."""
    v = image[np.isfinite(image)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _contour(ax, mask2d: np.ndarray, color: str, linestyle: str = "-", linewidth: float = 1.4) -> bool:
    """Draw the 0.5 iso-line of a 2-D boolean mask; nothing (False) when it is empty or full."""
    if not mask2d.any() or mask2d.all():
        return False
    ax.contour(mask2d.astype(float), levels=[0.5], colors=[color], linestyles=[linestyle], linewidths=linewidth)
    return True


def _image_axes(ax) -> None:
    ax.grid(False)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _show(ax, image2d: np.ndarray, window=None, **kw) -> None:
    """Greyscale slice, or an (H, W, 3) RGB slice rescaled per channel to [0, 1]."""
    if image2d.ndim == 3 and image2d.shape[-1] == 3:
        rgb = image2d.astype(float)
        for c in range(3):
            lo, hi = _window(rgb[..., c])
            rgb[..., c] = np.clip((rgb[..., c] - lo) / (hi - lo), 0, 1)
        ax.imshow(np.nan_to_num(rgb), **kw)
    else:
        lo, hi = window if window is not None else _window(image2d)
        ax.imshow(image2d, cmap="gray", vmin=lo, vmax=hi, **kw)
    _image_axes(ax)


def lesion_centre(truth: np.ndarray, pred: np.ndarray | None = None) -> tuple[int, ...]:
    """Voxel index of the truth's centre of mass; the prediction's when the truth is empty; else the centre."""
    for m in (truth, pred):
        if m is not None and m.any():
            return tuple(int(round(c)) for c in ndimage.center_of_mass(m))
    return tuple(s // 2 for s in truth.shape)


def _planes(axes_row, image, truth, pred, spacing) -> None:
    """Axial (z), coronal (y), sagittal (x) slices through the lesion centre; arrays are (X, Y, Z)."""
    i, j, k = lesion_centre(truth, pred)
    sx, sy, sz = spacing
    window = _window(image)
    cuts = (("axial", "z", k, lambda a: a[:, :, k].T, sy / sx),
            ("coronal", "y", j, lambda a: a[:, j, :].T, sz / sx),
            ("sagittal", "x", i, lambda a: a[i, :, :].T, sz / sy))
    for ax, (name, axis, idx, cut, aspect) in zip(axes_row, cuts):
        _show(ax, cut(image), window=window, origin="lower", aspect=aspect)
        _contour(ax, cut(truth), TRUTH_COLOR, "-", 1.6)
        _contour(ax, cut(pred), PRED_COLOR, "--", 1.4)
        ax.set_title(f"{name} ({axis} = {idx})", fontsize=8)


def _legend_truth_pred(fig) -> None:
    outside_legend(fig, [Line2D([], [], color=TRUTH_COLOR), Line2D([], [], color=PRED_COLOR, linestyle="--")],
                   ["truth", "prediction"])


def _check_item(item: Mapping, ndim: int, what: str):
    if not isinstance(item, Mapping):
        raise TypeError(f"{what}: each item must be a dict with image, truth, pred, label; "
                        f"got {type(item).__name__}.")
    check_kwargs(item, _ITEM_KEYS, what)
    missing = [k for k in ("image", "truth", "pred") if k not in item]
    if missing:
        raise ValueError(f"{what}: item {item.get('label', '?')!r} lacks {missing}.")
    image = np.asarray(item["image"], dtype=float)
    rgb = ndim == 2 and image.ndim == 3 and image.shape[-1] == 3
    if image.ndim != ndim and not rgb:
        raise ValueError(f"{what}: image has shape {image.shape}; expected {ndim} dimensions"
                         + (" (or H×W×3 RGB)." if ndim == 2 else " (X, Y, Z)."))
    shape = image.shape[:2] if rgb else image.shape
    return image, _binary(item["truth"], "truth", shape), _binary(item["pred"], "pred", shape)


@styled
def overlay_rows(items: Sequence[Mapping], spacing: Sequence[float] | None = None):
    """A4: one row per case (e.g. best and worst) of axial/coronal/sagittal slices with contours.

    ``items``: dicts with ``image``, ``truth``, ``pred`` (X, Y, Z arrays), optional ``label``
    (row label) and ``spacing`` (mm per voxel, sets the aspect; overrides ``spacing``). Slices go
    through the truth's centre of mass (the prediction's if the truth is empty, else the centre).
    """
    if not items:
        raise ValueError("overlay_rows: no item to draw.")
    fig, axes = new_figure(len(items), 3, width=8.5, height=2.9 * len(items))
    for r, item in enumerate(items):
        image, truth, pred = _check_item(item, 3, "overlay_rows")
        sp = tuple(float(s) for s in (item.get("spacing") or spacing or (1.0, 1.0, 1.0)))
        if len(sp) != 3 or min(sp) <= 0:
            raise ValueError(f"overlay_rows: spacing must be 3 positive numbers, got {sp}.")
        _planes(axes[r], image, truth, pred, sp)
        if item.get("label") is not None:
            axes[r, 0].set_ylabel(str(item["label"]))
    _legend_truth_pred(fig)
    return fig


def overlay_planes(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str | None = None,
                   spacing: Sequence[float] | None = None):
    """A4 for one volume: :func:`overlay_rows` with a single row; ``title`` (if any) as the figure title."""
    fig = overlay_rows([{"image": image, "truth": truth, "pred": pred}], spacing=spacing)
    if title:
        fig.suptitle(title)
    return fig


@styled
def contour_grid(items: Sequence[Mapping], ncols: int = 4):
    """C5: a grid of 2-D examples (greyscale or H×W×3 RGB) with truth (green) and prediction (red).

    ``items``: dicts with ``image``, ``truth``, ``pred`` (2-D) and optional ``label`` (panel title,
    e.g. the case and its DSC). Unused grid cells are removed.
    """
    if not items:
        raise ValueError("contour_grid: no item to draw.")
    if int(ncols) < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols!r}.")
    ncols = min(int(ncols), len(items))
    nrows = math.ceil(len(items) / ncols)
    fig, axes = new_figure(nrows, ncols, width=2.3 * ncols + 1.4, height=2.4 * nrows)
    flat = axes.ravel()
    for ax, item in zip(flat, items):
        image, truth, pred = _check_item(item, 2, "contour_grid")
        _show(ax, image)
        _contour(ax, truth, TRUTH_COLOR, "-", 1.6)
        _contour(ax, pred, PRED_COLOR, "--", 1.4)
        if item.get("label") is not None:
            ax.set_title(str(item["label"]), fontsize=8)
    for ax in flat[len(items):]:
        fig.delaxes(ax)
    _legend_truth_pred(fig)
    return fig


def _crop_box(masks, shape, margin: int):
    union = np.zeros(shape, bool)
    for m in masks:
        union |= m
    if not union.any():
        return None
    rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    return (max(rows[0] - margin, 0), min(rows[-1] + margin + 1, shape[0]),
            max(cols[0] - margin, 0), min(cols[-1] + margin + 1, shape[1]))


@styled
def multi_contours(image: np.ndarray, truth: np.ndarray, preds: Mapping[str, np.ndarray],
                   colors: Mapping[str, str] | None = None, crop_margin: int | None = None):
    """B5: one 2-D slice with the truth (yellow, dashed) and every model's contour in its colour.

    ``colors`` maps model label → colour (e.g. :func:`seglib.plots.alpha_colors`; house palette
    otherwise). ``crop_margin`` (pixels) zooms onto the union of all masks. An empty prediction
    keeps its legend entry, marked "(empty)". The legend sits outside the image.
    """
    image = np.asarray(image, dtype=float)
    rgb = image.ndim == 3 and image.shape[-1] == 3
    if image.ndim != 2 and not rgb:
        raise ValueError(f"multi_contours: image has shape {image.shape}; expected 2 dimensions (or H×W×3).")
    shape = image.shape[:2]
    t = _binary(truth, "truth", shape)
    masks = {str(k): _binary(v, f"pred {k!r}", shape) for k, v in preds.items()}
    cmap = palette(masks, {str(k): v for k, v in (colors or {}).items()})
    box = _crop_box([t, *masks.values()], shape, int(crop_margin)) if crop_margin is not None else None
    sl = (slice(box[0], box[1]), slice(box[2], box[3])) if box else (slice(None), slice(None))
    fig, axes = new_figure(1, 1, width=7.5, height=5.2)
    ax = axes[0, 0]
    _show(ax, image[sl])
    handles, names = [], []
    for name, m in masks.items():
        drawn = _contour(ax, m[sl], cmap[name], "-", 1.3)
        handles.append(Line2D([], [], color=cmap[name]))
        names.append(name if drawn or m[sl].all() else f"{name} (empty)")
    _contour(ax, t[sl], TRUTH_MULTI_COLOR, "--", 2.0)
    handles.insert(0, Line2D([], [], color=TRUTH_MULTI_COLOR, linestyle="--", linewidth=2.0))
    names.insert(0, "truth")
    outside_legend(fig, handles, names)
    return fig
