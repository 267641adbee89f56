"""Segmentation losses behind a registry: ``build_loss(name, **params)(logits, target)``.

Every loss takes ``logits`` of shape ``(N, C, *spatial)`` (raw network outputs, no
activation; the studies use ``C = 1``, the foreground logit) and a ``target`` of the
same shape with values in {0, 1}. MONAI's implementations are used wherever one exists
(``DiceLoss``, ``DiceCELoss``, ``TverskyLoss``, ``GeneralizedDiceLoss``); the losses
MONAI lacks (log-cosh Dice, shape-aware, study A's buggy GDL+CE) are in
:mod:`seglib.nn.custom_losses` and written by hand.

Notation used in the docstrings: ``p = sigmoid(z)`` the foreground probability,
``t`` the target, sums ``Σ`` over the voxels of one sample (or of the whole batch when
``batch=True``), ``TP = Σ p·t``, ``FP = Σ p·(1-t)``, ``FN = Σ (1-p)·t``.
"""

from __future__ import annotations


import torch
from monai.losses import DiceCELoss, GeneralizedDiceLoss
from monai.losses import DiceLoss as MonaiDiceLoss
from monai.losses import TverskyLoss as MonaiTverskyLoss
from torch import nn

from seglib.nn.custom_losses import (
    GDLCEAsPublishedLoss,
    LogCoshDiceLoss,
    ShapeAwareLoss,
    check_pair,
    two_class_logits,
)
from seglib.registry import build, look_up, parameters

__all__ = ["LOSSES", "BCELoss", "DiceLoss", "DiceBCELoss", "TverskyLoss", "GDLCELoss",
           "GDLCEAsPublishedLoss", "LogCoshDiceLoss", "ShapeAwareLoss", "build_loss"]


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, mean over all voxels (``torch.nn.BCEWithLogitsLoss``).

    ``L = -mean[t·log σ(z) + (1-t)·log(1-σ(z))]`` (e.g. Goodfellow et al. 2016, §6.2.2).
    Empty target: well defined, it penalises every foreground probability.
    """

    def __init__(self):
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = check_pair(logits, target, "bce")
        return self.bce(logits, target)


class DiceLoss(nn.Module):
    """Soft Dice loss on sigmoid probabilities (Milletari et al. 2016, V-Net), via MONAI.

    ``L = 1 - (2·Σ p·t + s) / (Σ p + Σ t + s)`` with ``s = smooth`` (added to numerator
    and denominator), computed per sample and channel and averaged (``batch=False``),
    or once over the whole batch (``batch=True``, as the seeds' code did: study A's
    DiceBCE and study C's ``DiceLoss`` flatten the batch).

    Empty target (``Σt = 0``): ``L = Σp / (Σp + s)``, which is 0 for an empty
    prediction and → 1 as the predicted volume grows; the smoothing term is what keeps
    it finite and meaningful, so ``smooth`` must be > 0 when empty targets can occur.
    """

    def __init__(self, batch: bool = False, smooth: float = 1.0):
        super().__init__()
        if smooth < 0:
            raise ValueError(f"dice: smooth must be >= 0; got {smooth!r}.")
        self.batch, self.smooth = bool(batch), float(smooth)
        self.dice = MonaiDiceLoss(sigmoid=True, batch=self.batch, smooth_nr=self.smooth, smooth_dr=self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, check_pair(logits, target, "dice"))


class DiceBCELoss(nn.Module):
    """Study A's DiceBCE as published: batch soft Dice (smooth 1) + mean BCE, summed.

    ``L = [1 - (2·Σ_batch p·t + 1) / (Σ_batch p + Σ_batch t + 1)] + BCE(z, t)``, the Dice
    term over the flattened batch (the Kaggle "loss function library" DiceBCELoss the
    seed cites), implemented with MONAI's ``DiceCELoss(sigmoid=True, batch=True,
    smooth_nr=1, smooth_dr=1)``, which uses ``BCEWithLogitsLoss`` for one channel.
    No parameters: it is the published recipe. Empty target (whole batch): the Dice
    term is ``Σp/(Σp+1)`` (see :class:`DiceLoss`), the BCE term penalises every p.
    """

    def __init__(self):
        super().__init__()
        self.loss = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, check_pair(logits, target, "dice_bce"))


class TverskyLoss(nn.Module):
    """Tversky loss (Salehi et al. 2017), via MONAI's ``TverskyLoss``.

    ``L = 1 - (TP + s/2) / (TP + α·FP + β·FN + s/2)`` per sample and channel, averaged
    (or over the batch with ``batch=True``). **α weighs false positives, β false
    negatives** (Salehi 2017, MONAI, segmentation_models_pytorch); ``beta`` defaults to
    ``1 - alpha``. Raising α penalises over-segmentation, so it buys precision with
    recall. ``smooth`` is on the Dice scale: MONAI's ``smooth_nr = smooth_dr = smooth/2``,
    which makes α = β = ½ equal to :class:`DiceLoss` with the same ``smooth`` exactly
    (multiply through by 2: ``(2TP + s)/(2TP + FP + FN + s)``).

    Empty target: ``L = α·Σp / (α·Σp + s/2)``, 0 for an empty prediction.
    """

    def __init__(self, alpha: float = 0.5, beta: float | None = None, smooth: float = 1.0,
                 batch: bool = False):
        super().__init__()
        beta = 1.0 - alpha if beta is None else beta
        if alpha < 0 or beta < 0 or alpha + beta <= 0:
            raise ValueError(f"tversky: alpha and beta must be >= 0 with a positive sum; "
                             f"got alpha={alpha!r}, beta={beta!r}.")
        if smooth < 0:
            raise ValueError(f"tversky: smooth must be >= 0; got {smooth!r}.")
        self.alpha, self.beta, self.smooth, self.batch = float(alpha), float(beta), float(smooth), bool(batch)
        self.tversky = MonaiTverskyLoss(sigmoid=True, alpha=self.alpha, beta=self.beta,
                                        smooth_nr=self.smooth / 2, smooth_dr=self.smooth / 2, batch=self.batch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.tversky(logits, check_pair(logits, target, "tversky"))


class GDLCELoss(nn.Module):
    """Generalised Dice loss (Sudre et al. 2017) + cross-entropy, summed (corrected study A).

    The single foreground logit ``z`` becomes two class logits ``[0, z]`` (background,
    foreground): ``softmax([0, z])_1 = e^z / (1 + e^z) = sigmoid(z)``, so the class
    probabilities are exactly ``(1-p, p)`` and thresholding is unchanged. The target
    becomes the one-hot pair ``(1-t, t)``. With classes ``l`` and ``r_l`` the one-hot
    target, ``w_l = 1 / (Σ r_l)²``:

    ``GDL = 1 - 2·Σ_l w_l Σ p_l r_l / Σ_l w_l Σ (p_l + r_l)`` (MONAI
    ``GeneralizedDiceLoss(softmax=True, to_onehot_y=True, w_type="square")``, smoothing
    1e-5) and ``CE = -mean log softmax([0, z])_t`` (``torch.nn.CrossEntropyLoss``), which
    for these logits equals ``BCEWithLogits(z, t)``. ``L = GDL + CE``.

    ``batch=True`` (default, as the study's code) pools the batch in the GDL term;
    ``False`` averages per-sample GDLs. Empty target: the foreground weight
    ``1/0² = ∞`` is replaced by the largest finite weight (MONAI's rule), so the loss
    stays finite and still rewards an empty prediction.
    """

    def __init__(self, batch: bool = True):
        super().__init__()
        self.batch = bool(batch)
        self.gdl = GeneralizedDiceLoss(softmax=True, to_onehot_y=True, w_type="square", batch=self.batch)
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = check_pair(logits, target, "gdl_ce", single_channel=True)
        two = two_class_logits(logits)
        return self.gdl(two, target) + self.ce(two, target[:, 0].long())


LOSSES: dict[str, type[nn.Module]] = {
    "bce": BCELoss,
    "dice": DiceLoss,
    "dice_bce": DiceBCELoss,
    "tversky": TverskyLoss,
    "gdl_ce": GDLCELoss,
    "gdl_ce_as_published": GDLCEAsPublishedLoss,
    "log_cosh_dice": LogCoshDiceLoss,
    "shape_aware": ShapeAwareLoss,
}


def loss_parameters(name: str) -> list[str]:
    """Names of the keyword parameters accepted by ``build_loss(name, ...)``."""
    return parameters(look_up(name, LOSSES, "loss"))


def build_loss(name: str, **params) -> nn.Module:
    """Build a registered loss: ``build_loss("tversky", alpha=0.75)``.

    Raises ``ValueError`` for an unknown ``name`` (listing :data:`LOSSES`) or a bad value,
    and ``TypeError`` for an unknown parameter (listing the allowed ones).
    """
    return build(LOSSES, name, params, "loss")

