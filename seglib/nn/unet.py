"""Segmentation networks: a U-Net (2D, 3D, (2+1)D) and MONAI's U-Net++, behind a registry.

Every model maps ``(N, in_channels, *spatial)`` to **logits** ``(N, out_channels,
*spatial)`` of the same spatial size; no activation is applied inside (losses and
metrics apply sigmoid/threshold themselves). Any spatial size ≥ 1 is accepted: the
input is padded at the far end of each axis to a multiple of ``2**(levels-1)``
(``pad_mode`` ``"replicate"`` or ``"zeros"``) and the output cropped back.

>>> model = build_model("unet", spatial_dims=2, in_channels=1, out_channels=1, features=(4, 8))
>>> model(torch.zeros(1, 1, 5, 7)).shape
torch.Size([1, 1, 5, 7])
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from seglib.nn.blocks import (
    CONV_MODES,
    RECOMPUTE_MODES,
    MID_CHANNEL_MODES,
    PAD_MODES,
    UPSAMPLE_MODES,
    Conv2Plus1d,
    DoubleConv,
    UpBlock,
    crop_to,
    pad_to_multiple,
    pointwise,
)
from seglib.registry import build

__all__ = ["MODELS", "UNet", "UNetPlusPlus", "build_model", "count_parameters"]

DEFAULT_FEATURES = (32, 64, 128, 256, 512)


def _check_choice(value: object, options: Sequence[str], what: str) -> None:
    if value not in options:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, options))}; got {value!r}.")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_common(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
                  upsample: str, pad_mode: str, min_levels: int = 2) -> tuple[int, ...]:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims!r}.")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not _is_positive_int(value):
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    feats = tuple(features)
    if len(feats) < min_levels or not all(_is_positive_int(f) for f in feats):
        raise ValueError(f"features must be at least {min_levels} positive integers (one width per "
                         f"level); got {features!r}.")
    _check_choice(upsample, UPSAMPLE_MODES, "upsample")
    _check_choice(pad_mode, PAD_MODES, "pad_mode")
    return tuple(int(f) for f in feats)


class UNet(nn.Module):
    """Classic U-Net (Ronneberger et al. 2015; 3D: Çiçek et al. 2016), 2D or 3D.

    Encoder level ``i`` (width ``features[i]``): max-pool ×2 (not on level 0), then
    ``[conv 3×3(×3), no bias → BatchNorm → ReLU] × 2``. Decoder: ×2 up-sampling to the
    skip's width (``upsample="transpose"``: ``ConvTranspose`` k=2 s=2;
    ``"linear"``: bilinear/trilinear + 1×1 conv), concatenation with the skip, the same
    double conv, and a final 1×1 conv to ``out_channels`` logits.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channels of the input and of the logits.
        features: widths per level, shallow to deep (study A and C: 32-64-128-256-512,
            five levels; study B: 64-128-256-512, four levels).
        upsample: ``"transpose"`` or ``"linear"``.
        conv: ``"3d"``: full kernels (3×3 in 2D, 3×3×3 in 3D); ``"2+1d"`` (3D only):
            each 3×3×3 conv becomes a 3×3×1 in-plane conv → BatchNorm → ReLU → 1×1×3
            through-plane conv over the **last** spatial axis (Z of ``(N, C, X, Y, Z)``),
            see :class:`seglib.nn.blocks.Conv2Plus1d`.
        mid_channels: width inside a (2+1)D pair: ``"out"`` (its output width) or
            ``"matched"`` (R(2+1)D parameter matching, Tran et al. 2018).
        recompute: (2+1)D only: ``"on"`` recomputes each pair's inner maps in the backward pass
            instead of storing them (less memory, more time), ``"off"`` stores them, ``"auto"``
            (default) recomputes on CUDA only; see :attr:`seglib.nn.blocks.Conv2Plus1d.recompute`.
        pad_mode: how inputs whose size is not a multiple of ``2**(levels-1)`` are
            padded before the network (``"replicate"`` or ``"zeros"``); the logits are
            cropped back to the input size.

    For speed on a GPU, move the model and its inputs to ``torch.channels_last_3d``
    (3D) or ``torch.channels_last`` (2D); the blocks keep that format throughout.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = DEFAULT_FEATURES, upsample: str = "transpose",
                 conv: str = "3d", mid_channels: str = "out", pad_mode: str = "replicate",
                 recompute: str = "auto"):
        super().__init__()
        feats = _check_common(spatial_dims, in_channels, out_channels, features, upsample, pad_mode)
        _check_choice(conv, CONV_MODES, "conv")
        _check_choice(recompute, RECOMPUTE_MODES, "recompute")
        _check_choice(mid_channels, MID_CHANNEL_MODES, "mid_channels")
        if conv == "2+1d" and spatial_dims != 3:
            raise ValueError(f"conv='2+1d' needs spatial_dims=3; got spatial_dims={spatial_dims}.")
        self.spatial_dims, self.features, self.pad_mode = spatial_dims, feats, pad_mode
        self.multiple = 2 ** (len(feats) - 1)
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]
        self.pool = pool(kernel_size=2, stride=2)
        widths_in = (in_channels, *feats[:-1])
        self.encoder = nn.ModuleList(
            DoubleConv(spatial_dims, cin, cout, conv, mid_channels) for cin, cout in zip(widths_in, feats)
        )
        self.decoder = nn.ModuleList(
            UpBlock(spatial_dims, feats[i + 1], feats[i], feats[i], upsample, conv, mid_channels)
            for i in reversed(range(len(feats) - 1))
        )
        conv1 = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.head = conv1(feats[0], out_channels, kernel_size=1)
        self.z_first = conv == "2+1d"  # (2+1)D runs on (N, C, Z, X, Y): see Conv2Plus1d
        for m in self.modules():
            if isinstance(m, Conv2Plus1d):
                m.z_first, m.recompute = self.z_first, recompute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"UNet with spatial_dims={self.spatial_dims} expects input of shape "
                             f"(N, C, {', '.join('S' * self.spatial_dims)}); got {tuple(x.shape)}.")
        fmt = (torch.channels_last_3d if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)
               else torch.contiguous_format)
        x, size = pad_to_multiple(x, self.multiple, self.pad_mode)
        if self.z_first:
            x = x.movedim(-1, 2).contiguous(memory_format=torch.channels_last_3d)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        for block in self.decoder:
            x = block(x, skips.pop())
        out = pointwise(self.head, x)
        if self.z_first:  # back to (N, C, X, Y, Z), in the input's memory format
            out = out.movedim(2, -1).contiguous(memory_format=fmt)
        return crop_to(out, size)


class UNetPlusPlus(nn.Module):
    """U-Net++ (Zhou et al. 2018, "UNet++: A Nested U-Net Architecture") via MONAI.

    Wraps :class:`monai.networks.nets.BasicUNetPlusPlus` with ``deep_supervision=False``
    and returns its single output as one tensor (MONAI returns a one-element list).
    MONAI's network has a fixed five-level encoder and takes six widths
    ``(x0, x1, x2, x3, x4, up)``: our five ``features`` are the five encoder widths and
    the sixth (the width of the last up-sampling node ``x_{0,4}``) is ``features[0]``,
    so the top nested row is ``features[0]`` wide throughout, as in Zhou et al.
    Blocks are set to match :class:`UNet`: bias-free conv → BatchNorm → ReLU (MONAI's
    defaults would be instance norm and LeakyReLU). ``upsample="transpose"`` maps to
    MONAI's ``"deconv"``; ``"linear"`` to ``"nontrainable"`` (bilinear/trilinear with
    MONAI's 1×1 pre-conv where the width halves). Inputs are padded to a multiple of
    16 so that MONAI's own odd-size padding never triggers; logits are cropped back.
    MONAI's three deep-supervision side heads, unused here, are replaced by identities,
    so :func:`count_parameters` counts only what produces the output.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = DEFAULT_FEATURES, upsample: str = "transpose",
                 pad_mode: str = "replicate"):
        super().__init__()
        feats = _check_common(spatial_dims, in_channels, out_channels, features, upsample, pad_mode)
        if len(feats) != 5:
            raise ValueError(f"unetpp (MONAI BasicUNetPlusPlus) has exactly 5 levels: features must "
                             f"be 5 widths; got {features!r}.")
        from monai.networks.nets import BasicUNetPlusPlus

        self.spatial_dims, self.features, self.pad_mode = spatial_dims, feats, pad_mode
        self.multiple = 16
        self.net = BasicUNetPlusPlus(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
            features=(*feats, feats[0]), deep_supervision=False, act=("relu", {"inplace": True}),
            norm="batch", bias=False, upsample={"transpose": "deconv", "linear": "nontrainable"}[upsample],
        )
        # Without deep supervision MONAI still builds and runs the side heads of nodes
        # x_{0,1..3} but discards their outputs: drop them (dead parameters, wasted FLOPs).
        for head in ("final_conv_0_1", "final_conv_0_2", "final_conv_0_3"):
            setattr(self.net, head, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"UNetPlusPlus with spatial_dims={self.spatial_dims} expects input of "
                             f"{self.spatial_dims + 2} dimensions (N, C, *spatial); got {tuple(x.shape)}.")
        x, size = pad_to_multiple(x, self.multiple, self.pad_mode)
        out = self.net(x)
        return crop_to(out[0] if isinstance(out, (list, tuple)) else out, size)


MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "unetpp": UNetPlusPlus}


def build_model(name: str, **params) -> nn.Module:
    """Build a registered model: ``build_model("unet", spatial_dims=3, conv="2+1d")``.

    Raises ``ValueError`` for an unknown ``name`` (listing :data:`MODELS`) or a bad value,
    and ``TypeError`` for an unknown parameter (listing the allowed ones).
    """
    return build(MODELS, name, params, "model")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once); BatchNorm running stats excluded."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
