"""The training engine: ``fit`` → ``train_one_epoch`` → ``evaluate``, plus ``predict_batches``.

Functions, not a trainer class (the skeleton of nnU-Net's ``run_training`` without its
bulk). What ``fit`` adds to a plain PyTorch loop, written by hand because neither
PyTorch nor MONAI has it in this form:

* device ``auto`` (CUDA, MPS, CPU), mixed precision (``torch.autocast``; a
  ``GradScaler`` for fp16), channels-last for 2D CNNs (see :mod:`seglib.train.device`);
* Adam or SGD (momentum, weight decay), gradient clipping by global norm;
* early stopping on a monitored value (``val_loss`` or ``val_<metric>``), the best
  weights kept in memory and written to ``best.pt``, the best epoch reported;
* ``last.pt`` written atomically after every epoch (model, optimizer, scaler, history,
  early-stopping state, RNG states) so that a killed run resumes and ends with exactly
  the weights and history of an uninterrupted one (timings apart);
* reproducibility: ``fit`` seeds python, numpy and torch from ``settings.seed`` (the one
  place in seglib that seeds globally) and reseeds each loader's generator per epoch;
  build loaders with :func:`make_loader`.

Batches are ``(image, target, ...)`` tuples or dicts with ``"image"`` and ``"label"``
(or ``"mask"``). Epochs are numbered from 1. Checkpoints load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from seglib.train.state import TrainState, determinism, save_checkpoints, try_resume, update_early_stopping
from seglib.eval.metrics import PooledDice, mean_reduce
from seglib.train.settings import OPTIMIZERS, History, TrainSettings, build_optimizer
from seglib.train.device import autocast, channels_last_format, peak_memory_mb, reset_peak_memory, resolve_channels_last, resolve_device, resolve_precision
from seglib.train.rng import make_loader, reseed_loader, seed_all

__all__ = [
    "TrainSettings", "History", "PooledDice", "fit", "train_one_epoch", "evaluate", "predict_batches",
    "make_loader", "resolve_device", "resolve_precision", "resolve_channels_last", "build_optimizer",
    "OPTIMIZERS",
]

logger = logging.getLogger(__name__)

PROGRESS_MININTERVAL = 5.0  # seconds between bar refreshes: readable in papermill --log-output


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, Mapping):
        target = batch.get("label", batch.get("mask"))
        return batch["image"], target
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() in (4, 5):
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    return x


def train_one_epoch(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    precision: str,
    *,
    channels_last: bool = False,
    grad_clip: float | None = None,
    bar: Any = None,
) -> float:
    """One pass over ``loader``; returns the mean training loss per sample.

    The forward pass runs under autocast; the loss is computed in fp32 on the logits.
    With ``grad_clip`` the global gradient norm is clipped (after unscaling under fp16).
    """
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for batch in loader:
        x, y = _unpack(batch)
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach().double() * x.shape[0]
        n += x.shape[0]
        if bar is not None:
            bar.update(1)
    if n == 0:
        raise ValueError("the training loader yielded no batch")
    return float(total.item() / n)


#: input elements (samples × voxels, channels not counted) forwarded at once by :func:`evaluate` and
#: :func:`predict_batches`: consecutive loader batches are concatenated up to this size, forwarded in one call and
#: split back, so the loss and metrics are still those of each loader batch. 48² slices go 56 at a time, 128² 8,
#: 16³ patches 32, 64³ one (a batch is never split). Measured on a 2-core CPU with native bf16, one thread: a
#: validation of study B's quick profile (144 slices) 183-246 ms in batches of 4, 109-147 ms in chunks of 32-64,
#: study C's (192 slices) 220-239 ms in batches of 8, 134-159 ms. The logits are the same bits in bf16 (2D) and fp32
#: (3D) there; oneDNN's fp32 2D kernels round a batch of 32 differently from one of 4.
FORWARD_CHUNK_ELEMENTS = 2**17


def _chunk_target(x: torch.Tensor) -> int:
    """Samples per forward call for inputs shaped like ``x`` ``(N, C, *spatial)``."""
    voxels = max(1, x[0, 0].numel()) if x.dim() > 2 and x.shape[0] else 1
    return max(1, FORWARD_CHUNK_ELEMENTS // voxels)


def _chunked_logits(model: nn.Module, loader: Any, device: torch.device, precision: str,
                    channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(fp32 logits, target)`` per batch of ``loader``, the forward pass run over consecutive batches
    concatenated up to :data:`FORWARD_CHUNK_ELEMENTS` (no grad; the caller sets the model's mode)."""
    pending: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def flush():
        x = pending[0][0] if len(pending) == 1 else torch.cat([b[0] for b in pending])
        with autocast(device, precision):
            logits = model(_to_device(x, device, channels_last))
        logits = logits.float()
        start = 0
        for xb, yb in pending:
            n = xb.shape[0]
            yield logits[start:start + n], yb
            start += n
        pending.clear()

    target, count = None, 0
    for batch in loader:
        x, y = _unpack(batch)
        if target is None:
            target = _chunk_target(x)
        if pending and count + x.shape[0] > target:
            yield from flush()
            count = 0
        pending.append((x, y))
        count += x.shape[0]
    if pending:
        yield from flush()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    loader: Any,
    device: torch.device,
    precision: str,
    *,
    metric_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Loss (mean per sample) and metrics over ``loader`` in eval mode: ``{"loss": …, <metric>: …}``.

    ``loss_fn`` and ``metric_fn(logits, target)`` are called per batch of ``loader`` (a loss reduced over
    the batch, as the batch Dice, depends on the batches), whatever the forward pass groups
    (:data:`FORWARD_CHUNK_ELEMENTS`); the metric's dicts are combined by its ``reduce(batches, sizes)``
    method when it has one (as :class:`PooledDice`), else averaged weighted by batch size. The model's
    train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    batches: list[dict[str, float]] = []
    sizes: list[int] = []
    try:
        for logits, y in _chunked_logits(model, loader, device, precision, channels_last):
            y = y.to(device, non_blocking=True)
            if loss_fn is not None:
                total += float(loss_fn(logits, y).item()) * logits.shape[0]
            if metric_fn is not None:
                batches.append(metric_fn(logits, y))
            sizes.append(logits.shape[0])
            n += logits.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("the validation loader yielded no batch")
    out = {"loss": total / n} if loss_fn is not None else {}
    if metric_fn is not None:
        reduce = getattr(metric_fn, "reduce", mean_reduce)
        out.update({k: float(v) for k, v in reduce(batches, sizes).items()})
    return out


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    loader: Any,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    *,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(logits, target)`` per batch of ``loader``: fp32 logits on the CPU, the
    batch's target (None when the batch has only images). Eval mode, the forward pass over
    :data:`FORWARD_CHUNK_ELEMENTS` at a time; the model is moved to ``device`` and its mode
    restored when the iteration ends."""
    device = resolve_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        for logits, y in _chunked_logits(model, loader, device, precision, channels_last):
            yield logits.cpu(), y
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- fit
#: seconds between two checkpoint writes of :func:`fit` (``last.pt``, and ``best.pt`` when the best epoch changed):
#: an epoch ends with one only when this long has passed since the previous write; the last epoch always has one.
#: A run stopped by a crash or a signal resumes from at most this far back (its results are the same bits either
#: way). At the quick profile's sizes an epoch takes 1-2 s and writing its checkpoints 20-40 ms, a tenth of a run's
#: time under load. ``SEGLIB_CHECKPOINT_EVERY_S`` overrides it; 0 writes after every epoch.
CHECKPOINT_EVERY_S = 30.0
ENV_CHECKPOINT_EVERY = "SEGLIB_CHECKPOINT_EVERY_S"


def checkpoint_interval() -> float:
    """:data:`CHECKPOINT_EVERY_S`, or ``$SEGLIB_CHECKPOINT_EVERY_S`` (seconds, at least 0)."""
    raw = os.environ.get(ENV_CHECKPOINT_EVERY, "").strip()
    if not raw:
        return CHECKPOINT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{ENV_CHECKPOINT_EVERY}={raw!r}: expected seconds between checkpoints, a number >= 0")
    return value


def fit(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_loader: Any,
    val_loader: Any,
    settings: TrainSettings,
    *,
    metric_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    position: int | None = None,
    leave: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every_s: float | None = None,
) -> History:
    """Train ``model`` with ``loss_fn(logits, target)`` and return its :class:`History`.

    ``val_loader`` may be None (then monitor ``train_loss``). ``metric_fn`` defaults to
    :class:`PooledDice`; its keys appear as ``val_<key>``. With ``checkpoint_dir``,
    ``last.pt`` is written after the last epoch and after any epoch that ends ``checkpoint_every_s``
    (default :func:`checkpoint_interval`) after the previous write, with ``best.pt`` when the best changed;
    ``resume=True`` continues from ``last.pt`` (a finished run returns at once; a corrupt
    or incompatible file is warned about and ignored). ``on_epoch_end(record)`` is
    called after each epoch (after its checkpoint, if it has one); it must not draw random numbers.
    ``position``/``leave`` are passed to the tqdm bar; one log line is written per epoch.
    """
    if val_loader is None and settings.monitor != "train_loss":
        raise ValueError(f"monitor {settings.monitor!r} needs a validation loader; without one use 'train_loss'")
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    use_cl = resolve_channels_last(settings.channels_last, model, device, precision)
    metric_fn = PooledDice() if metric_fn is None else metric_fn
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    with determinism(settings.deterministic, device) as nondeterministic_ops:
        seed_all(settings.seed)
        model.to(device)
        if use_cl:
            model.to(memory_format=channels_last_format(model))
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(device)
        optimizer = build_optimizer(model.parameters(), settings)
        scaler = torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=precision == "fp16")
        state = None
        if ckpt_dir is not None and resume:
            state = try_resume(ckpt_dir / "last.pt", settings, model, optimizer, scaler, device)
        if state is None:
            state = TrainState(history=History(monitor=settings.monitor, mode=settings.mode))
        h = state.history
        h.device, h.precision, h.channels_last = str(device), precision, use_cl
        if state.epoch >= settings.epochs or state.stopped:
            logger.info("checkpoint already holds the finished run (%d epochs)", state.epoch)
        run = _EpochContext(model, loss_fn, train_loader, val_loader, optimizer, scaler, device, precision, use_cl,
                            metric_fn, settings, progress, position, leave)
        every = checkpoint_interval() if checkpoint_every_s is None else float(checkpoint_every_s)
        saved_at, saved_best = time.monotonic(), h.best_epoch
        for epoch in range(state.epoch + 1, settings.epochs + 1):
            if state.stopped:
                break
            record = _run_epoch(run, epoch)
            h.records.append(record)
            update_early_stopping(state, record, settings, model, epoch)
            state.epoch = epoch
            last = epoch == settings.epochs or state.stopped
            if ckpt_dir is not None and (last or time.monotonic() - saved_at >= every):
                save_checkpoints(ckpt_dir, state, settings, model, optimizer, scaler,
                                 is_best=h.best_epoch != saved_best)
                saved_at, saved_best = time.monotonic(), h.best_epoch
            logger.info("epoch %d/%d %s", epoch, settings.epochs, _format_record(record))
            if on_epoch_end is not None:
                on_epoch_end(record)
        if settings.restore_best and state.best_model is not None:
            model.load_state_dict(state.best_model)
    h.deterministic = bool(settings.deterministic)
    h.nondeterministic_ops = list(nondeterministic_ops)
    if nondeterministic_ops:
        logger.warning("no deterministic kernel on %s for: %s (recorded in the provenance)", device,
                       ", ".join(nondeterministic_ops))
    logger.info("fit done: %d epochs, best %s=%s at epoch %s%s, %.1f s on %s/%s", h.n_epochs, h.monitor,
                h.best_value, h.best_epoch, " (stopped early)" if h.stopped_early else "", h.total_time_s,
                h.device, h.precision)
    return h


@dataclass(frozen=True)
class _EpochContext:
    """What every epoch of one ``fit`` uses: the model and its loss, loaders, optimiser, scaler, where and
    how it computes, the metric, the settings and how the progress bar shows."""

    model: nn.Module
    loss_fn: Callable
    train_loader: Any
    val_loader: Any
    optimizer: torch.optim.Optimizer
    scaler: Any
    device: torch.device
    precision: str
    channels_last: bool
    metric_fn: Callable
    settings: TrainSettings
    progress: bool
    position: int | None
    leave: bool


def _run_epoch(run: _EpochContext, epoch: int) -> dict[str, Any]:
    settings, device = run.settings, run.device
    reseed_loader(run.train_loader, settings.seed, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = settings.lr_at(epoch)
    reset_peak_memory(device)
    total = len(run.train_loader) if hasattr(run.train_loader, "__len__") else None
    bar = tqdm(total=total, desc=f"epoch {epoch}/{settings.epochs}", disable=not run.progress,
               position=run.position, leave=run.leave, mininterval=PROGRESS_MININTERVAL, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        train_loss = train_one_epoch(run.model, run.loss_fn, run.train_loader, run.optimizer, run.scaler, device,
                                     run.precision, channels_last=run.channels_last, grad_clip=settings.grad_clip,
                                     bar=bar)
        _sync(device)
        t1 = time.perf_counter()
        val = {}
        if run.val_loader is not None:
            val = evaluate(run.model, run.loss_fn, run.val_loader, device, run.precision, metric_fn=run.metric_fn,
                           channels_last=run.channels_last)
        _sync(device)
        t2 = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        record.update({f"val_{k}": v for k, v in val.items()})
        record.update({"lr": float(run.optimizer.param_groups[0]["lr"]), "train_time_s": t1 - t0,
                       "epoch_time_s": t2 - t0, "peak_mem_mb": float(peak_memory_mb(device))})
        bar.set_postfix_str(_format_record(record, short=True), refresh=False)
    finally:
        bar.close()
    return record


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)



def _format_record(record: Mapping[str, Any], short: bool = False) -> str:
    skip = {"epoch"} | (set(History.TIMING_COLUMNS) | {"lr"} if short else set())
    parts = []
    for k, v in record.items():
        if k in skip:
            continue
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)
