"""Where and how a run computes: device (CUDA, MPS, CPU), precision (autocast), memory format
(channels-last), CPU threads and peak memory.

Written by hand: PyTorch has the pieces (``torch.autocast``, ``torch.amp.GradScaler``) but no policy that picks
among them. The CPU precision policy is one switch, :data:`CPU_AUTO_BF16`: when True, precision ``"auto"`` on
a CPU uses bf16 autocast *only* where the CPU has native bf16 instructions (``avx512_bf16`` or ``amx_bf16`` in
``/proc/cpuinfo``). The environment variable ``SEGLIB_CPU_BF16`` (``1``/``0``) overrides the detection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import torch
from torch import nn

from seglib.registry import suggest

logger = logging.getLogger(__name__)


#: The single switch of the CPU default: "auto" precision on CPU uses bf16 when the CPU
#: supports it natively. A benchmark decides its final value.
CPU_AUTO_BF16 = True


#: Environment override of the native-bf16 detection ("1": treat as supported, "0": not).
ENV_CPU_BF16 = "SEGLIB_CPU_BF16"


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Return the ``torch.device`` for ``name``: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.

    ``"auto"`` picks CUDA, then MPS, then CPU (and logs the choice). A named device that
    is not available raises ``ValueError``; only ``"auto"`` falls back to the CPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif _mps_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
        logger.info("device 'auto' resolved to %s", dev)
        return dev
    kind, _, index = key.partition(":")
    options = ("auto", "cpu", "cuda", "cuda:N", "mps")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"Unknown device {name!r}.{suggest(key, options)} Options: {', '.join(options)}.")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here; use 'cpu' or 'auto'.")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    if kind == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} requested but MPS is not available here; use 'cpu' or 'auto'.")
    return torch.device(key)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 arithmetic (``avx512_bf16`` / ``amx_bf16`` flags).

    The environment variable ``SEGLIB_CPU_BF16`` ("1"/"0") overrides the detection.
    Where ``cpuinfo`` cannot be read (macOS, Windows) the answer is False.
    """
    env = os.environ.get(ENV_CPU_BF16, "").strip()
    if env:
        return env.lower() not in ("0", "false", "no", "off")
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(f in flags for f in _BF16_FLAGS)
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Return the precision actually used: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``"auto"``: CUDA → bf16 where the GPU supports it, else fp16 (with a GradScaler);
    MPS → fp32; CPU → bf16 when :data:`CPU_AUTO_BF16` is on and the CPU has native
    bf16 (:func:`cpu_has_native_bf16`), else fp32. fp16 is CUDA-only (it needs loss
    scaling); an explicit bf16 is allowed on CPU (emulated where not native: slow).
    """
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if precision not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}.{suggest(precision, PRECISIONS)} Options: {', '.join(PRECISIONS)}."
        )
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and CPU_AUTO_BF16 and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device, got {device}; use 'bf16' or 'fp32'.")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' is not supported by {device}; use 'fp16' or 'fp32'.")
    return precision


def autocast(device: torch.device | str, precision: str):
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for fp32)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    device = torch.device(device) if not isinstance(device, torch.device) else device  # "cpu" as a run records it
    return torch.autocast(device_type=device.type, dtype=dtype)


def cnn_dims(model: nn.Module) -> int | None:
    """2 for a CNN with only 2D convolutions, 3 with only 3D ones, else None."""
    has2d = any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    has3d = any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in model.modules())
    return 2 if has2d and not has3d else 3 if has3d and not has2d else None


def channels_last_format(model: nn.Module) -> torch.memory_format:
    """``channels_last`` for a 2D CNN, ``channels_last_3d`` for a 3D one."""
    return torch.channels_last_3d if cnn_dims(model) == 3 else torch.channels_last


def resolve_channels_last(setting: str | bool, model: nn.Module, device: torch.device, precision: str) -> bool:
    """Whether to train in channels-last memory format (``channels_last`` in 2D, ``channels_last_3d`` in 3D).

    ``setting`` is ``"auto"`` / ``"on"`` / ``"off"`` or a bool. ``"auto"``: 2D CNNs on CUDA, and on CPU
    under bf16 (where oneDNN prefers NHWC); 3D CNNs on CPU and CUDA (measured on a 2-core EPYC,
    fp32: a training step of study A's U-Net 1.17x faster at 24³, 1.43x at 64³ and 1.28x at 128³ than
    in the default layout, while 2D U-Nets in fp32 were as fast or faster contiguous); off otherwise
    (MPS, models mixing or lacking convolutions). An explicit on for a model that is not a 2D or 3D
    CNN is ignored with a log line.
    """
    dims = cnn_dims(model)
    if setting in ("on", True):
        if dims is None:
            logger.info("channels_last requested but the model is not a 2D or 3D CNN: ignored")
            return False
        return True
    if setting in ("off", False):
        return False
    if setting != "auto":
        raise ValueError(f"channels_last must be 'auto', 'on', 'off', True or False, got {setting!r}")
    if dims == 3:
        return device.type in ("cpu", "cuda")
    if dims == 2:
        return device.type == "cuda" or (device.type == "cpu" and precision == "bf16")
    return False


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA ``max_memory_allocated`` since the last reset; on MPS the
    driver's current allocation; on CPU the process's peak resident set size over its
    whole life (``ru_maxrss``), so on CPU it is monotone across epochs."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with ``n`` intra-op CPU threads (``torch.set_num_threads``), then restore the
    previous number. On a CPU the result of a reduction depends on how it is split between threads,
    so a run that must give the same bits everywhere fixes ``n``. ``None`` leaves it as it is."""
    prev = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)
