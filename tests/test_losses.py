"""Tests for seglib.nn.losses / seglib.nn.custom_losses: closed-form values on tiny tensors,
identities, the Tversky convention, the as-published GDL+CE bugs, gradients, empty targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglib.nn.losses import LOSSES, GDLCELoss, build_loss
from seglib.nn.custom_losses import contour_distance, two_class_logits

LOG2 = math.log(2.0)


def _pair_two_samples():
    # Two samples of 2×2 voxels, logits 0 → p = 0.5 everywhere.
    #   sample 1: t = [1, 1, 0, 0];  sample 2: t = [1, 0, 0, 0]
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]).reshape(2, 1, 2, 2)
    return torch.zeros(2, 1, 2, 2), target


def _random_pair(seed=0, shape=(3, 1, 6, 7)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 2
    target = (torch.rand(shape, generator=g) > 0.6).float()
    return logits, target


def test_bce_closed_form():
    # p = 0.5 everywhere: -log 0.5 = log 2 per voxel, whatever the target.
    logits, target = _pair_two_samples()
    assert build_loss("bce")(logits, target).item() == pytest.approx(LOG2)


def test_dice_closed_form_per_sample_and_batch():
    logits, target = _pair_two_samples()
    # per sample, s = 1:  1: 1 - (2·1 + 1)/(2 + 2 + 1) = 0.4;  2: 1 - (2·0.5 + 1)/(2 + 1 + 1) = 0.5
    assert build_loss("dice")(logits, target).item() == pytest.approx(0.45)
    # batch: TP = 1.5, Σp = 4, Σt = 3: 1 - (3 + 1)/(7 + 1) = 0.5
    assert build_loss("dice", batch=True)(logits, target).item() == pytest.approx(0.5)
    # smooth 0, per sample: 1 - 2/4 = 0.5 and 1 - 1/3 → mean (0.5 + 2/3)/2
    assert build_loss("dice", smooth=0.0)(logits, target).item() == pytest.approx((0.5 + 2 / 3) / 2, rel=1e-5)


def test_dice_bce_closed_form():
    # batch Dice with smooth 1 (0.5, above) + mean BCE (log 2)
    logits, target = _pair_two_samples()
    assert build_loss("dice_bce")(logits, target).item() == pytest.approx(0.5 + LOG2)


def test_tversky_closed_form():
    # sample 2 alone: TP = 0.5, FP = 1.5, FN = 0.5; α = 0.7 → β = 0.3; smooth 1 → s/2 = 0.5
    # 1 - (0.5 + 0.5)/(0.5 + 0.7·1.5 + 0.3·0.5 + 0.5) = 1 - 1/2.2
    logits, target = _pair_two_samples()
    loss = build_loss("tversky", alpha=0.7)
    assert loss.beta == pytest.approx(0.3)
    assert loss(logits[1:], target[1:]).item() == pytest.approx(1 - 1 / 2.2, rel=1e-6)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("smooth", [1.0, 1e-5, 0.3])
def test_tversky_half_half_equals_dice(batch, smooth):
    logits, target = _random_pair(1)
    tversky = build_loss("tversky", alpha=0.5, beta=0.5, smooth=smooth, batch=batch)(logits, target)
    dice = build_loss("dice", smooth=smooth, batch=batch)(logits, target)
    assert tversky.item() == pytest.approx(dice.item(), rel=1e-6, abs=1e-7)


def test_tversky_alpha_weighs_false_positives():
    # Target one voxel of four, prediction all foreground (logits +20 → p ≈ 1):
    # TP = 1, FP = 3, FN = 0; L(α) = 1 - 1.5/(1.5 + 3α) grows with α (α weighs FP).
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    logits = torch.full_like(target, 20.0)
    alphas = [0.25, 0.35, 0.45, 0.5, 0.65, 0.75, 0.85]
    values = [build_loss("tversky", alpha=a)(logits, target).item() for a in alphas]
    assert values == sorted(values) and values[0] < values[-1]
    for a, v in zip(alphas, values):
        assert v == pytest.approx(1 - 1.5 / (1.5 + 3 * a), rel=1e-6)
    # an all-false-negative prediction is instead cheaper as α grows (β = 1 - α shrinks)
    fn_values = [build_loss("tversky", alpha=a)(-logits, target).item() for a in alphas]
    assert fn_values == sorted(fn_values, reverse=True)


def test_two_class_logits_softmax_is_sigmoid():
    z = torch.linspace(-6, 6, 13).reshape(1, 1, 13)
    probs = torch.softmax(two_class_logits(z), dim=1)
    assert torch.allclose(probs[:, 1:], torch.sigmoid(z), atol=1e-7)
    assert torch.allclose(probs[:, :1], 1 - torch.sigmoid(z), atol=1e-7)


def test_gdl_ce_closed_form():
    # sample 2 alone (t = [1,0,0,0]), p = 0.5, classes fg/bg with w = 1/(Σr)²:
    #   fg: Σr = 1, w = 1,   Σ p·r = 0.5, Σ(p + r) = 3
    #   bg: Σr = 3, w = 1/9, Σ p·r = 1.5, Σ(p + r) = 5
    #   GDC = 2(0.5 + 1.5/9)/(3 + 5/9) = (4/3)/(32/9) = 0.375 → GDL = 0.625
    # CE over two classes [0, 0]: log 2.
    logits, target = _pair_two_samples()
    value = build_loss("gdl_ce")(logits[1:], target[1:]).item()
    assert value == pytest.approx(0.625 + LOG2, rel=1e-5)
    # the published loss is GDC + 0 = 0.375 on the same input (1 - GDL: the inverted sign)
    published = build_loss("gdl_ce_as_published")(logits[1:], target[1:]).item()
    assert published == pytest.approx(0.375, rel=1e-5)


def test_gdl_ce_cross_entropy_term_equals_bce():
    logits, target = _random_pair(2)
    loss = GDLCELoss()
    ce = loss(logits, target) - loss.gdl(two_class_logits(logits), target)
    assert ce.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-5)


def test_gdl_ce_as_published_is_inverted_and_its_ce_is_zero():
    _, target = _random_pair(3)
    perfect = target * 40 - 20  # logits ±20: p ≈ t
    inverted = -perfect
    published, corrected = build_loss("gdl_ce_as_published"), build_loss("gdl_ce")
    assert published(perfect, target).item() == pytest.approx(1.0, abs=1e-6)
    assert published(inverted, target).item() == pytest.approx(0.0, abs=1e-6)
    assert corrected(perfect, target).item() == pytest.approx(0.0, abs=1e-5)
    assert corrected(inverted, target).item() > 1.0
    # bug 2: CrossEntropyLoss over one channel is exactly 0, and so is its gradient
    z = torch.randn(2, 1, 4, 4, requires_grad=True)
    ce = F.cross_entropy(z, target[:2, :, :4, :4])
    ce.backward()
    assert ce.item() == 0.0 and torch.count_nonzero(z.grad) == 0


def test_log_cosh_dice_identity_and_closed_form():
    logits, target = _random_pair(4)
    for batch in (False, True):
        dice = build_loss("dice", batch=batch)(logits, target)
        lcd = build_loss("log_cosh_dice", batch=batch)(logits, target)
        assert lcd.item() == pytest.approx(math.log(math.cosh(dice.item())), rel=1e-6)
    logits, target = _pair_two_samples()
    assert build_loss("log_cosh_dice")(logits, target).item() == pytest.approx(math.log(math.cosh(0.45)))


def test_contour_distance_cases():
    empty = np.zeros((1, 5), bool)
    truth = np.array([[0, 1, 1, 0, 0]], bool)
    pred = np.array([[0, 0, 0, 1, 1]], bool)
    assert contour_distance(empty, empty) == 0.0
    assert contour_distance(empty, truth) == 1.0 and contour_distance(pred, empty) == 1.0
    # on a 1×5 grid every foreground pixel is a contour pixel; predicted contour {3, 4}
    # is at distances 1 and 2 from the true contour {1, 2}: mean 1.5; diagonal √(0² + 4²) = 4
    assert contour_distance(pred, truth) == pytest.approx(1.5 / 4)
    assert contour_distance(pred, truth, scale=1.0) == 1.0  # clipped
    assert contour_distance(truth, truth) == 0.0


def test_shape_aware_closed_form():
    a = 3.0
    truth = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 5)
    logits = torch.tensor([-a, -a, -a, a, a]).reshape(1, 1, 1, 5)
    # BCE per pixel: agreeing sign softplus(-a) (pixel 0), disagreeing softplus(a) (pixels 1-4)
    bce = (F.softplus(torch.tensor(-a)) + 4 * F.softplus(torch.tensor(a))).item() / 5
    # Ψ = 1.5/4 (see test_contour_distance_cases) → weight 1.375
    assert build_loss("shape_aware")(logits, truth).item() == pytest.approx(1.375 * bce, rel=1e-6)
    # all logits 0: prediction empty, truth not → Ψ = 1 → 2·log 2
    assert build_loss("shape_aware")(torch.zeros_like(truth), truth).item() == pytest.approx(2 * LOG2)
    # distance_scale = 3 voxels: Ψ = 1.5/3 = 0.5
    assert build_loss("shape_aware", distance_scale=3.0)(logits, truth).item() == pytest.approx(1.5 * bce, rel=1e-6)


def test_shape_aware_equals_bce_when_prediction_matches_outline():
    logits, target = _random_pair(5)
    matched = torch.where(target > 0, 1.0, -1.0) * logits.abs().clamp(min=0.1)  # same hard mask
    loss = build_loss("shape_aware")(matched, target).item()
    assert loss == pytest.approx(F.binary_cross_entropy_with_logits(matched, target).item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_gradients(name):
    logits, target = _random_pair(6, shape=(2, 1, 5, 6, 4))  # 3D, odd sizes
    for tgt in (target, torch.zeros_like(target), torch.ones_like(target)):
        z = logits.clone().requires_grad_(True)
        loss = build_loss(name)(z, tgt)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss)
        assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"gdl_ce_as_published"}))
def test_empty_target_rewards_empty_prediction(name):
    # Empty target: an empty prediction (logits -20) costs ≈ 0, a full one (logits +20)
    # costs clearly more. (The as-published GDL+CE is tested for its bug above.)
    target = torch.zeros(2, 1, 4, 5)
    loss = build_loss(name)
    empty = loss(torch.full_like(target, -20.0), target).item()
    full = loss(torch.full_like(target, 20.0), target).item()
    assert empty == pytest.approx(0.0, abs=1e-5)
    assert full > 0.3


def test_empty_target_dice_closed_form():
    # Σt = 0, p = 0.5 on 4 voxels, s = 1: 1 - 1/(2 + 1) = 2/3 per sample
    target = torch.zeros(2, 1, 2, 2)
    assert build_loss("dice")(torch.zeros_like(target), target).item() == pytest.approx(2 / 3)


def test_registry_and_errors():
    assert set(LOSSES) == {"bce", "dice", "dice_bce", "tversky", "gdl_ce", "gdl_ce_as_published",
                           "log_cosh_dice", "shape_aware"}
    with pytest.raises(ValueError, match=r"Unknown loss 'tverski'\. Did you mean \"tversky\"\?.*Options: bce,"):
        build_loss("tverski")
    with pytest.raises(TypeError, match=r"Unknown parameter 'alfa' for loss 'tversky'\. Did you mean \"alpha\""):
        build_loss("tversky", alfa=0.3)
    with pytest.raises(TypeError, match="Unknown parameter 'smooth' for loss 'dice_bce'"):
        build_loss("dice_bce", smooth=2)
    with pytest.raises(ValueError, match="alpha and beta must be >= 0"):
        build_loss("tversky", alpha=1.5)
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        build_loss("dice", smooth=-1)
    with pytest.raises(ValueError, match="distance_scale must be > 0"):
        build_loss("shape_aware", distance_scale=0)
    z = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"dice: target shape \(2, 4, 4\) must equal logits shape \(2, 1, 4, 4\)"):
        build_loss("dice")(z, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="gdl_ce: expects one foreground channel"):
        build_loss("gdl_ce")(torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(TypeError, match="must be torch tensors"):
        build_loss("bce")(np.zeros((2, 1, 4)), z)
