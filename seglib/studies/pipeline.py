"""What the three studies share on the training side: the data source and one training run.

A study module (``stroke``, ``prostate``, ``brain``) provides five functions, each given the typed
cell (:class:`~seglib.config.RunConfig`) or its data section::

    arrays(prepared, data: DataConfig) -> dict of numpy arrays (preprocessed, cached in prepared.cache_dir)
    datasets(arrays, cell: RunConfig) -> (train_dataset, val_dataset)
    evaluate(model, arrays, cell, loss_fn, device, precision) -> (per-case metrics DataFrame, predictions dict)
    predict_case(model, case, cell, device, precision) -> binary mask on the case's own grid
    in_channels(arrays) -> int

and this module turns a grid cell of a validated :class:`~seglib.config.StudyConfig` into one trained run
(:mod:`seglib.studies.collect` expands the grid into plain dicts, the runs' keys, and gathers the runs'
results; :func:`train_cell` reads its dict once into a :class:`~seglib.config.RunConfig`).
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglib.config import DataConfig, RunConfig, StudyConfig
from seglib.hashing import stable_hash
from seglib.paths import Paths

log = logging.getLogger(__name__)

LAYOUT_NAMES = {"isles22": "ISLES'22", "atlas2": "ATLAS R2.0", "prostatex": "PROSTATEx (Cuocolo)",
                "lgg": "Kaggle LGG kaggle_3m", "nnunet": "nnU-Net raw (dataset.json)"}
# Phantom knobs per dataset, tuned so that under the quick profile the best configuration of each study
# reaches a mean per-case Dice above 0.8 while the configurations stay apart (measured 2026-11-25, one
# thread: stroke DiceBCE (2+1)D 16³ 0.76 ... 3D 24³ 0.85; prostate BCE 0.81 ... Tversky α=0.5 0.88;
# brain SGD 0.02-0.21, U-Net++ 0.77, U-Net + Adam 0.81-0.84). Before: stroke 0.80 at best (contrast 2.0),
# prostate and brain 0.47 and 0.72 at best with the generators' default contrast.
PHANTOM_KNOBS: dict[str, dict[str, Any]] = {
    "isles22": {"lesions": [1, 3], "lesion_radius": [8.0, 14.0], "contrast": 2.5, "noise": 0.04},
    "atlas2": {},
    "prostatex": {"contrast": 2.0},
    "lgg": {"contrast": 1.5, "tumour_radius": [0.18, 0.36]},
    "nnunet": {"lesions": [1, 3], "lesion_radius": [8.0, 14.0], "contrast": 2.5, "noise": 0.04},
}


def study_module(study: str):
    return importlib.import_module(f"seglib.studies.{study}.data")


@dataclass
class Prepared:
    """The study's cases, split by patient, with the data's fingerprint and a human description."""

    study: str
    dataset: str
    root: Path
    synthetic: bool
    cases: list  # Case records with masks
    unlabelled: list[str]
    train_ids: list[str]
    val_ids: list[str]
    fingerprint: str
    source: str
    cache_dir: Path
    meta: dict = field(default_factory=dict)

    def case(self, case_id: str):
        return next(c for c in self.cases if c.id == case_id)


def data_root(data: DataConfig, paths: Paths) -> tuple[Path, bool]:
    """The dataset folder: ``data.data_dir``, or phantoms written in the dataset's own layout."""
    from seglib.data.phantoms import write_dataset

    if data.data_dir:
        return Path(data.data_dir).expanduser(), False
    key = stable_hash({"n": data.n_cases, "shape": data.phantom_shape, "seed": data.phantom_seed,
                       "knobs": PHANTOM_KNOBS[data.dataset]}, length=10)
    root = paths.phantoms / f"{data.dataset}-{key}"
    write_dataset(data.dataset, root, data.n_cases, shape=data.phantom_shape, seed=data.phantom_seed,
                  **PHANTOM_KNOBS[data.dataset])
    return root, True


def split_ids(ids, d: DataConfig) -> tuple[list[str], list[str]]:
    """(train, validation) patients of a data section: fold ``d.fold`` of a ``d.folds``-fold patient-level
    cross-validation when ``d.folds`` is set, else ``d.n_val`` patients (or ``d.val_fraction`` of them). With
    ``d.refit`` every patient trains, the validation ones too (they stay the validation patients)."""
    from seglib.data.splits import split_by_patient, split_k_fold

    if d.folds:
        train, val = split_k_fold(ids, d.folds, d.fold, seed=0)
    else:
        train, val = split_by_patient(ids, d.val_fraction, seed=0, n_val=d.n_val)
    return (sorted(set(ids)) if d.refit else train), val


def for_cell(prepared: Prepared, d: DataConfig) -> Prepared:
    """``prepared`` with the split of one cell's data section (a grid may sweep ``data.fold``)."""
    import dataclasses

    train_ids, val_ids = split_ids([c.id for c in prepared.cases], d)
    if (train_ids, val_ids) == (list(prepared.train_ids), list(prepared.val_ids)):
        return prepared
    return dataclasses.replace(prepared, train_ids=train_ids, val_ids=val_ids)


def prepare(cfg: StudyConfig, paths: Paths) -> Prepared:
    """Read the cases through the dataset's real reader, check them, and split them by patient."""
    from seglib.data import load_cases, verify_integrity, with_masks
    from seglib.data.cache import case_files, data_fingerprint

    d = cfg.data
    root, synthetic = data_root(d, paths)
    cases = load_cases(d.dataset, root, channels=list(d.channels) if d.channels else None,
                       foreground=d.foreground)
    labelled = with_masks(cases)
    unlabelled = [c.id for c in cases if c.mask is None]
    if d.max_cases:
        labelled = labelled[: d.max_cases]
    verify_integrity(labelled)
    ids = [c.id for c in labelled]
    train_ids, val_ids = split_ids(ids, d)
    fingerprint = data_fingerprint(case_files(labelled), root)
    if d.foreground is not None or d.slice_axis != 2:  # the same files read into other masks or other slices:
        fingerprint = stable_hash([fingerprint, d.foreground, d.slice_axis], length=32)  # other cached arrays
    if d.slice_axis != 2:  # 2D studies cut along the last axis: move the chosen one there
        from seglib.data.preprocess import move_slice_axis

        labelled = [move_slice_axis(c, d.slice_axis) for c in labelled]
    n = len(labelled)
    if synthetic:
        source = f"synthetic phantoms in the {LAYOUT_NAMES[d.dataset]} layout ({n} labelled cases)"
    else:
        source = f"{LAYOUT_NAMES[d.dataset]} at {root} ({n} labelled cases)"
    log.info("%s: %d train / %d validation patients; %d without mask", cfg.study, len(train_ids),
             len(val_ids), len(unlabelled))
    return Prepared(cfg.study, d.dataset, root, synthetic, labelled, unlabelled, train_ids, val_ids,
                    fingerprint, source, paths.cache)


def build_cell_model(cell: RunConfig, in_channels: int):
    from seglib.nn.unet import build_model

    m = cell.model
    params = {"spatial_dims": m.spatial_dims, "in_channels": in_channels, "out_channels": 1,
              "features": tuple(m.features), "upsample": m.upsample}
    if m.name == "unet" and m.spatial_dims == 3:
        params["conv"] = m.conv
        if m.conv == "2+1d":
            params["recompute"] = m.recompute
    return build_model(m.name, **params)


def build_cell_loss(cell: RunConfig):
    from seglib.nn.losses import build_loss, loss_parameters

    spec = cell.loss
    allowed = loss_parameters(spec.name)
    params = {k: getattr(spec, k) for k in ("alpha", "beta", "batch", "smooth")
              if k in allowed and getattr(spec, k) is not None}
    return build_loss(spec.name, **params)


def train_cell(spec, run_dir: Path, *, module, prepared: Prepared, progress: bool = True):
    """One grid cell: preprocess (cached), train with checkpoints in ``run_dir``, evaluate per case."""
    from seglib.nn.unet import count_parameters
    from seglib.runs import RunOutputs
    from seglib.train import TrainSettings, fit, make_loader
    from seglib.train.device import cpu_threads
    from seglib.train.rng import seed_all

    cell = RunConfig.from_dict(spec.config)  # the key stays that of the plain dict, spec.config
    seed, threads = cell.seed, cell.train.cpu_threads
    prepared = for_cell(prepared, cell.data)
    with cpu_threads(threads):
        arrays = module.arrays(prepared, cell.data)
        # the run's own seed, before anything draws: datasets, the model's initial weights, the loss
        # (whatever this process trained before, or whether the arrays came from the cache)
        seed_all(seed)
        train_ds, val_ds = module.datasets(arrays, cell)
        model = build_cell_model(cell, module.in_channels(arrays))
        loss_fn = build_cell_loss(cell)
        settings = TrainSettings.from_config(cell.train, cell.optim, seed)
        bs = cell.train.batch_size
        train_loader = make_loader(train_ds, bs, shuffle=True, seed=seed)
        val_loader = make_loader(val_ds, bs, shuffle=False, seed=seed)
        history = fit(model, loss_fn, train_loader, val_loader, settings,
                      checkpoint_dir=Path(run_dir) / "checkpoints", progress=progress, leave=False)
        t0 = time.perf_counter()
        metrics, predictions = module.evaluate(model, arrays, cell, loss_fn, history.device, history.precision)
    extra = {**history.summary(), "parameters": count_parameters(model), "eval_time_s": time.perf_counter() - t0,
             "n_train": len(train_ds), "n_val_cases": int(metrics["case_id"].nunique()), "cpu_threads": threads}
    return RunOutputs(history=history.to_frame(), metrics=metrics, predictions=predictions, extra=extra)
