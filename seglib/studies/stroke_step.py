"""One configuration of study A's memory / time measurement (A2), importable without pandas or MONAI so
that a fresh measuring process stays light: :func:`measure_step` runs training steps of the 3D U-Net
and reports the peak memory and the time per step. Called by
:func:`seglib.studies.stroke_measure.memory_and_time`, in this process or in a new one."""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F


def maxrss_mb() -> float:
    """This process's peak resident set size so far (``ru_maxrss``), in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DiceBCE as :class:`seglib.losses.DiceBCELoss` (soft Dice over the batch, smooth 1, + BCE),
    restated here so the measuring process does not import MONAI."""
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return dice + F.binary_cross_entropy_with_logits(logits, target)


def measure_step(conv: str, size: int, batch: int, features, steps: int, in_channels: int,
                 device: str, precision: str) -> dict:
    """``steps`` timed training steps (forward, backward, SGD) after one warm-up step, in
    ``channels_last_3d``; peak memory since just before the model was built."""
    from seglib.models import build_model, count_parameters
    from seglib.train_utils import autocast, resolve_device, resolve_precision

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    base_rss = maxrss_mb()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev) / 2**20
    model = build_model("unet", spatial_dims=3, in_channels=in_channels, out_channels=1, features=tuple(features),
                        upsample="linear", conv=conv).to(dev).to(memory_format=torch.channels_last_3d)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, size, size, size, generator=gen).to(dev)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    y = (torch.rand(batch, 1, size, size, size, generator=gen) > 0.9).float().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(dev, prec):
            logits = model(x)
        dice_bce(logits.float(), y).backward()
        opt.step()

    step()  # warm-up (allocator, oneDNN / cuDNN kernel choice)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(int(steps)):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak, source = torch.cuda.max_memory_allocated(dev) / 2**20 - base_cuda, "cuda max_memory_allocated"
    else:
        peak, source = maxrss_mb() - base_rss, "ru_maxrss of a fresh process minus its value after imports"
    return {"conv": conv, "size": int(size), "peak_mem_mb": float(peak),
            "time_per_step_s": (time.perf_counter() - t0) / int(steps), "params": int(count_parameters(model)),
            "precision": prec, "memory_format": "channels_last_3d", "device": str(dev), "batch": int(batch),
            "features": "-".join(map(str, features)), "steps": int(steps), "peak_source": source}
