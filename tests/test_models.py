"""Tests for seglib.nn.unet and seglib.nn.blocks: shapes at odd sizes, forward+backward on CPU,
closed-form parameter counts, (2+1)D structure, channels-last, registry errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seglib.nn.blocks import Conv2Plus1d, LinearUpsample, crop_to, matched_mid_channels, pad_to_multiple
from seglib.nn.unet import MODELS, UNet, UNetPlusPlus, build_model, count_parameters

TINY = (4, 8, 16)


def _forward_backward(model: nn.Module, x: torch.Tensor, out_channels: int = 1) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    y = model(x)
    assert y.shape == (x.shape[0], out_channels, *x.shape[2:])
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return y


@pytest.mark.parametrize("upsample", ["transpose", "linear"])
def test_unet_2d_odd_size_forward_backward(upsample):
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=2, in_channels=3, out_channels=2, features=TINY, upsample=upsample)
    _forward_backward(model, torch.randn(2, 3, 37, 41), out_channels=2)


@pytest.mark.parametrize("conv", ["3d", "2+1d"])
@pytest.mark.parametrize("upsample", ["transpose", "linear"])
def test_unet_3d_odd_size_forward_backward(conv, upsample):
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=2, out_channels=1, features=TINY,
                        conv=conv, upsample=upsample)
    _forward_backward(model, torch.randn(2, 2, 19, 21, 17))


@pytest.mark.parametrize("pad_mode", ["replicate", "zeros"])
@pytest.mark.parametrize("size", [(1, 1, 1), (2, 3, 5), (4, 4, 4)])
def test_unet_any_size_from_one(size, pad_mode):
    model = build_model("unet", spatial_dims=3, features=TINY, conv="2+1d", pad_mode=pad_mode)
    assert model(torch.randn(2, 1, *size)).shape == (2, 1, *size)


def test_unet_returns_logits_no_activation():
    # With a zero head weight and bias b, every logit is exactly b (here < 0, so no
    # sigmoid/softmax can follow the head), and the crop keeps the input size.
    model = build_model("unet", spatial_dims=2, features=TINY).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-3.5)
    y = model(torch.randn(1, 1, 13, 9))
    assert y.shape == (1, 1, 13, 9)
    assert torch.equal(y, torch.full_like(y, -3.5))


def test_parameter_counts_closed_form():
    # 2D, in=1, out=1, features (2, 4), transposed up-sampling:
    #   level 0: conv 1·2·9=18 + BN 2·2=4 + conv 2·2·9=36 + BN 4            =  62
    #   level 1: conv 2·4·9=72 + BN 8 + conv 4·4·9=144 + BN 8               = 232
    #   up: ConvTranspose 4·2·2·2=32 + bias 2                              =  34
    #   decoder: conv (2+2)·2·9=72 + BN 4 + conv 2·2·9=36 + BN 4           = 116
    #   head: 2·1 + 1                                                       =   3   → 447
    assert count_parameters(build_model("unet", spatial_dims=2, features=(2, 4))) == 447
    # linear up-sampling: the 34 of the transposed conv become a 1×1 conv 4·2 + 2 = 10 → 423
    assert count_parameters(build_model("unet", spatial_dims=2, features=(2, 4), upsample="linear")) == 423
    # 3D (2+1)D, mid width = out: pair(cin, cout) = 9·cin·cout + BN 2·cout + 3·cout·cout
    #   level 0: pair(1,2)=18+4+12=34 + BN 4 + pair(2,2)=36+4+12=52 + BN 4   =  94
    #   level 1: pair(2,4)=72+8+48=128 + BN 8 + pair(4,4)=144+8+48=200 + BN 8 = 344
    #   up: ConvTranspose3d 4·2·8=64 + 2                                      =  66
    #   decoder: pair(4,2)=72+4+12=88 + BN 4 + pair(2,2)=52 + BN 4            = 148
    #   head: 3                                                               → 655
    assert count_parameters(build_model("unet", spatial_dims=3, features=(2, 4), conv="2+1d")) == 655


def test_count_parameters_trainable_only():
    model = build_model("unet", spatial_dims=2, features=(2, 4))
    model.head.weight.requires_grad_(False)
    assert count_parameters(model) == 447
    assert count_parameters(model, trainable_only=True) == 447 - 2


def test_two_plus_one_structure_and_through_plane_axis():
    model = build_model("unet", spatial_dims=3, features=TINY, conv="2+1d")
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv3d)}
    assert kernels == {(3, 3, 1), (1, 1, 3), (1, 1, 1)}  # no 3×3×3 left; 1×1×1 is the head
    pairs = [m for m in model.modules() if isinstance(m, Conv2Plus1d)]
    assert len(pairs) == 2 * (2 * len(TINY) - 1)  # two per level, encoder and decoder
    assert all(not c.bias for p in pairs for c in p if isinstance(c, nn.Conv3d))
    # Impulse at (x, y, z) = (4, 4, 3): the in-plane conv spreads only over X and Y (±1),
    # the through-plane conv then over the last axis Z (±1).
    block = Conv2Plus1d(1, 1).eval()
    with torch.no_grad():
        for m in block:
            if isinstance(m, nn.Conv3d):
                m.weight.fill_(1.0)
    x = torch.zeros(1, 1, 9, 9, 7)
    x[0, 0, 4, 4, 3] = 1.0
    with torch.no_grad():
        inplane = block[0](x)
        out = block(x)
    nz = inplane[0, 0].nonzero()
    assert set(nz[:, 2].tolist()) == {3} and set(nz[:, 0].tolist()) == {3, 4, 5}
    nz = out[0, 0].nonzero()
    assert set(nz[:, 2].tolist()) == {2, 3, 4} and set(nz[:, 1].tolist()) == {3, 4, 5}


def test_matched_mid_channels_matches_parameter_count():
    # R(2+1)D: M = floor(27·Cin·Cout / (9·Cin + 3·Cout)); for 32 → 32: floor(27648/384) = 72,
    # and 9·32·72 + 3·72·32 = 27648 = 27·32·32 parameters, those of one 3×3×3 conv.
    assert matched_mid_channels(32, 32) == 72
    pair = Conv2Plus1d(32, 32, matched_mid_channels(32, 32))
    conv_weights = sum(m.weight.numel() for m in pair if isinstance(m, nn.Conv3d))
    assert conv_weights == 27 * 32 * 32
    model = build_model("unet", spatial_dims=3, features=(8, 8), conv="2+1d", mid_channels="matched")
    mids = [p[0].out_channels for p in model.modules() if isinstance(p, Conv2Plus1d)]
    # (cin, cout) of the six pairs: (1,8) (8,8) | (8,8) (8,8) | (16,8) (8,8) → M = 6 18 18 18 20 18
    assert mids == [6, 18, 18, 18, 20, 18]


def test_linear_upsample_commutes_with_pointwise_conv():
    # conv1x1(interp(x)) == interp(conv1x1(x)): interpolation weights sum to 1.
    torch.manual_seed(1)
    up = LinearUpsample(3, 4, 2)
    x = torch.randn(1, 4, 3, 5, 2)
    ours = up(x)
    reference = up.conv(nn.functional.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))
    assert torch.allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("conv", ["3d", "2+1d"])
@pytest.mark.parametrize("upsample", ["transpose", "linear"])
def test_channels_last_3d_kept_and_same_values(conv, upsample):
    torch.manual_seed(2)
    model = build_model("unet", spatial_dims=3, in_channels=2, features=TINY, conv=conv,
                        upsample=upsample).eval()
    # multiple of 4: no padding or crop. N=2 and C=2: PyTorch's CPU convolution picks the
    # contiguous format for a batch of one, whatever the input's format.
    x = torch.randn(2, 2, 8, 12, 4)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last_3d)
        formats = []
        for m in model.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d)):
                m.register_forward_hook(lambda _m, _i, o: formats.append(
                    o.is_contiguous(memory_format=torch.channels_last_3d)))
        out = model(x.to(memory_format=torch.channels_last_3d))
    assert all(formats) and len(formats) > 10
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(out, reference, atol=1e-5)


def test_pad_and_crop_helpers():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 4, 4) and size == (2, 3)
    assert padded[0, 0, 3, 3] == x[0, 0, 1, 2]  # replicate: the corner value
    zeros, _ = pad_to_multiple(x, 4, "zeros")
    assert zeros[0, 0, 3, 3] == 0
    assert torch.equal(crop_to(padded, size), x)
    same, _ = pad_to_multiple(x, 1)
    assert same is x


@pytest.mark.parametrize("upsample", ["transpose", "linear"])
def test_unetpp_2d_odd_size_returns_tensor(upsample):
    torch.manual_seed(0)
    model = build_model("unetpp", spatial_dims=2, in_channels=3, out_channels=1,
                        features=(2, 4, 4, 8, 8), upsample=upsample)
    y = _forward_backward(model, torch.randn(2, 3, 37, 41))
    assert isinstance(y, torch.Tensor)


def test_unetpp_3d_small_and_parameter_mapping():
    from monai.networks.nets import BasicUNetPlusPlus

    model = build_model("unetpp", spatial_dims=3, in_channels=2, features=(2, 4, 4, 8, 8))
    _forward_backward(model, torch.randn(2, 2, 9, 10, 7))
    # our 5 widths → MONAI's 6 as (f0, f1, f2, f3, f4, f0), BN + ReLU, bias-free convs;
    # MONAI's three unused side heads (1×1 conv f0 → out: 2·1 + 1 = 3 parameters each) dropped
    monai_net = BasicUNetPlusPlus(spatial_dims=3, in_channels=2, out_channels=1, features=(2, 4, 4, 8, 8, 2),
                                  norm="batch", act="relu", bias=False)
    assert count_parameters(model) == count_parameters(monai_net) - 3 * 3
    assert not any(isinstance(m, (nn.InstanceNorm3d, nn.LeakyReLU)) for m in model.modules())


def test_numpy_integers_accepted():
    import numpy as np

    model = build_model("unet", spatial_dims=2, in_channels=np.int64(2), features=[np.int64(2), 4])
    assert model.features == (2, 4) and count_parameters(model) == 447 + 18  # +1 input channel: 2·9


def test_registry_and_errors():
    assert set(MODELS) == {"unet", "unetpp"} and MODELS["unet"] is UNet and MODELS["unetpp"] is UNetPlusPlus
    with pytest.raises(ValueError, match=r"Unknown model 'unett'\. Did you mean \"unet\"\?.*Options: unet, unetpp"):
        build_model("unett")
    with pytest.raises(TypeError, match=r"Unknown parameter 'feature' for model 'unet'\. Did you mean \"features\""):
        build_model("unet", feature=(4, 8))
    with pytest.raises(TypeError, match="Unknown parameter 'conv' for model 'unetpp'"):
        build_model("unetpp", conv="2+1d")
    with pytest.raises(ValueError, match=r"conv='2\+1d' needs spatial_dims=3"):
        build_model("unet", spatial_dims=2, conv="2+1d")
    with pytest.raises(ValueError, match="conv must be one of '3d', '2\\+1d'; got '2d'"):
        build_model("unet", conv="2d")
    with pytest.raises(ValueError, match="upsample must be one of 'transpose', 'linear'; got 'nearest'"):
        build_model("unet", upsample="nearest")
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3; got 1"):
        build_model("unet", spatial_dims=1)
    with pytest.raises(ValueError, match="features must be at least 2 positive integers"):
        build_model("unet", features=(8,))
    with pytest.raises(ValueError, match="exactly 5 levels"):
        build_model("unetpp", features=(64, 128, 256, 512))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, C, S, S\)"):
        build_model("unet", spatial_dims=2, features=TINY)(torch.zeros(1, 1, 4, 4, 4))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
def test_folded_two_plus_one_computes_the_reference_block(layout):
    """The U-Net's (2+1)D pairs run as 2D convolutions on (N, C, Z, X, Y) views; the result must equal
    the plain Conv3d(3,3,1) → BN → ReLU → Conv3d(1,1,3) on (N, C, X, Y, Z), forward and backward."""
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=2, features=(4, 8, 16), conv="2+1d",
                        upsample="linear").eval()
    x = torch.randn(2, 2, 12, 8, 6)
    if layout == "channels_last_3d":
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    out = model(x)
    out.square().sum().backward()
    grad_fast, wgrad_fast = x.grad.clone(), model.encoder[0][0][0].weight.grad.clone()
    x.grad = None
    model.zero_grad()
    for m in model.modules():
        if isinstance(m, Conv2Plus1d):
            m.z_first = False
    model.z_first = False
    ref = model(x)
    ref.square().sum().backward()
    assert out.shape == ref.shape == (2, 1, 12, 8, 6)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_fast, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(wgrad_fast, model.encoder[0][0][0].weight.grad, rtol=1e-4, atol=1e-5)


def test_pointwise_equals_the_1x1x1_convolution():
    conv = nn.Conv3d(6, 3, kernel_size=1)
    x = torch.randn(2, 6, 5, 4, 3).contiguous(memory_format=torch.channels_last_3d)
    from seglib.nn.blocks import pointwise

    y = pointwise(conv, x)
    torch.testing.assert_close(y, conv(x), rtol=1e-5, atol=1e-6)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


# --------------------------------------------------------------------------- (2+1)D recomputation
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_recomputed_pair_equals_the_stored_one(channels_last, precision):
    """A (2+1)D pair that recomputes its inner maps in backward gives the outputs, input and weight
    gradients and running statistics of the plain pair (bf16: the same bits; fp32: the recomputed
    activation may differ in its last bit, so the through-plane weight gradient to ~1e-6)."""
    import copy

    from seglib.nn.blocks import Conv2Plus1d

    torch.manual_seed(0)
    plain = Conv2Plus1d(3, 5, z_first=True)
    plain.recompute = "off"
    again = copy.deepcopy(plain)
    again.recompute = "on"
    x = torch.randn(2, 3, 6, 7, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        plain.to(memory_format=torch.channels_last_3d), again.to(memory_format=torch.channels_last_3d)
    outs, grads = [], []
    for block in (plain, again):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for _ in range(2):  # two steps: the running statistics are updated once per step
                out = block(xi)
        g = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (out.float() * g).sum().backward()
        outs.append(out.detach().float())
        grads.append([xi.grad, *(p.grad for p in block.parameters())])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    for a, b in zip(grads[0], grads[1]):
        tol = 1e-5 if precision == "fp32" else 0
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)
    for a, b in zip(plain.buffers(), again.buffers()):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert int(again[1].num_batches_tracked) == 2


def test_recompute_auto_is_off_on_the_cpu_and_eval_mode_uses_running_statistics():
    from seglib.nn.blocks import Conv2Plus1d, _PairFunction

    m = build_model("unet", spatial_dims=3, in_channels=1, out_channels=1, features=(2, 4), conv="2+1d")
    assert {b.recompute for b in m.modules() if isinstance(b, Conv2Plus1d)} == {"auto"}
    calls = []
    real = _PairFunction.apply
    _PairFunction.apply = lambda *a: calls.append(1) or real(*a)
    try:
        m(torch.randn(1, 1, 4, 4, 4)).sum().backward()
        assert not calls  # auto on a CPU: the plain pair
        m2 = build_model("unet", spatial_dims=3, in_channels=1, out_channels=1, features=(2, 4), conv="2+1d",
                         recompute="on")
        m2(torch.randn(1, 1, 4, 4, 4)).sum().backward()
        assert calls
        m2.eval()
        n = len(calls)
        with torch.no_grad():
            m2(torch.randn(1, 1, 4, 4, 4))
        assert len(calls) == n
    finally:
        _PairFunction.apply = real
    with pytest.raises(ValueError, match="recompute"):
        build_model("unet", spatial_dims=3, features=(2, 4), conv="2+1d", recompute="sometimes")
