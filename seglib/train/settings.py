"""Settings and history of :mod:`seglib.train` (its default metric, ``PooledDice``, is in :mod:`seglib.eval.metrics`).

Written by hand: a plain record of what ``fit`` needs and what it measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from seglib.registry import look_up, suggest
from seglib.train.device import PRECISIONS

#: Adam updates all parameters with one ``_foreach`` call per operation instead of a loop over the tensors: on a
#: CPU the same bits as the loop (tested), 2.5 -> 1.5 ms a step for study B's quick U-Net (50 tensors) and 4.0 ->
#: 3.0 ms for C's (64), one thread, native bf16 (CUDA picks it by default). SGD stays the loop: without momentum
#: the foreach path measured slower.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, s: torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay, foreach=True),
    "sgd": lambda params, s: torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay),
}


SCHEDULES = ("constant", "cosine", "poly")


@dataclass(frozen=True)
class TrainSettings:
    """How ``fit`` trains. ``monitor`` is ``"train_loss"``, ``"val_loss"`` or ``"val_<metric>"``
    for a key of the metric function; ``mode`` says whether lower or higher is better;
    ``patience=None`` turns early stopping off (the best epoch is still tracked);
    an improvement must beat the best by more than ``min_delta``. ``restore_best``
    loads the best weights into the model when ``fit`` returns."""

    epochs: int = 10
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "val_loss"
    mode: str = "min"
    device: str = "auto"
    precision: str = "auto"
    channels_last: str | bool = "auto"
    seed: int = 0
    deterministic: bool = True
    restore_best: bool = True
    schedule: str = "constant"  # the learning rate over the epochs: constant, cosine or poly (to 0)
    warmup_epochs: int = 0  # linear warm-up to ``lr`` over the first epochs

    @classmethod
    def from_config(cls, train, optim, seed: int) -> TrainSettings:
        """The settings of a run from its :class:`~seglib.config.TrainConfig` and
        :class:`~seglib.config.OptimConfig` sections (``cell.train``, ``cell.optim``) and its seed."""
        return cls(epochs=train.epochs, optimizer=optim.name, lr=optim.lr, momentum=optim.momentum,
                   weight_decay=optim.weight_decay, grad_clip=optim.grad_clip, patience=train.patience,
                   min_delta=train.min_delta, monitor=train.monitor, mode=train.mode, device=train.device,
                   precision=train.precision, channels_last=train.channels_last, seed=seed,
                   schedule=optim.schedule, warmup_epochs=optim.warmup_epochs)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based), a pure function of the settings (so a resumed run
        trains at the rates of an uninterrupted one): ``lr * epoch / warmup_epochs`` during the warm-up,
        then ``lr`` (constant), ``lr * (1 + cos(pi t)) / 2`` (cosine) or ``lr * (1 - t) ** 0.9`` (poly, as
        nnU-Net) with ``t`` going from 0 at the first epoch after the warm-up towards 1 at the end."""
        import math

        w = self.warmup_epochs
        if epoch <= w:
            return self.lr * epoch / w
        if self.schedule == "constant":
            return self.lr
        t = (epoch - w - 1) / max(1, self.epochs - w)
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.lr * (1.0 - t) ** 0.9

    def __post_init__(self) -> None:
        def _int(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"TrainSettings.{name} must be an integer >= {lo}, got {v!r}")

        _int("epochs", 1)
        _int("seed", 0)
        _int("warmup_epochs", 0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainSettings.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_epochs >= self.epochs and self.schedule != "constant":
            raise ValueError(f"TrainSettings.warmup_epochs ({self.warmup_epochs}) must be fewer than the epochs "
                             f"({self.epochs}) for a {self.schedule} schedule")
        if self.patience is not None:
            _int("patience", 1)
        look_up(self.optimizer, OPTIMIZERS, "optimizer")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"TrainSettings.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"TrainSettings.momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0 or self.min_delta < 0:
            raise ValueError(
                f"weight_decay and min_delta must be >= 0, got {self.weight_decay!r}, {self.min_delta!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainSettings.grad_clip must be None or > 0, got {self.grad_clip!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"TrainSettings.mode must be 'min' or 'max', got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Unknown precision {self.precision!r}.{suggest(self.precision, PRECISIONS)} "
                f"Options: {', '.join(PRECISIONS)}."
            )
        if self.channels_last not in ("auto", "on", "off", True, False):
            raise ValueError(f"channels_last must be 'auto', 'on', 'off', True or False, got {self.channels_last!r}")
        if not (self.monitor in ("train_loss", "val_loss") or self.monitor.startswith("val_")):
            raise ValueError(
                f"TrainSettings.monitor must be 'train_loss', 'val_loss' or 'val_<metric>', got {self.monitor!r}"
            )


@dataclass
class History:
    """What ``fit`` measured. ``records`` holds one dict per epoch: ``epoch``, ``train_loss``,
    ``val_loss``, ``val_<metric>``…, ``lr``, ``train_time_s``, ``epoch_time_s``, ``peak_mem_mb``.
    ``best_epoch`` is the epoch of the best monitored value (the "converge time")."""

    monitor: str = "val_loss"
    mode: str = "min"
    records: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    deterministic: bool = True
    nondeterministic_ops: list[str] = field(default_factory=list)

    #: columns that measure the machine, not the computation (they differ between identical runs)
    TIMING_COLUMNS: ClassVar[tuple[str, ...]] = ("train_time_s", "epoch_time_s", "peak_mem_mb")

    @property
    def total_time_s(self) -> float:
        return float(sum(r.get("epoch_time_s", 0.0) for r in self.records))

    @property
    def n_epochs(self) -> int:
        return len(self.records)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.records)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> dict[str, Any]:
        """Scalars for provenance: device, precision, best epoch and value, stop flag, times."""
        return {"device": self.device, "precision": self.precision, "channels_last": self.channels_last,
                "deterministic": self.deterministic, "nondeterministic_ops": list(self.nondeterministic_ops),
                "monitor": self.monitor, "best_epoch": self.best_epoch, "best_value": self.best_value,
                "stopped_early": self.stopped_early, "epochs_run": self.n_epochs,
                "total_time_s": self.total_time_s}


def build_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    """Adam (lr, weight decay) or SGD (lr, momentum, weight decay), as the studies used."""
    return look_up(settings.optimizer, OPTIMIZERS, "optimizer")(params, settings)
