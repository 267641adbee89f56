"""Training state of :mod:`seglib.train`: early stopping, checkpoints, resumption, determinism.

Written by hand (PyTorch gives ``torch.save``/``load`` and the RNG getters, not the policy).
``last.pt`` holds everything needed to continue bit-for-bit: model, optimizer, scaler,
epoch, history, early-stopping state, the best weights and the RNG states; it is written
atomically and loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglib.registry import suggest
from seglib.train.settings import History, TrainSettings
from seglib.io import atomic_torch_save
from seglib.train.rng import get_rng_state, set_rng_state

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# settings that may change between a checkpoint and its resumption
_RESUMABLE_CHANGES = ("epochs", "device", "restore_best")


@dataclass
class TrainState:
    """What ``fit`` carries from epoch to epoch (and what ``last.pt`` restores)."""

    history: History
    epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    best_model: dict[str, torch.Tensor] | None = None


def improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def set_deterministic(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=warn_only)`` without importing ``torch._inductor``:
    the public function imports it (2-4 s the first time in a process, in every notebook kernel and training
    child) to set a flag that only compiled code reads. That flag is set too when inductor is loaded."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # another torch: the public function
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None:
        inductor_config.deterministic = mode
    setter(mode, warn_only=warn_only)


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[list[str]]:
    """Deterministic kernels for the duration of ``fit``; the previous global flags are restored afterwards.

    PyTorch has no deterministic kernel for a few CUDA operations: those warn (``warn_only``) instead
    of failing, and the context yields a list that collects their names once each, for the run's
    provenance. On the CPU every kernel seglib uses is deterministic (for a fixed thread count)."""
    cudnn = torch.backends.cudnn
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn.benchmark, cudnn.deterministic)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_deterministic(True, warn_only=True)
        cudnn.benchmark, cudnn.deterministic = False, True
    ops: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield ops
    finally:
        set_deterministic(prev[0], warn_only=prev[1])
        cudnn.benchmark, cudnn.deterministic = prev[2], prev[3]
        for w in caught:
            text = str(w.message)
            if "does not have a deterministic implementation" in text:
                op = text.split(" does not have", 1)[0].strip()
                if op not in ops:
                    ops.append(op)
            else:  # not ours: passed on as it came
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _settings_dict(settings: TrainSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def try_resume(path: Path, settings: TrainSettings, model: nn.Module, optimizer, scaler, device) -> TrainState | None:
    """Load ``last.pt`` into model/optimizer/scaler/RNG; on any problem warn, restore the
    model's initial weights and return None (train from scratch)."""
    if not path.exists():
        return None
    initial = cpu_state(model)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a seglib training checkpoint")
        old, new = ckpt["settings"], _settings_dict(settings)
        diff = sorted(k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k])
        if diff:
            raise ValueError(f"its settings differ in {', '.join(diff)}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        es = ckpt["early_stopping"]
        state = TrainState(history=History.from_dict(ckpt["history"]), epoch=int(ckpt["epoch"]),
                           bad_epochs=int(es["bad_epochs"]), stopped=bool(es["stopped"]), best_model=ckpt["best_model"])
        set_rng_state(ckpt["rng"])
    except Exception as exc:  # truncated zip, unpickling error, wrong keys/shapes, ...
        model.load_state_dict(initial)
        msg = f"Cannot resume from checkpoint {path} ({type(exc).__name__}: {exc}); training from scratch."
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return None
    logger.info("resumed from %s after epoch %d", path, state.epoch)
    return state


def save_checkpoints(ckpt_dir: Path, state: TrainState, settings: TrainSettings, model, optimizer, scaler,
                     is_best: bool) -> None:
    """Write ``best.pt`` (when this epoch is the best) then ``last.pt``, both atomically."""
    h = state.history
    if is_best and state.best_model is not None:
        atomic_torch_save({"model": state.best_model, "epoch": h.best_epoch, "monitor": h.monitor,
                           "value": h.best_value}, ckpt_dir / "best.pt")
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "settings": _settings_dict(settings),
        "epoch": state.epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "history": h.to_dict(),
        "early_stopping": {"bad_epochs": state.bad_epochs, "stopped": state.stopped},
        "best_model": state.best_model,
        "rng": get_rng_state(),
    }, ckpt_dir / "last.pt")


def update_early_stopping(state: TrainState, record: dict[str, Any], settings: TrainSettings, model: nn.Module,
                          epoch: int) -> None:
    """Track the best monitored value (and its weights, on the CPU) and the patience counter."""
    h = state.history
    if settings.monitor not in record:
        options = [k for k in record if k not in ("epoch", "lr") + History.TIMING_COLUMNS]
        raise ValueError(f"monitor {settings.monitor!r} is not measured.{suggest(settings.monitor, options)} "
                         f"Options: {', '.join(options)}.")
    value = float(record[settings.monitor])
    if improved(value, h.best_value, settings.mode, settings.min_delta):
        h.best_value, h.best_epoch, state.bad_epochs = value, epoch, 0
        state.best_model = cpu_state(model)
    else:
        state.bad_epochs += 1
    if settings.patience is not None and state.bad_epochs >= settings.patience:
        state.stopped = True
        h.stopped_early = epoch < settings.epochs
        if h.stopped_early:
            logger.info("early stopping after epoch %d: no improvement of %s for %d epochs", epoch,
                        settings.monitor, state.bad_epochs)
