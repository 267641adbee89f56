"""One configuration of study A's memory / time measurement (A2), importable without pandas or MONAI so
that a fresh measuring process stays light: :func:`measure_step` runs training steps of the 3D U-Net
and reports the peak memory and the time per step. Called by
:func:`seglib.studies.stroke.measure.memory_and_time`, in this process or in a new one."""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F


#: glibc: serve every allocation above 64 KiB by mmap and give it back on free, so the resident set
#: follows the live tensors (set in the environment of the fresh measuring process)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
CPU_PEAK_SOURCE = "peak resident set sampled every 0.5 ms, minus its size before the model"
FRESH_PEAK_SOURCE = ("peak resident set sampled every 0.5 ms in a fresh process (forked for the configuration, after "
                     "a warm-up step of a small model), minus its size before the model")


def preload() -> None:
    """Import every module a :func:`measure_step` needs, without running a torch operation (so no thread
    pool starts). The measuring interpreter calls it once before it forks: the first optimiser step imports
    ``torch._dynamo`` (and sympy with it, about 800 modules, 1.2-1.3 s), which every forked child paid
    again when only torch was loaded."""
    import psutil  # noqa: F401
    import torch._dynamo  # noqa: F401

    import seglib.nn.unet  # noqa: F401
    import seglib.train.device  # noqa: F401
    import seglib.train.steps  # noqa: F401


def rss_mb() -> float:
    """This process's current resident set size, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class PeakRSS:
    """Samples the resident set size in a background thread; ``peak`` is the largest value seen.

    ``ru_maxrss`` cannot be reset and is often set by the imports, which hid the training step's
    peak (0 MiB at small sizes); sampling the current size does not have that floor.
    """

    def __init__(self, interval_s: float = 0.0005):
        import threading

        self.interval_s, self.peak = interval_s, rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DiceBCE as :class:`seglib.nn.losses.DiceBCELoss` (soft Dice over the batch, smooth 1, + BCE),
    restated here so the measuring process does not import MONAI."""
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return dice + F.binary_cross_entropy_with_logits(logits, target)


def saved_for_backward_mb(model, x: torch.Tensor, y: torch.Tensor, device, precision: str) -> float:
    """MiB that one training forward pass keeps for the backward pass (every tensor autograd saves, each
    storage once: activations, the inputs of the convolutions, the weights' low-precision copies). Exact and
    independent of the allocator and of the machine's load: the activation memory the seed's hypothesis is
    about. The forward is run and dropped (no backward, no update; BatchNorm statistics restored)."""
    from seglib.train.device import autocast

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device, precision):
        loss = dice_bce(model(x).float(), y)
    del loss
    model.load_state_dict(state)
    return sum(seen.values()) / 2**20


def measure_step(conv: str, size: int, batch: int, features, steps: int, in_channels: int,
                 device: str, precision: str, recompute: str = "auto",
                 memory_format: str = "channels_last_3d") -> dict:
    """``steps`` timed training steps (forward, backward, SGD) after one warm-up step, in
    ``memory_format`` (``channels_last_3d`` or ``contiguous``); peak memory since just before the model
    was built, and the MiB kept for the backward pass (:func:`saved_for_backward_mb`, measured after the
    timed steps). ``recompute``: the (2+1)D pairs' mode (:attr:`seglib.nn.blocks.Conv2Plus1d.recompute`)."""
    from seglib.nn.unet import build_model, count_parameters
    from seglib.train.device import resolve_device, resolve_precision
    from seglib.train.steps import fixed_batch_step

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    cuda = dev.type == "cuda"
    with contextlib.ExitStack() as stack:
        base_rss = rss_mb()
        sampler = None if cuda else stack.enter_context(PeakRSS())
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            base_cuda = torch.cuda.memory_allocated(dev) / 2**20
        fmt = {"channels_last_3d": torch.channels_last_3d, "contiguous": torch.contiguous_format}[memory_format]
        kwargs = {"recompute": recompute} if conv == "2+1d" else {}
        model = build_model("unet", spatial_dims=3, in_channels=in_channels, out_channels=1,
                            features=tuple(features), upsample="linear",
                            conv=conv, **kwargs).to(dev).to(memory_format=fmt)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, in_channels, size, size, size, generator=gen).to(dev)
        x = x.contiguous(memory_format=fmt)
        y = (torch.rand(batch, 1, size, size, size, generator=gen) > 0.9).float().to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()
        step = fixed_batch_step(model, x, y, dice_bce, opt, dev, prec)
        step()  # warm-up (allocator, oneDNN / cuDNN kernel choice)
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(int(steps)):
            step()
        if cuda:
            torch.cuda.synchronize(dev)
        seconds = (time.perf_counter() - t0) / int(steps)
    if cuda:
        peak, source = torch.cuda.max_memory_allocated(dev) / 2**20 - base_cuda, "cuda max_memory_allocated"
    else:
        peak, source = sampler.peak - base_rss, CPU_PEAK_SOURCE
    saved = saved_for_backward_mb(model, x, y, dev, prec)
    return {"conv": conv, "size": int(size), "peak_mem_mb": float(peak),
            "time_per_step_s": seconds, "params": int(count_parameters(model)),
            "precision": prec, "memory_format": memory_format, "device": str(dev), "batch": int(batch),
            "features": "-".join(map(str, features)), "steps": int(steps), "peak_source": source,
            "saved_mb": float(saved), "recompute": recompute if conv == "2+1d" else "-"}
