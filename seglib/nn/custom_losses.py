"""The losses MONAI lacks, written by hand (registered in :mod:`seglib.nn.losses`).

- :class:`LogCoshDiceLoss`: log-cosh Dice (Jadon 2020).
- :class:`ShapeAwareLoss`: study C's shape-aware loss (Hayder et al. 2017 as described
  by Jadon 2020; neither published code), with our exact definition.
- :class:`GDLCEAsPublishedLoss`: study A's generalised Dice + cross-entropy with both
  of its bugs, kept to reproduce the published number.

Shapes: ``logits`` and ``target`` are ``(N, C, *spatial)``, target values in {0, 1}.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.losses import DiceLoss as MonaiDiceLoss
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

__all__ = ["GDLCEAsPublishedLoss", "LogCoshDiceLoss", "ShapeAwareLoss", "check_pair",
           "contour_distance", "two_class_logits"]


def check_pair(logits: torch.Tensor, target: torch.Tensor, name: str,
               single_channel: bool = False) -> torch.Tensor:
    """Validate a ``(logits, target)`` pair and return ``target`` in the logits' dtype."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: logits and target must be torch tensors; got "
                        f"{type(logits).__name__} and {type(target).__name__}.")
    if logits.ndim < 3:
        raise ValueError(f"{name}: expected logits of shape (N, C, *spatial); got {tuple(logits.shape)}.")
    if target.shape != logits.shape:
        raise ValueError(f"{name}: target shape {tuple(target.shape)} must equal logits shape "
                         f"{tuple(logits.shape)} (N, C, *spatial).")
    if single_channel and logits.shape[1] != 1:
        raise ValueError(f"{name}: expects one foreground channel (N, 1, *spatial); got "
                         f"{logits.shape[1]} channels in {tuple(logits.shape)}.")
    return target.to(dtype=logits.dtype)


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(N, 1, …)`` foreground logit z → ``(N, 2, …)`` logits ``[0, z]``.

    ``softmax([0, z]) = (1 - sigmoid(z), sigmoid(z))``: the two-class view has exactly
    the probabilities of the one-logit sigmoid model.
    """
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


class LogCoshDiceLoss(nn.Module):
    """Log-cosh Dice loss (Jadon 2020, "A survey of loss functions for semantic segmentation").

    ``L = log(cosh(L_Dice))`` with ``L_Dice`` the soft Dice loss of
    :class:`seglib.nn.losses.DiceLoss` (MONAI ``DiceLoss`` on sigmoid, same ``batch`` and
    ``smooth``), applied to the reduced (scalar) Dice loss. Since ``L_Dice ∈ [0, 1]``,
    ``L ∈ [0, log cosh 1 ≈ 0.434]``, monotone in the Dice loss, with gradient
    ``tanh(L_Dice)·∇L_Dice`` (smaller near a perfect fit). Empty target: as the Dice
    loss, ``L = log cosh(Σp/(Σp+s))``, 0 for an empty prediction.
    """

    def __init__(self, batch: bool = False, smooth: float = 1.0):
        super().__init__()
        if smooth < 0:
            raise ValueError(f"log_cosh_dice: smooth must be >= 0; got {smooth!r}.")
        self.batch, self.smooth = bool(batch), float(smooth)
        self.dice = MonaiDiceLoss(sigmoid=True, batch=self.batch, smooth_nr=self.smooth, smooth_dr=self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cosh(self.dice(logits, check_pair(logits, target, "log_cosh_dice"))))


def _contour(mask: np.ndarray) -> np.ndarray:
    """Inner boundary: foreground voxels with a face-neighbour (or the image edge) in background."""
    if not mask.any():
        return mask
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def contour_distance(pred: np.ndarray, truth: np.ndarray, scale: float | None = None) -> float:
    """Normalised mean distance Ψ ∈ [0, 1] from the predicted contour to the true contour.

    ``Ψ = min(1, mean_{x ∈ ∂pred} d(x, ∂truth) / scale)`` in voxel units, with ``∂`` the
    inner boundary (face connectivity) and ``scale`` the grid diagonal
    ``sqrt(Σ (size_i - 1)²)`` by default (the largest possible distance, so the clip
    only acts with a smaller ``scale``). Both masks empty: 0. Exactly one empty: 1.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    pc, gc = _contour(pred), _contour(truth)
    if not pc.any() and not gc.any():
        return 0.0
    if not pc.any() or not gc.any():
        return 1.0
    if scale is None:
        scale = math.sqrt(sum((s - 1) ** 2 for s in truth.shape))
    if scale <= 0:  # a single-voxel grid: the two contours coincide
        return 0.0
    mean_distance = float(ndimage.distance_transform_edt(~gc)[pc].mean())
    return min(1.0, mean_distance / scale)


class ShapeAwareLoss(nn.Module):
    """Shape-aware loss of study C: BCE weighted by the contour distance. Our definition.

    Source: Hayder et al. 2017 ("Boundary-aware instance segmentation", CVPR) as
    summarised by Jadon 2020 (survey, Table 1): cross-entropy with a coefficient given by
    "the average point-to-curve Euclidean distance among points around the curve of the
    predicted segmentation to the ground truth", ``L = Σ_i CE_i + Σ_i Ψ·CE_i``. Neither
    paper (nor Jadon's repository, nor study C) gives code, so we define, per sample n
    and channel c:

    ``L = mean_{n,c} (1 + Ψ_{n,c}) · mean_i BCE(z_{n,c,i}, t_{n,c,i})``

    with ``Ψ`` = :func:`contour_distance` between the hard prediction ``z > 0`` (``p >
    0.5``) and the target: the mean Euclidean distance (voxels, ``scipy.ndimage``
    distance transform of the target's contour) from each predicted-contour voxel to the
    nearest target-contour voxel, divided by ``distance_scale`` (default: the grid
    diagonal) and clipped to [0, 1].

    Why this form: it is the survey's formula with Ψ made a per-image scalar (an
    *average* distance, as described); Ψ is computed without gradient (the threshold
    is not differentiable), so the loss is BCE with a constant per-image weight in
    [1, 2] and its gradient is finite everywhere; the bound keeps it on BCE's scale so
    the published learning rates apply; one distance transform per image on the CPU
    costs about a millisecond at 256². Images whose prediction's outline is far from
    the truth (gross errors, false-positive blobs) weigh up to twice as much.

    Empty target: Ψ = 0 when the prediction is empty too (plain BCE), Ψ = 1 when the
    prediction is not (or when the target is non-empty and the prediction empty).
    """

    def __init__(self, distance_scale: float | None = None):
        super().__init__()
        if distance_scale is not None and not distance_scale > 0:
            raise ValueError(f"shape_aware: distance_scale must be > 0 voxels or None; got {distance_scale!r}.")
        self.distance_scale = None if distance_scale is None else float(distance_scale)

    @torch.no_grad()
    def weights(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-(sample, channel) weights ``1 + Ψ`` of shape ``(N, C)``, no gradient."""
        pred = (logits.detach() > 0).cpu().numpy()
        truth = (target.detach() > 0.5).cpu().numpy()
        psi = [[contour_distance(pred[n, c], truth[n, c], self.distance_scale)
                for c in range(pred.shape[1])] for n in range(pred.shape[0])]
        return 1.0 + torch.tensor(psi, dtype=logits.dtype, device=logits.device)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = check_pair(logits, target, "shape_aware")
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        per_image = bce.mean(dim=tuple(range(2, logits.ndim)))
        return (self.weights(logits, target) * per_image).mean()


class GDLCEAsPublishedLoss(nn.Module):
    """Study A's GDL + CE **as published, with both bugs** (to reproduce its 0.0093).

    The study's loss was ``CrossEntropyLoss()(z, t) + GDL(z, t)`` on the single
    foreground logit. With ``p = sigmoid(z)``, its GDL term stacked the classes
    ``P = (p, 1-p)``, ``R = (t, 1-t)``, pooled the whole batch, and with
    ``w_l = 1 / max((Σ R_l)², ε)``, ``ε = 1e-6`` computed the generalised Dice
    coefficient (Sudre et al. 2017)

    ``GDC = 2·Σ_l w_l Σ P_l R_l / Σ_l max(w_l Σ (P_l + R_l), ε)``.

    Bug 1, sign inverted: its Dice function already returned ``1 - GDC`` and the
    base class returned ``1 - mean(that)``, so the minimised term is ``GDC`` itself:
    ≈ 1 at a perfect prediction, ≈ 0 at the inverted one, pushing the network towards
    the complement of the lesion. Bug 2, CE identically 0: ``CrossEntropyLoss`` over a
    single channel: ``log_softmax`` of one logit is ``log 1 = 0``, so the term and its
    gradient vanish whatever the prediction. We compute the term the same way
    (``F.cross_entropy`` on the one channel with the target as class probabilities) so
    the zero is measured, not hard-coded.

    ``L = GDC + 0``. Empty target (whole batch): ``w_fg = 1/ε``, ``GDC`` stays in [0, 1].
    Use :class:`seglib.nn.losses.GDLCELoss` (``"gdl_ce"``) for the corrected loss.
    """

    eps = 1e-6

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = check_pair(logits, target, "gdl_ce_as_published", single_channel=True)
        p = torch.sigmoid(logits)
        probs = torch.cat([p, 1 - p], dim=1)
        ref = torch.cat([target, 1 - target], dim=1)
        dims = [0, *range(2, logits.ndim)]  # pool batch and space, keep the class axis
        w = 1.0 / (ref.sum(dims) ** 2).clamp(min=self.eps)
        numerator = 2.0 * (w * (probs * ref).sum(dims)).sum()
        denominator = (w * (probs + ref).sum(dims)).clamp(min=self.eps).sum()
        gdc = numerator / denominator  # bug 1: the coefficient, not 1 - coefficient
        ce_single_channel = F.cross_entropy(logits, target)  # bug 2: == 0 for one channel
        return gdc + ce_single_channel
