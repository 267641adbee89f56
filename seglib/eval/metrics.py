"""Evaluation of binary segmentations: per case, per volume (2D models), pooled.

Empty-mask policy (nnU-Net's ``evaluate_predictions``): when a case has
``tp + fp + fn == 0`` (empty truth and empty prediction) its overlap metrics (Dice,
IoU, precision, recall, F1, lesion-wise F1) are **NaN**, not 1, and aggregation skips
NaN (``nanmean``/``nanmedian``) while the raw counts tp/fp/fn/tn are always kept, so
pooled metrics still count such cases. HD95 is NaN when either mask is empty. Where
only one of precision's or recall's denominators is zero (an empty prediction, or
an empty truth, but not both) that metric is 0, matching Dice = F1 = 0 there.

Masks are numpy arrays or torch tensors (bool, or numbers in {0, 1}), 2D or 3D,
without batch or channel axes. ``spacing`` is the voxel size in millimetres per axis.

Per-case and pooled metrics are named as such by :func:`aggregate`:
``dice_mean_per_case``, ``dice_median_per_case``, ``dice_pooled``, …
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

__all__ = ["OVERLAP_METRICS", "CASE_METRICS", "PooledDice", "aggregate", "as_mask", "case_metrics",
           "confusion_counts", "dice_from_counts", "evaluate_cases", "hd95", "largest_connected_component",
           "lesion_f1", "mean_reduce", "overlap_from_counts", "pooled_metrics", "volume_metrics"]

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "f1")
CASE_METRICS = (*OVERLAP_METRICS, "hd95", "volume_diff", "lesion_f1")


def as_mask(mask, name: str = "mask") -> np.ndarray:
    """A boolean numpy array of a binary mask (numpy or torch); raise ``ValueError`` if not binary."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be binary (values 0/1 or bool); got values such as "
                         f"{np.unique(arr)[:5].tolist()}. Threshold probabilities first (e.g. p > 0.5).")
    return arr.astype(bool)


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_mask(pred, "pred"), as_mask(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} must equal truth shape {t.shape}.")
    return p, t


def confusion_counts(pred, truth) -> dict[str, int]:
    """Voxel counts ``{"tp", "fp", "fn", "tn"}`` of a binary prediction against the truth."""
    p, t = _pair(pred, truth)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size) - tp - fp - fn}


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def dice_from_counts(tp: float, fp: float, fn: float) -> float:
    """``Dice = 2tp / (2tp + fp + fn)`` (Dice 1945); NaN when ``tp + fp + fn == 0`` (the module's policy)."""
    if tp + fp + fn == 0:
        return float("nan")
    return _ratio(2 * tp, 2 * tp + fp + fn)


def overlap_from_counts(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Dice, IoU, precision, recall, F1 from counts (NaN for all when tp+fp+fn == 0).

    ``dice = 2tp/(2tp+fp+fn)`` (Dice 1945), ``iou = tp/(tp+fp+fn)`` (Jaccard),
    ``precision = tp/(tp+fp)``, ``recall = tp/(tp+fn)``, ``f1 = 2PR/(P+R)``: computed from
    P and R (not from the Dice formula) so that the identity Dice = F1 is a check.
    """
    if tp + fp + fn == 0:
        return dict.fromkeys(OVERLAP_METRICS, float("nan"))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "dice": dice_from_counts(tp, fp, fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
    }


def _check_spacing(spacing, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(sp) == 1:
        sp = sp * ndim
    if len(sp) != ndim or not all(s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive voxel sizes (mm) for a {ndim}D mask; got {spacing!r}.")
    return sp


def hd95(pred, truth, spacing=None) -> float:
    """95th-percentile symmetric Hausdorff distance (MONAI ``compute_hausdorff_distance``).

    ``max(P95_{x∈∂pred} d(x, ∂truth), P95_{y∈∂truth} d(y, ∂pred))`` over surface voxels
    (Huttenlocher et al. 1993; percentile form as in MONAI/BraTS), in millimetres when
    ``spacing`` is given, voxels otherwise. NaN when either mask is empty.
    """
    p, t = _pair(pred, truth)
    if not p.any() or not t.any():
        return float("nan")
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(p[None, None]), torch.from_numpy(t[None, None]), include_background=True,
            percentile=95, spacing=_check_spacing(spacing, p.ndim))
    return float(value.reshape(-1)[0])


def _full_structure(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, ndim)  # 8 (2D) / 26 (3D) neighbours, as ISLES'22


def lesion_f1(pred, truth) -> float:
    """Lesion-wise F1 as in the ISLES'22 evaluation (Hernandez Petzsche et al. 2022).

    Connected components with full connectivity (26 in 3D, as the challenge's ``cc3d``
    call; 8 in 2D): a true lesion is a TP if any of its voxels is predicted, else a FN;
    a predicted component touching no true voxel is a FP. ``F1 = TP / (TP + (FP+FN)/2)``.
    NaN when both masks are empty (the challenge scores 1 there; we follow the
    empty-mask policy of this module). Written with ``scipy.ndimage.label``.
    """
    p, t = _pair(pred, truth)
    structure = _full_structure(p.ndim)
    gt_labels, n_gt = ndimage.label(t, structure=structure)
    pred_labels, n_pred = ndimage.label(p, structure=structure)
    tp = np.unique(gt_labels[p & t]).size  # true lesions hit (labels > 0 only: p & t ⊂ t)
    pred_hit = np.unique(pred_labels[p & t]).size
    fn, fp = n_gt - tp, n_pred - pred_hit
    if tp + fp + fn == 0:
        return float("nan")
    return tp / (tp + (fp + fn) / 2)


def case_metrics(pred, truth, spacing=None) -> dict[str, float]:
    """All metrics of one case: dice, iou, precision, recall, f1, hd95, volume_diff, lesion_f1, tp, fp, fn, tn.

    ``volume_diff = |Σpred - Σtruth|``: in millilitres when ``spacing`` (mm) is given
    (voxel volume / 1000), in voxels otherwise (ISLES'22's absolute volume difference).
    Overlap metrics are NaN when ``tp + fp + fn == 0``; HD95 is NaN when either mask is
    empty (see the module docstring); ``aggregate`` skips NaN.
    """
    p, t = _pair(pred, truth)
    sp = _check_spacing(spacing, p.ndim)
    counts = confusion_counts(p, t)
    voxel = float(np.prod(sp)) / 1000.0 if sp is not None else 1.0
    out: dict[str, float] = overlap_from_counts(counts["tp"], counts["fp"], counts["fn"])
    out["hd95"] = hd95(p, t, sp)
    out["volume_diff"] = abs(int(p.sum()) - int(t.sum())) * voxel
    out["lesion_f1"] = lesion_f1(p, t)
    out.update(counts)
    return out


def evaluate_cases(preds: Sequence, truths: Sequence, case_ids: Sequence[Hashable],
                   spacing=None) -> pd.DataFrame:
    """One row of :func:`case_metrics` per case, with a ``case_id`` column.

    ``spacing``: None, one spacing for every case, or a mapping ``case_id → spacing``.
    """
    if not (len(preds) == len(truths) == len(case_ids)):
        raise ValueError(f"preds, truths and case_ids must have the same length; got "
                         f"{len(preds)}, {len(truths)}, {len(case_ids)}.")
    rows = []
    for pred, truth, cid in zip(preds, truths, case_ids):
        if isinstance(spacing, Mapping) and cid not in spacing:
            raise ValueError(f"spacing mapping has no entry for case {cid!r}.")
        sp = spacing[cid] if isinstance(spacing, Mapping) else spacing
        rows.append({"case_id": cid, **case_metrics(pred, truth, sp)})
    return pd.DataFrame(rows, columns=["case_id", *CASE_METRICS, "tp", "fp", "fn", "tn"])


def volume_metrics(slice_preds: Sequence, slice_truths: Sequence, case_ids: Sequence[Hashable],
                   spacing=None) -> pd.DataFrame:
    """Per-volume metrics of a 2D model: regroup slices by case, stack, then measure.

    Slices sharing a ``case_id`` are stacked in the order given along a new **last**
    axis (``(H, W, n_slices)``, through-plane last as in NIfTI), so Dice, HD95 and the
    lesion components are those of the volume (study C's DSC is per volume, not a mean
    over slices). Cases appear in order of first occurrence; a ``n_slices`` column is
    added. ``spacing`` (3 values, mm, the last the slice spacing), a mapping per case,
    or None.
    """
    if not (len(slice_preds) == len(slice_truths) == len(case_ids)):
        raise ValueError(f"slice_preds, slice_truths and case_ids must have the same length; got "
                         f"{len(slice_preds)}, {len(slice_truths)}, {len(case_ids)}.")
    groups: dict[Hashable, list[int]] = {}
    for index, cid in enumerate(case_ids):
        groups.setdefault(cid, []).append(index)
    preds, truths = [], []
    for cid, indices in groups.items():
        pairs = [_pair(slice_preds[i], slice_truths[i]) for i in indices]
        if any(pr.ndim != 2 for pr, _ in pairs) or len({pr.shape for pr, _ in pairs}) != 1:
            raise ValueError(f"case {cid!r}: slices must be 2D arrays of one shape; got shapes "
                             f"{sorted({pr.shape for pr, _ in pairs})}.")
        preds.append(np.stack([pr for pr, _ in pairs], axis=-1))
        truths.append(np.stack([tr for _, tr in pairs], axis=-1))
    frame = evaluate_cases(preds, truths, list(groups), spacing)
    frame.insert(1, "n_slices", [len(v) for v in groups.values()])
    return frame


def pooled_metrics(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Dice, IoU, precision, recall, F1 of summed counts (pooled over cases)."""
    return overlap_from_counts(tp, fp, fn)


class PooledDice:
    """Hard Dice pooled over the whole validation set: the default metric of ``seglib.train.fit``.

    ``Dice = 2·TP / (2·TP + FP + FN)`` (:func:`dice_from_counts`) with TP, FP, FN summed over every
    pixel/voxel of every batch (pooled, not a mean of per-batch or per-case values). The prediction is
    ``logits > threshold`` (threshold 0 on logits = probability 0.5) for one output channel; for several
    channels, foreground = argmax ≠ 0 (target one-hot with the same channels, or class indices in one
    channel). Empty set (TP + FP + FN = 0): NaN. Called per batch it returns counts; ``reduce`` turns
    the list of counts into ``{"dice"}``.
    """

    def __init__(self, threshold: float = 0.0, name: str = "dice") -> None:
        self.threshold = threshold
        self.name = name

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        if logits.shape[1] == 1:
            pred = logits > self.threshold
            truth = target > 0.5
        else:
            pred = logits.argmax(1, keepdim=True) != 0
            truth = (target.argmax(1, keepdim=True) if target.shape[1] == logits.shape[1] else target) != 0
        truth = truth.reshape(pred.shape)
        tp = (pred & truth).sum().item()
        return {"tp": float(tp), "fp": float(pred.sum().item() - tp), "fn": float(truth.sum().item() - tp)}

    def reduce(self, batches: list[dict[str, float]], sizes: list[int] | None = None) -> dict[str, float]:
        tp, fp, fn = (sum(b[k] for b in batches) for k in ("tp", "fp", "fn"))
        return {self.name: dice_from_counts(tp, fp, fn)}


def mean_reduce(batches: list[dict[str, float]], sizes: list[int]) -> dict[str, float]:
    """Mean of per-batch metric values weighted by batch size (each sample counts once)."""
    if not batches:
        return {}
    n = sum(sizes)
    return {k: sum(float(b[k]) * s for b, s in zip(batches, sizes)) / n for k in batches[0]}


def aggregate(df: pd.DataFrame) -> dict[str, float]:
    """Summarise a per-case frame (from :func:`evaluate_cases` / :func:`volume_metrics`).

    For each metric column present: ``<m>_mean_per_case`` and ``<m>_median_per_case``
    (NaN skipped, so cases with empty truth and prediction do not count) and
    ``<m>_n_cases`` (non-NaN cases). Pooled: tp/fp/fn/tn summed over **all** cases first,
    then ``dice_pooled``, ``iou_pooled``, ``precision_pooled``, ``recall_pooled``,
    ``f1_pooled`` (``dice_pooled == f1_pooled`` by identity). Also ``n_cases`` and the
    summed counts ``tp_pooled`` … ``tn_pooled``.
    """
    out: dict[str, float] = {"n_cases": int(len(df))}
    for m in CASE_METRICS:
        if m in df:
            col = pd.to_numeric(df[m], errors="coerce")
            out[f"{m}_mean_per_case"] = float(col.mean(skipna=True))
            out[f"{m}_median_per_case"] = float(col.median(skipna=True))
            out[f"{m}_n_cases"] = int(col.notna().sum())
    if all(c in df for c in ("tp", "fp", "fn")):
        sums = {c: int(df[c].sum()) for c in ("tp", "fp", "fn", "tn") if c in df}
        out.update({f"{c}_pooled": v for c, v in sums.items()})
        pooled = pooled_metrics(sums["tp"], sums["fp"], sums["fn"])
        out.update({f"{m}_pooled": v for m, v in pooled.items()})
    return out


def largest_connected_component(mask, connectivity: int | None = None):
    """Keep only the largest connected component of a binary mask (study C's option).

    ``connectivity``: neighbours within that many orthogonal hops (1 = faces; default
    ``mask.ndim`` = full, 8 in 2D / 26 in 3D). Ties go to the lowest label (first in
    C order). An empty mask is returned empty. Returns the input's type (numpy bool or
    torch bool on the input's device). Written with ``scipy.ndimage.label`` (MONAI's
    ``KeepLargestConnectedComponent`` needs scikit-image, not a dependency).
    """
    is_tensor = isinstance(mask, torch.Tensor)
    m = as_mask(mask)
    conn = m.ndim if connectivity is None else int(connectivity)
    if not 1 <= conn <= max(m.ndim, 1):
        raise ValueError(f"connectivity must be between 1 and {m.ndim} for a {m.ndim}D mask; got {connectivity!r}.")
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, conn))
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        m = labels == int(np.argmax(sizes))
    else:
        m = m.copy()
    if is_tensor:
        return torch.from_numpy(np.ascontiguousarray(m)).to(mask.device)
    return m
