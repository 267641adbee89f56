"""Building blocks of the U-Net in :mod:`seglib.nn.unet`.

Everything here is a plain ``torch.nn`` module; none applies an activation to the
network output. Shapes follow PyTorch: ``(N, C, *spatial)``; in 3D the spatial axes
are NIfTI voxel order ``(X, Y, Z)`` and the **last** axis (Z) is the through-plane
axis that a (2+1)D convolution treats separately.

Memory format: every block is made of ``Conv{2,3}d``, ``BatchNorm``, ``ReLU``,
``MaxPool``, ``ConvTranspose`` and ``F.interpolate`` (all of which have
channels-last kernels in PyTorch) and ``torch.cat`` along channels. No block calls
``.contiguous()`` or ``permute``, and the views of :class:`Conv2Plus1d` and :func:`pointwise`
need no copy in channels-last, so a model moved to
``torch.channels_last_3d`` (``channels_last`` in 2D) keeps that format end to end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CONV_MODES = ("3d", "2+1d")
RECOMPUTE_MODES = ("auto", "on", "off")
UPSAMPLE_MODES = ("transpose", "linear")
MID_CHANNEL_MODES = ("out", "matched")
PAD_MODES = ("replicate", "zeros")


def _conv_cls(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def _norm_cls(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]


def matched_mid_channels(in_channels: int, out_channels: int) -> int:
    """Mid width that gives a (2+1)D pair the parameter count of one 3×3×3 conv.

    Tran et al. 2018 ("A closer look at spatiotemporal convolutions", R(2+1)D), eq. 1
    with a 3×3 spatial and 3-tap temporal kernel:
    ``M = floor(27·Cin·Cout / (9·Cin + 3·Cout))``.
    """
    return max(1, math.floor(27 * in_channels * out_channels / (9 * in_channels + 3 * out_channels)))


class Conv2Plus1d(nn.Sequential):
    """(2+1)D replacement of one 3×3×3 convolution (study A's report; Tran et al. 2018).

    ``Conv3d(k=(3,3,1))`` (in-plane, over X and Y) → ``BatchNorm3d`` → ``ReLU`` →
    ``Conv3d(k=(1,1,3))`` (through-plane, over the last axis Z). Both convolutions are
    bias-free because a BatchNorm follows each of them (the second one's BatchNorm
    is the enclosing level's). This is the definition in the seed *report*; the
    seed's code built a different block, which we do not reproduce.

    ``mid_channels`` is the width between the two convolutions: ``out_channels`` by
    default (the cheap choice, fewer FLOPs and activations than the R(2+1)D
    parameter-matched width; see :func:`matched_mid_channels`).

    ``z_first=True`` (set by :class:`seglib.nn.unet.UNet`, which moves Z to the front once at
    its input): the input is ``(N, C, Z, X, Y)`` and both convolutions run as 2D
    convolutions on views of a ``channels_last_3d`` tensor, without copies: the in-plane one
    on ``(N·Z, C, X, Y)`` and the through-plane one, kernel 3×1, on ``(N, C, Z, X·Y)``. The
    weights are the same ``Conv3d`` parameters, so the two forms compute the same function
    and share checkpoints; oneDNN's 2D kernels are much faster on a CPU than its 3D ones
    with a unit kernel axis (see ``benchmarks/conv2p1d.py``).
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None,
                 z_first: bool = False):
        mid = out_channels if mid_channels is None else int(mid_channels)
        super().__init__(
            nn.Conv3d(in_channels, mid, kernel_size=(3, 3, 1), padding=(1, 1, 0), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_channels, kernel_size=(1, 1, 3), padding=(0, 0, 1), bias=False),
        )
        self.z_first = z_first

    #: ``"on"``: in training with gradients, keep only the pair's input for the backward pass and
    #: recompute its inner maps there (the in-plane output, its BatchNorm + ReLU; see
    #: :class:`_PairFunction`): 23 % less peak memory for the (2+1)D U-Net at 64³ (bf16, 586 → 453 MiB)
    #: for a second in-plane convolution (CPU time per step 0.76 → 1.02 s, measured on a 2-core EPYC
    #: with native bf16). ``"off"``: store them (faster). ``"auto"``: on on CUDA, where memory bounds
    #: the input size, off elsewhere. Set per model by :class:`seglib.nn.unet.UNet`.
    recompute: str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.z_first:
            return super().forward(x)
        inplane, norm, act, through = self
        n, c, z, h, w = x.shape
        w_in = inplane.weight.squeeze(-1)
        w_through = through.weight.reshape(through.weight.shape[0], -1, 3, 1)
        recompute = self.recompute == "on" or (self.recompute == "auto" and x.is_cuda)
        if recompute and norm.training and torch.is_grad_enabled() and norm.track_running_stats:
            if norm.num_batches_tracked is not None:
                norm.num_batches_tracked.add_(1)
            momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
            out = _PairFunction.apply(x, w_in, norm.weight, norm.bias, norm.running_mean, norm.running_var,
                                      momentum, norm.eps, w_through)
        else:
            y = _inplane(x, w_in)
            mid = y.shape[1]
            out = F.conv2d(act(norm(y)).reshape(n, mid, z, h * w), w_through, padding=(1, 0))
        return out.reshape(n, -1, z, h, w)


def _inplane(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The in-plane 3×3 convolution of a Z-first ``(N, C, Z, X, Y)`` tensor as a 2D convolution on
    ``(N·Z, C, X, Y)``; returns ``(N, mid, Z, X, Y)`` (views, no copy in ``channels_last_3d``)."""
    n, c, z, h, w = x.shape
    y = F.conv2d(x.transpose(1, 2).reshape(n * z, c, h, w), weight, padding=1)
    return y.reshape(n, z, -1, h, w).transpose(1, 2)


class _PairFunction(torch.autograd.Function):
    """A (2+1)D pair in training mode, ``through(relu(batch_norm(inplane(x))))``, that stores only its
    input ``x`` (which the layer before keeps anyway) and the batch statistics for the backward pass.

    The backward recomputes the in-plane output with the same kernel (same bits) and the activation as
    the batch-norm kernel computes it (fp32, rounded once), then applies the chain rule with PyTorch's
    own kernels: ``conv2d_input``/``conv2d_weight`` for both convolutions and
    ``aten.native_batch_norm_backward`` with the saved mean and inverse standard deviation. The running
    statistics are updated once, in the forward (``aten.native_batch_norm``, the kernel of
    ``F.batch_norm``). Under autocast the backward runs under the forward's autocast state. Written by
    hand: ``torch.utils.checkpoint`` would run the BatchNorm twice and update its statistics twice.
    """

    @staticmethod
    def forward(ctx, x, w_in, gamma, beta, running_mean, running_var, momentum, eps, w_through):
        dev = x.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        y = _inplane(x, w_in)
        a, mean, rstd = torch.ops.aten.native_batch_norm(y, gamma, beta, running_mean, running_var, True,
                                                         momentum, eps)
        n, c, z, h, w = a.shape
        out = F.conv2d(a.relu_().reshape(n, c, z, h * w), w_through, padding=(1, 0))
        ctx.save_for_backward(x, w_in, gamma, beta, mean, rstd, w_through)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w_in, gamma, beta, mean, rstd, w_through = ctx.saved_tensors
        dev, enabled, dtype = ctx.autocast
        with torch.autocast(device_type=dev, dtype=dtype, enabled=enabled):
            y = _inplane(x, w_in)  # autocast casts as in the forward
        n, c, z, h, w = y.shape
        shape = (1, c, 1, 1, 1)
        scale = rstd * (gamma if gamma is not None else 1.0)
        shift = (beta if beta is not None else 0.0) - mean * scale
        a = torch.relu(y.float() * scale.reshape(shape) + shift.reshape(shape)).to(y.dtype)
        a4 = a.reshape(n, c, z, h * w)
        wt = w_through.to(grad_out.dtype)
        grad_wt = torch.nn.grad.conv2d_weight(a4.to(grad_out.dtype), wt.shape, grad_out, padding=(1, 0))
        grad_a = torch.nn.grad.conv2d_input(a4.shape, wt, grad_out, padding=(1, 0)).reshape(a.shape)
        grad_a = grad_a.mul_(a > 0).to(y.dtype)  # through the ReLU; then the activation is not needed
        del a, a4
        grad_y, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            grad_a, y, gamma, None, None, mean, rstd, True, ctx.eps, [True, gamma is not None, beta is not None])
        del y, grad_a
        # the in-plane convolution's gradients, on the Z-first 2D views of the forward
        nx, cx, zx, hx, wx = x.shape
        x4 = x.transpose(1, 2).reshape(nx * zx, cx, hx, wx)
        g4 = grad_y.transpose(1, 2).reshape(nx * zx, c, hx, wx)
        wi = w_in.to(g4.dtype)
        grad_x = torch.nn.grad.conv2d_input(x4.shape, wi, g4, padding=1)
        grad_wi = torch.nn.grad.conv2d_weight(x4.to(g4.dtype), wi.shape, g4, padding=1)
        grad_x = grad_x.reshape(nx, zx, cx, hx, wx).transpose(1, 2).to(x.dtype)
        return (grad_x, grad_wi.to(w_in.dtype), None if gamma is None else grad_gamma.to(gamma.dtype),
                None if beta is None else grad_beta.to(beta.dtype), None, None, None, None,
                grad_wt.to(w_through.dtype))


def pointwise(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1×1(×1) convolution as a matrix product over the channels.

    Same result as ``conv(x)``; in 3D it avoids PyTorch's slow reference kernel for 1×1×1
    kernels and keeps ``channels_last_3d`` without copies.
    """
    if x.ndim != 5:
        return conv(x)
    return F.linear(x.movedim(1, -1), conv.weight.flatten(1), conv.bias).movedim(-1, 1)


def make_conv(spatial_dims: int, in_channels: int, out_channels: int, conv: str = "3d",
              mid_channels: str = "out") -> nn.Module:
    """One bias-free "3×3" convolution: full kernel (``conv="3d"``) or (2+1)D."""
    if conv == "3d":
        return _conv_cls(spatial_dims)(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    mid = out_channels if mid_channels == "out" else matched_mid_channels(in_channels, out_channels)
    return Conv2Plus1d(in_channels, out_channels, mid)


class DoubleConv(nn.Sequential):
    """One U-Net level: ``[conv 3×3(×3), no bias → BatchNorm → ReLU] × 2`` (Ronneberger 2015)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, conv: str = "3d",
                 mid_channels: str = "out"):
        norm = _norm_cls(spatial_dims)
        super().__init__(
            make_conv(spatial_dims, in_channels, out_channels, conv, mid_channels),
            norm(out_channels),
            nn.ReLU(inplace=True),
            make_conv(spatial_dims, out_channels, out_channels, conv, mid_channels),
            norm(out_channels),
            nn.ReLU(inplace=True),
        )


class LinearUpsample(nn.Module):
    """Bilinear/trilinear ×2 up-sampling with a 1×1(×1) convolution changing the width.

    The 1×1 convolution is applied *before* interpolating. Linear interpolation is a
    convex combination of neighbouring voxels (weights sum to 1) and a 1×1 convolution
    is an affine map of each voxel's channel vector, so the two commute exactly:
    ``conv(up(x)) == up(conv(x))``; convolving first costs 2^d times fewer operations
    and memory. ``align_corners=False`` (PyTorch's default).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.mode = {2: "bilinear", 3: "trilinear"}[spatial_dims]
        self.conv = _conv_cls(spatial_dims)(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(pointwise(self.conv, x), scale_factor=2, mode=self.mode, align_corners=False)


def make_upsample(spatial_dims: int, in_channels: int, out_channels: int, upsample: str) -> nn.Module:
    """×2 up-sampling halving the width: transposed conv (k=2, s=2) or linear + 1×1 conv."""
    if upsample == "transpose":
        cls = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]
        return cls(in_channels, out_channels, kernel_size=2, stride=2)
    return LinearUpsample(spatial_dims, in_channels, out_channels)


class UpBlock(nn.Module):
    """Decoder level: up-sample the deeper map, concatenate the skip, :class:`DoubleConv`."""

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, out_channels: int,
                 upsample: str, conv: str = "3d", mid_channels: str = "out"):
        super().__init__()
        self.up = make_upsample(spatial_dims, in_channels, skip_channels, upsample)
        self.conv = DoubleConv(spatial_dims, 2 * skip_channels, out_channels, conv, mid_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "replicate"
                    ) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` at their far end up to a multiple of ``multiple``.

    Returns the padded tensor and the original spatial size (for :func:`crop_to`).
    ``mode`` is ``"replicate"`` (edge values) or ``"zeros"``. No copy is made when no
    axis needs padding.
    """
    size = tuple(int(s) for s in x.shape[2:])
    extra = [(-s) % multiple for s in size]
    if not any(extra):
        return x, size
    pads: list[int] = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pads += [0, e]
    if mode == "replicate":
        return F.pad(x, pads, mode="replicate"), size
    return F.pad(x, pads, mode="constant", value=0.0), size


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` back to ``size`` (a view, no copy)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return x[(slice(None), slice(None), *(slice(0, s) for s in size))]
