"""Helpers of :mod:`seglib.train`: device, precision, memory format, memory, RNG state, loaders.

Written by hand: PyTorch has the pieces (``torch.autocast``, ``torch.amp.GradScaler``,
``torch.Generator``) but no policy that picks among them, so the policy lives here.

The CPU precision policy is one switch, :data:`CPU_AUTO_BF16`: when True, precision
``"auto"`` on a CPU uses bf16 autocast *only* where the CPU has native bf16 instructions
(``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``). The environment variable
``SEGLIB_CPU_BF16`` (``1``/``0``) overrides the detection, e.g. for a benchmark.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

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


# --------------------------------------------------------------------------- device
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


# --------------------------------------------------------------------------- precision
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


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for fp32)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def bare_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
              optimizer: torch.optim.Optimizer, device: torch.device, precision: str) -> torch.Tensor:
    """One bare training step: zero the gradients, forward under :func:`autocast`, the loss in fp32,
    backward, optimiser step; returns the detached loss. For measuring a step (table A2, the
    benchmarks) without the work ``fit`` adds around it."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def fixed_batch_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
                     optimizer: torch.optim.Optimizer, device: torch.device, precision: str) -> Callable[[], torch.Tensor]:
    """:func:`bare_step` on fixed tensors, as a closure to time."""
    return lambda: bare_step(model, x, y, loss_fn, optimizer, device, precision)


# --------------------------------------------------------------------------- memory format
def cnn_dims(model: nn.Module) -> int | None:
    """2 for a CNN with only 2D convolutions, 3 with only 3D ones, else None."""
    has2d = any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    has3d = any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in model.modules())
    return 2 if has2d and not has3d else 3 if has3d and not has2d else None


def is_2d_cnn(model: nn.Module) -> bool:
    """True when ``model`` has 2D convolutions and no 3D ones."""
    return cnn_dims(model) == 2


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


# --------------------------------------------------------------------------- memory
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


# --------------------------------------------------------------------------- RNG
def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Called only at the start of ``fit``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """All global RNG states in a form that loads with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(pystate), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of ``epoch``: a fixed function of the run seed and the epoch."""
    return (int(seed) * 1_000_003 + int(epoch)) % 2**63


def reseed_loader(loader: Any, seed: int, epoch: int) -> bool:
    """Reseed the ``torch.Generator`` of ``loader`` (and of its sampler) for ``epoch``.

    Returns False when the loader has no generator (then a shuffling loader draws from
    the global torch RNG, which ``fit`` seeds and checkpoints, so runs stay reproducible).
    """
    found = False
    s = epoch_seed(seed, epoch)
    dataset = getattr(loader, "dataset", None)
    if callable(getattr(dataset, "set_epoch", None)):  # samplers that draw patches/slices per epoch
        dataset.set_epoch(epoch)
    gens = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    seen: list[torch.Generator] = []
    for g in gens:
        if isinstance(g, torch.Generator) and all(g is not x for x in seen):
            g.manual_seed(s)
            seen.append(g)
            found = True
    return found


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of :func:`make_loader`: seed numpy and python from the worker's torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    *,
    weights: Sequence[float] | None = None,
    num_samples: int | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    collate_fn: Any = None,
) -> DataLoader:
    """A ``DataLoader`` whose randomness comes from its own ``torch.Generator``.

    Build every loader given to :func:`seglib.train.fit` with this function: ``fit``
    reseeds the generator at each epoch from the run seed (so ``seed`` here matters only
    when the loader is used outside ``fit``), which makes shuffling reproducible and
    lets a resumed run draw the same batches. ``weights`` draws ``num_samples`` items
    (default: as many as there are weights) with replacement and probability
    proportional to the weights, instead of shuffling. ``num_workers > 0`` seeds numpy
    and python in each worker (:func:`seed_worker`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    sampler = None
    if weights is not None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        n = len(dataset)  # type: ignore[arg-type]
        if w.ndim != 1 or len(w) != n:
            raise ValueError(f"weights must be one per dataset item ({n}), got shape {tuple(w.shape)}")
        sampler = WeightedRandomSampler(w, num_samples or len(w), replacement=True, generator=gen)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=bool(shuffle) if sampler is None else False,
        sampler=sampler,
        generator=gen,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        drop_last=drop_last,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
    )


# --------------------------------------------------------------------------- files
def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``."""
    atomic_write(path, lambda f: torch.save(obj, f))
