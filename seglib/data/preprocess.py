"""Preprocessing of the three studies, as published and corrected.

Study A (stroke, 3D): ``resize_volume`` / ``preprocess_volume`` resize a
volume to N³ (images trilinear; masks nearest, or trilinear as the seed's code
did with ``mask_interp="linear_as_published"``, which yields non-binary
masks), optional per-channel z-score (the seed normalised nothing), and
``subsample_crop_pad`` for the code's 64³ path (stride-3 subsampling, crop,
zero-pad).

Study B (prostate, 2D): ``extract_slices`` turns volumes into 2D items with
patient id and slice index, min-max to [0, 1] **per slice** by default (the
seed exported each slice to its own PNG, which rescales each slice on its own;
``normalise="volume"`` is the alternative), resized to S×S (image bilinear,
mask nearest).

Study C (LGG, 2D): ``buda_preprocess`` is the per-volume pipeline of
mateuszbuda/brain-segmentation-pytorch (``dataset.py`` and ``utils.py``):
first and last slice dropped, voxels under 10 % of the volume maximum zeroed,
crop to the bounding box, pad to square, resize to S (image order-2 spline,
mask nearest), rescale between the 10th and 99th percentile, z-score per channel.

Resizing uses ``torch.nn.functional.interpolate`` (``align_corners=False``;
masks ``"nearest-exact"``, which picks the nearest source pixel centre) and
``scipy.ndimage.zoom`` for Buda's order-2 spline; both are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from seglib.data.case import Case

MASK_INTERP = ("nearest", "linear_as_published")


def _size_tuple(size, ndim: int) -> tuple[int, ...]:
    t = (int(size),) * ndim if np.isscalar(size) else tuple(int(s) for s in size)
    if len(t) != ndim or min(t) < 1:
        raise ValueError(f"size must be a positive int or {ndim} positive ints, got {size!r}.")
    return t


def resize_volume(array: np.ndarray, size, mode: str = "linear") -> np.ndarray:
    """Resize a channels-first array ``(C, *spatial)`` (2D or 3D spatial) to ``size``.

    ``mode="linear"``: bi/trilinear, ``align_corners=False`` (pixel centres
    map to pixel centres, as ``grid_sample`` with an identity grid);
    ``mode="nearest"``: nearest source pixel centre (``"nearest-exact"``).
    Returns float32 for linear, the input dtype for nearest.
    """
    import torch
    import torch.nn.functional as F

    spatial = array.ndim - 1
    if spatial not in (2, 3):
        raise ValueError(f"Expected (C, H, W) or (C, X, Y, Z), got shape {array.shape}.")
    out_size = _size_tuple(size, spatial)
    if mode == "linear":
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        interp = "bilinear" if spatial == 2 else "trilinear"
        return F.interpolate(t, size=out_size, mode=interp, align_corners=False)[0].numpy()
    if mode == "nearest":
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        out = F.interpolate(t, size=out_size, mode="nearest-exact")[0].numpy()
        return out.astype(array.dtype, copy=False)
    raise ValueError(f"Unknown resize mode {mode!r}; expected 'linear' or 'nearest'.")


def zscore_channels(image: np.ndarray, nonzero: bool = False) -> np.ndarray:
    """Per-channel z-score; ``nonzero=True`` uses only voxels ≠ 0 for the statistics
    and leaves the zero background at 0. A constant channel raises ``ValueError``."""
    out = np.empty_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        x = image[c].astype(np.float32)
        sel = x[x != 0] if nonzero else x
        if sel.size == 0 or float(sel.std()) == 0.0:
            raise ValueError(f"Channel {c} is constant; cannot z-score it.")
        z = (x - sel.mean()) / sel.std()
        out[c] = np.where(x != 0, z, 0.0) if nonzero else z
    return out


def preprocess_volume(
    case: Case,
    size=64,
    *,
    mask_interp: str = "nearest",
    threshold: float | None = None,
    zscore: bool = False,
    zscore_nonzero: bool = False,
) -> dict[str, np.ndarray]:
    """Study A: resize ``case`` to ``size`` (N or N³) and optionally z-score.

    ``mask_interp="nearest"`` (correct) keeps the mask binary uint8.
    ``"linear_as_published"`` resamples the mask trilinearly as the seed's
    ``grid_sample`` did: a float32 mask with values in [0, 1]; pass
    ``threshold=0.5`` to binarise it afterwards (uint8). ``zscore`` normalises
    each channel over the whole resized volume (the seed did not normalise); ``zscore_nonzero`` z-scores
    each channel of the native image over its non-zero (brain) voxels before resizing, leaving the
    background at 0 (:func:`zscore_channels` with ``nonzero=True``): both are invariant to a channel's
    unit (ISLES'22 ADC in mm²/s or 10⁻³ mm²/s), the latter is not moved by how much background a case has.
    Returns ``{"image": (C, *size) float32, "mask": (*size)}`` (no mask key
    when the case has none).
    """
    if mask_interp not in MASK_INTERP:
        raise ValueError(f"mask_interp must be one of {MASK_INTERP}, got {mask_interp!r}.")
    spatial = case.image.ndim - 1
    out_size = _size_tuple(size, spatial)
    if zscore and zscore_nonzero:
        raise ValueError("preprocess_volume: pass zscore or zscore_nonzero, not both.")
    source = zscore_channels(case.image, nonzero=True) if zscore_nonzero else case.image
    image = resize_volume(source, out_size, "linear")
    if zscore:
        image = zscore_channels(image)
    out = {"image": image}
    if case.mask is not None:
        if mask_interp == "nearest":
            mask = resize_volume(case.mask[None], out_size, "nearest")[0]
        else:
            mask = resize_volume(case.mask[None].astype(np.float32), out_size, "linear")[0]
            if threshold is not None:
                mask = (mask >= threshold).astype(np.uint8)
        out["mask"] = mask
    return out


def subsample_crop_pad(array: np.ndarray, size: int = 64, stride: int = 3) -> np.ndarray:
    """The seed code's 64³ path: every ``stride``-th voxel, then centre-crop or
    zero-pad each spatial axis to ``size``. Works on ``(C, *spatial)`` or a mask
    ``(*spatial)`` passed as ``mask[None]``. The seed's crop anchor is not
    documented; we centre both crop and pad."""
    sub = array[(slice(None),) + (slice(None, None, stride),) * (array.ndim - 1)]
    out = np.zeros(sub.shape[:1] + (size,) * (array.ndim - 1), dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for n in sub.shape[1:]:
        if n >= size:
            a = (n - size) // 2
            src.append(slice(a, a + size))
            dst.append(slice(None))
        else:
            a = (size - n) // 2
            src.append(slice(None))
            dst.append(slice(a, a + n))
    out[tuple(dst)] = sub[tuple(src)]
    return out


# ------------------------------------------------------------------ study B
def minmax(x: np.ndarray, axes) -> np.ndarray:
    """(x - min) / (max - min) over ``axes``; a constant block maps to 0."""
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    rng = hi - lo
    return np.where(rng > 0, (x - lo) / np.where(rng > 0, rng, 1), 0).astype(np.float32)


def extract_slices(
    cases: Iterable[Case],
    size: int | None = None,
    *,
    normalise: str | None = "slice",
    quantise: bool = False,
) -> dict[str, np.ndarray]:
    """Study B: every z slice of every case as a 2D item.

    Args:
        cases: cases with masks (use ``with_masks`` first), image ``(C, X, Y, Z)``.
        size: resize each slice to ``size``×``size`` (image bilinear, mask
            nearest); ``None`` keeps the native size (all cases must agree).
        normalise: ``"slice"`` min-max to [0, 1] per slice and channel (as
            published: one PNG per slice), ``"volume"`` per volume and channel,
            ``None`` leaves intensities.
        quantise: round to 256 levels as the seed's 8-bit PNG export did
            (needs ``normalise``).

    Returns ``{"image": (N, C, S, S) float32, "mask": (N, S, S) uint8,
    "patient": (N,) str, "slice": (N,) int64}``.
    """
    if normalise not in ("slice", "volume", None):
        raise ValueError(f"normalise must be 'slice', 'volume' or None, got {normalise!r}.")
    if quantise and normalise is None:
        raise ValueError("quantise=True needs normalise='slice' or 'volume' (values in [0, 1]).")
    images, masks, pids, idx = [], [], [], []
    for case in cases:
        if case.mask is None:
            raise ValueError(f"Case {case.id} has no mask; filter with seglib.data.with_masks first.")
        img = case.image.astype(np.float32, copy=False)
        if normalise == "volume":
            img = minmax(img, axes=(1, 2, 3))
        for z in range(img.shape[-1]):
            sl = img[..., z]
            if normalise == "slice":
                sl = minmax(sl, axes=(1, 2))
            if quantise:
                sl = np.round(sl * 255.0) / 255.0
            m = case.mask[..., z]
            if size is not None:
                sl = resize_volume(sl, size, "linear")
                m = resize_volume(m[None], size, "nearest")[0]
            images.append(sl.astype(np.float32, copy=False))
            masks.append(m.astype(np.uint8, copy=False))
            pids.append(case.id)
            idx.append(z)
    if not images:
        raise ValueError("extract_slices: no slices (empty case list).")
    shapes = sorted({im.shape for im in images})
    if len(shapes) > 1:
        raise ValueError(f"Slices have different shapes {shapes}; pass size=S to resize them.")
    return {
        "image": np.stack(images),
        "mask": np.stack(masks),
        "patient": np.array(pids),
        "slice": np.array(idx, dtype=np.int64),
    }


# ------------------------------------------------------------------ study C
def _zoom2d(plane: np.ndarray, size: int, order: int) -> np.ndarray:
    from scipy.ndimage import zoom

    factors = (size / plane.shape[0], size / plane.shape[1])
    out = zoom(plane, factors, order=order, mode="grid-constant", cval=0.0, grid_mode=True)
    assert out.shape == (size, size), out.shape
    return out


def buda_preprocess(
    case: Case,
    size: int = 256,
    *,
    drop_ends: bool = True,
    crop_slices: bool = True,
    threshold: float = 0.1,
) -> dict[str, np.ndarray]:
    """Study C: Buda et al.'s per-volume pipeline on an LGG case ``(C, H, W, S)``.

    Steps, in the published order (``BrainSegmentationDataset`` and
    ``utils.py`` of mateuszbuda/brain-segmentation-pytorch):

    1. drop the first and last slice (``drop_ends``);
    2. zero every voxel below ``threshold`` × the volume maximum (all channels);
    3. crop to the bounding box of the remaining non-zero voxels, in plane and,
       as ``crop_sample`` does, along the slices (``crop_slices=False`` keeps
       every slice);
    4. zero-pad the shorter in-plane axis to a square (floor before, ceil after);
    5. resize in plane to ``size``: image order-2 spline, mask nearest
       (``skimage.transform.resize`` without anti-aliasing; here
       ``scipy.ndimage.zoom`` with ``grid_mode=True``, which skimage calls);
    6. clip to the 10th-99th percentile of the whole volume, rescale to [0, 1]
       and z-score each channel.

    Returns ``{"image": (C, size, size, S') float32, "mask": (size, size, S')
    uint8, "slices": (S',) indices into the case's slices, "bbox": [h0, h1,
    w0, w1]}``.
    """
    if case.mask is None:
        raise ValueError(f"Case {case.id} has no mask; buda_preprocess needs one.")
    image = case.image.astype(np.float32, copy=True)
    mask = case.mask
    slices = np.arange(image.shape[-1])
    if drop_ends:
        if image.shape[-1] < 3:
            raise ValueError(f"Case {case.id}: {image.shape[-1]} slices; dropping the ends needs at least 3.")
        image, mask, slices = image[..., 1:-1], mask[..., 1:-1], slices[1:-1]
    image[image < image.max() * threshold] = 0
    nz = image.max(axis=0) > 0  # (H, W, S)
    if not nz.any():
        raise ValueError(f"Case {case.id}: the volume is empty after thresholding at {threshold:g} × max.")
    hs = np.flatnonzero(nz.any(axis=(1, 2)))
    ws = np.flatnonzero(nz.any(axis=(0, 2)))
    h0, h1, w0, w1 = hs[0], hs[-1] + 1, ws[0], ws[-1] + 1
    if crop_slices:
        ss = np.flatnonzero(nz.any(axis=(0, 1)))
        keep = slice(ss[0], ss[-1] + 1)
    else:
        keep = slice(None)
    image = image[:, h0:h1, w0:w1, keep]
    mask = mask[h0:h1, w0:w1, keep]
    slices = slices[keep]
    a, b = image.shape[1], image.shape[2]
    if a != b:
        diff = abs(a - b) / 2.0
        pad = (int(np.floor(diff)), int(np.ceil(diff)))
        pad_hw = ((0, 0), pad) if a > b else (pad, (0, 0))
        mask = np.pad(mask, pad_hw + ((0, 0),))
        image = np.pad(image, ((0, 0),) + pad_hw + ((0, 0),))
    n_s = image.shape[-1]
    out = np.empty((image.shape[0], size, size, n_s), np.float32)
    out_m = np.empty((size, size, n_s), np.uint8)
    for s in range(n_s):
        for c in range(image.shape[0]):
            out[c, :, :, s] = _zoom2d(image[c, :, :, s], size, order=2)
        out_m[:, :, s] = _zoom2d(mask[:, :, s], size, order=0)
    p10, p99 = np.percentile(out, [10, 99])
    if p99 <= p10:
        raise ValueError(f"Case {case.id}: 10th and 99th percentiles are equal ({p10:g}); cannot rescale.")
    out = (np.clip(out, p10, p99) - p10) / (p99 - p10)
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    std = out.std(axis=(1, 2, 3), keepdims=True)
    if (std == 0).any():
        raise ValueError(f"Case {case.id}: a channel is constant after rescaling; cannot z-score it.")
    return {
        "image": ((out - mean) / std).astype(np.float32),
        "mask": out_m,
        "slices": slices.astype(np.int64),
        "bbox": np.array([h0, h1, w0, w1], dtype=np.int64),
    }


def stack_volumes(items: Sequence[dict[str, np.ndarray]], ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Concatenate per-volume outputs of ``buda_preprocess`` into slice arrays for caching:
    ``image`` (N, C, S, S), ``mask`` (N, S, S), ``patient`` (N,), ``slice`` (N,)."""
    if len(items) != len(ids):
        raise ValueError(f"{len(items)} volumes but {len(ids)} ids.")
    return {
        "image": np.concatenate([it["image"].transpose(3, 0, 1, 2) for it in items]),
        "mask": np.concatenate([it["mask"].transpose(2, 0, 1) for it in items]),
        "patient": np.concatenate([np.full(it["image"].shape[-1], pid) for it, pid in zip(items, ids)]),
        "slice": np.concatenate([it["slices"] for it in items]),
    }


def move_slice_axis(case: Case, axis: int) -> Case:
    """``case`` with spatial ``axis`` (0, 1 or 2) moved last, where the 2D studies cut their slices
    (``data.slice_axis``): image, mask, spacing, the affine's columns (and ``meta["affines"]``) follow, and
    ``meta["slice_axis"]`` records it for :func:`restore_slice_axis`. ``axis=2`` returns ``case`` itself."""
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis!r}.")
    if axis == 2:
        return case
    order = [a for a in range(3) if a != axis] + [axis]

    def turn(aff):
        if aff is None:
            return None
        out = np.array(aff, dtype=np.float64, copy=True)
        out[:3, :3] = np.asarray(aff)[:3, order]
        return out

    meta = {**case.meta, "slice_axis": axis}
    if case.meta.get("affines"):
        meta["affines"] = {k: turn(v) for k, v in case.meta["affines"].items()}
    return Case(case.id, np.ascontiguousarray(case.image.transpose(0, *(a + 1 for a in order))),
                None if case.mask is None else np.ascontiguousarray(case.mask.transpose(order)),
                tuple(case.spacing[a] for a in order), dict(case.paths), turn(case.affine), meta)


def restore_slice_axis(mask: np.ndarray, axis: int) -> np.ndarray:
    """The inverse of :func:`move_slice_axis` for a ``(X', Y', Z')`` array: the last axis back to ``axis``."""
    return mask if axis == 2 else np.ascontiguousarray(np.moveaxis(mask, 2, axis))


def resize_probabilities(prob: np.ndarray, shape) -> np.ndarray:
    """A probability map (2D or 3D) resized (linear) onto ``shape``: a prediction mapped back onto the case's grid."""
    return resize_volume(prob[None].astype(np.float32), tuple(int(s) for s in shape), "linear")[0]
