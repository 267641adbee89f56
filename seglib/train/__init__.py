"""Training: ``fit`` → ``train_one_epoch`` → ``evaluate`` (``loop``), its settings and history (``settings``),
checkpoints and early stopping (``state``), device, precision and memory format (``device``), randomness and
loaders (``rng``), and one bare step for measurements (``steps``)."""

from seglib.train.device import resolve_channels_last, resolve_device, resolve_precision
from seglib.train.loop import evaluate, fit, predict_batches, train_one_epoch
from seglib.train.rng import make_loader
from seglib.eval.metrics import PooledDice
from seglib.train.settings import OPTIMIZERS, History, TrainSettings, build_optimizer

__all__ = [
    "TrainSettings", "History", "PooledDice", "fit", "train_one_epoch", "evaluate", "predict_batches",
    "make_loader", "resolve_device", "resolve_precision", "resolve_channels_last", "build_optimizer",
    "OPTIMIZERS",
]
