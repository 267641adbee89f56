"""What the three studies share: the data source, the grid of runs, and one training run.

A study module (``stroke``, ``prostate``, ``brain``) provides four functions::

    arrays(prepared, data_cfg: dict, cache_dir) -> dict of numpy arrays (preprocessed, cached)
    datasets(arrays, cell: dict) -> (train_dataset, val_dataset)
    evaluate(model, arrays, cell, loss_fn, device, precision) -> (per-case metrics DataFrame, predictions dict)
    in_channels(arrays) -> int

and this module turns a validated :class:`~seglib.config.StudyConfig` into cached runs.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seglib.config import DataConfig, StudyConfig, as_dict
from seglib.execute import Paths
from seglib.hashing import stable_hash

log = logging.getLogger(__name__)

LAYOUT_NAMES = {"isles22": "ISLES'22", "atlas2": "ATLAS R2.0", "prostatex": "PROSTATEx (Cuocolo)",
                "lgg": "Kaggle LGG kaggle_3m"}
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
}


def study_module(study: str):
    return importlib.import_module(f"seglib.studies.{study}")


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


def prepare(cfg: StudyConfig, paths: Paths) -> Prepared:
    """Read the cases through the dataset's real reader, check them, and split them by patient."""
    from seglib.data import load_cases, verify_integrity, with_masks
    from seglib.data.cache import case_files, data_fingerprint
    from seglib.data.splits import split_by_patient

    d = cfg.data
    root, synthetic = data_root(d, paths)
    cases = load_cases(d.dataset, root, channels=list(d.channels) if d.channels else None)
    labelled = with_masks(cases)
    unlabelled = [c.id for c in cases if c.mask is None]
    if d.max_cases:
        labelled = labelled[: d.max_cases]
    verify_integrity(labelled)
    ids = [c.id for c in labelled]
    train_ids, val_ids = split_by_patient(ids, d.val_fraction, seed=0, n_val=d.n_val)
    fingerprint = data_fingerprint(case_files(labelled), root)
    n = len(labelled)
    if synthetic:
        source = f"synthetic phantoms in the {LAYOUT_NAMES[d.dataset]} layout ({n} labelled cases)"
    else:
        source = f"{LAYOUT_NAMES[d.dataset]} at {root} ({n} labelled cases)"
    log.info("%s: %d train / %d validation patients; %d without mask", cfg.study, len(train_ids),
             len(val_ids), len(unlabelled))
    return Prepared(cfg.study, d.dataset, root, synthetic, labelled, unlabelled, train_ids, val_ids,
                    fingerprint, source, paths.cache)


def train_settings(cell: dict):
    from seglib.train import TrainSettings

    t, o = cell["train"], cell["optim"]
    return TrainSettings(
        epochs=t["epochs"], optimizer=o["name"], lr=o["lr"], momentum=o["momentum"],
        weight_decay=o["weight_decay"], grad_clip=o["grad_clip"], patience=t["patience"],
        min_delta=t["min_delta"], monitor=t["monitor"], mode=t["mode"], device=t["device"],
        precision=t["precision"], channels_last=t["channels_last"], seed=t["seed"])


def build_cell_model(cell: dict, in_channels: int):
    from seglib.models import build_model

    m = cell["model"]
    params = {"spatial_dims": m["spatial_dims"], "in_channels": in_channels, "out_channels": 1,
              "features": tuple(m["features"]), "upsample": m["upsample"]}
    if m["name"] == "unet" and m["spatial_dims"] == 3:
        params["conv"] = m["conv"]
    return build_model(m["name"], **params)


def build_cell_loss(cell: dict):
    from seglib.losses import build_loss, loss_parameters

    spec = cell["loss"]
    name = spec["name"]
    allowed = loss_parameters(name)
    params = {k: spec[k] for k in ("alpha", "beta", "batch", "smooth") if k in allowed and spec.get(k) is not None}
    return build_loss(name, **params)


def train_cell(spec, run_dir: Path, *, module, prepared: Prepared, progress: bool = True):
    """One grid cell: preprocess (cached), train with checkpoints in ``run_dir``, evaluate per case."""
    from seglib.models import count_parameters
    from seglib.runs import RunOutputs
    from seglib.train import fit, make_loader
    from seglib.train_utils import cpu_threads, seed_all

    cell = spec.config
    seed = cell["train"]["seed"]
    threads = int(cell["train"].get("cpu_threads") or 1)
    with cpu_threads(threads):
        arrays = module.arrays(prepared, cell["data"])
        # the run's own seed, before anything draws: datasets, the model's initial weights, the loss
        # (whatever this process trained before, or whether the arrays came from the cache)
        seed_all(seed)
        train_ds, val_ds = module.datasets(arrays, cell)
        model = build_cell_model(cell, module.in_channels(arrays))
        loss_fn = build_cell_loss(cell)
        settings = train_settings(cell)
        bs = cell["train"]["batch_size"]
        train_loader = make_loader(train_ds, bs, shuffle=True, seed=seed)
        val_loader = make_loader(val_ds, bs, shuffle=False, seed=seed)
        history = fit(model, loss_fn, train_loader, val_loader, settings,
                      checkpoint_dir=Path(run_dir) / "checkpoints", progress=progress, leave=False)
        t0 = time.perf_counter()
        metrics, predictions = module.evaluate(model, arrays, cell, loss_fn, history.device, history.precision)
    extra = {**history.summary(), "parameters": count_parameters(model), "eval_time_s": time.perf_counter() - t0,
             "n_train": len(train_ds), "n_val_cases": int(metrics["case_id"].nunique()), "cpu_threads": threads}
    return RunOutputs(history=history.to_frame(), metrics=metrics, predictions=predictions, extra=extra)


@dataclass
class GridResults:
    """Every run of a study's grid: one row per run, per case, per epoch, and the stored predictions."""

    runs: pd.DataFrame
    cases: pd.DataFrame
    history: pd.DataFrame
    predictions: dict[str, dict[str, np.ndarray]]
    axes: list[str]
    summary: dict

    def provenance(self) -> list[dict]:
        cols = ["key", "config", "seed", "wall_s", "device", "precision"]
        return self.runs[[c for c in cols if c in self.runs]].to_dict("records")


def run_grid(cfg: StudyConfig, prepared: Prepared, paths: Paths, *, force: bool = False,
             progress: bool = True) -> GridResults:
    """Expand the grid into runs, train what the cache lacks, and collect every run's results."""
    from seglib.runs import RunCache, RunSpec, cell_label, execute, expand_grid, grid_axes

    base = cfg.run_base()
    base["train"]["seed"] = 0
    # the data is identified by its content (prepared.fingerprint), not by where it lies: moving or
    # renaming the dataset folder keeps every cached run
    base["data"]["data_dir"] = None
    grids = [dict(g) for g in cfg.grid]
    cells = expand_grid(base, grids, list(cfg.seeds))
    axes = grid_axes(grids)
    specs = [RunSpec(cfg.study, cell, prepared.fingerprint) for cell in cells]
    module = study_module(cfg.study)
    fn = partial(train_cell, module=module, prepared=prepared, progress=progress)
    results = execute(specs, fn, RunCache(paths.runs), force=force, progress=progress)
    run_rows, case_frames, hist_frames, preds = [], [], [], {}
    for spec, res in zip(specs, results):
        label = cell_label(spec.config, axes) if axes else "baseline"
        axis_values = {k.split(".")[-1] if k.split(".")[-1] != "name" else k.split(".")[0]: _get(spec.config, k)
                       for k in axes}
        prov = res.provenance or {}
        extra = prov.get("extra", prov)
        hist = res.history
        row = {"key": spec.key, "config": label, "seed": spec.config["train"]["seed"], **axis_values,
               "best_epoch": extra.get("best_epoch"), "epochs_run": len(hist),
               "train_time_s": float(hist["epoch_time_s"].sum()) if "epoch_time_s" in hist else np.nan,
               "time_per_epoch_s": float(hist["epoch_time_s"].mean()) if "epoch_time_s" in hist else np.nan,
               "peak_mem_mb": float(hist["peak_mem_mb"].max()) if "peak_mem_mb" in hist else np.nan,
               "parameters": extra.get("parameters"), "device": extra.get("device"),
               "precision": extra.get("precision"), "wall_s": prov.get("wall_time_s"),
               "lr": spec.config["optim"]["lr"], "batch_size": spec.config["train"]["batch_size"],
               "final_train_loss": float(hist["train_loss"].iloc[-1]),
               "final_val_loss": float(hist["val_loss"].iloc[-1]) if "val_loss" in hist else np.nan}
        run_rows.append(row)
        m = res.metrics.copy()
        m.insert(0, "config", label)
        m.insert(1, "seed", row["seed"])
        m.insert(2, "key", spec.key)
        for k, v in axis_values.items():
            m[k] = v
        case_frames.append(m)
        h = hist.copy()
        h.insert(0, "config", label)
        h.insert(1, "seed", row["seed"])
        for k, v in axis_values.items():
            h[k] = v
        hist_frames.append(h)
        preds[spec.key] = res.predictions
    s = results.summary
    summary = {"runs": s.runs, "hits": s.hits, "trained": s.trained, "seconds": s.seconds}
    log.info("%s: %d runs, %d cached, %d trained in %.0f s", cfg.study, s.runs, s.hits, s.trained, s.seconds)
    return GridResults(pd.DataFrame(run_rows), pd.concat(case_frames, ignore_index=True),
                       pd.concat(hist_frames, ignore_index=True), preds, axes, summary)


def _get(cell: dict, dotted: str):
    node = cell
    for part in dotted.split("."):
        node = node[part]
    return node


def config_order(runs: pd.DataFrame) -> list[str]:
    """Configuration labels in grid order."""
    return list(dict.fromkeys(runs["config"]))


def write_outputs(out_dir: Path, cfg: StudyConfig, prepared: Prepared, grid: GridResults | None,
                  tables: dict[str, pd.DataFrame], claims: list[dict], headline: dict,
                  title: str) -> Path:
    """Write every table as CSV and ``results.json`` (claims, headline numbers, provenance) beside
    the executed notebook, for the report index and the tests."""
    import json
    import platform
    from importlib import metadata

    import seglib
    from seglib.runs import _git_commit

    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    for label, df in tables.items():
        df.to_csv(out_dir / "tables" / f"{label}.csv", index=False)
    packages = {}
    for dist in ("torch", "monai", "numpy", "scipy", "pandas", "nibabel", "tifffile", "papermill"):
        try:
            packages[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            packages[dist] = None
    packages["python"] = platform.python_version()
    runs = grid.provenance() if grid is not None else []
    result = {
        "study": cfg.study, "title": title, "profile": cfg.profile, "data": prepared.source,
        "synthetic": prepared.synthetic, "seglib_version": seglib.__version__, "git_commit": _git_commit(),
        "claims": claims, "headline": headline, "tables": sorted(tables),
        "provenance": {"parameters": as_dict(cfg), "config_hash": cfg.hash, "packages": packages,
                       "device": runs[0]["device"] if runs else None, "runs": [
                           {"run": r["key"], "label": f'{r["config"]} (seed {r["seed"]})', "wall_s": r.get("wall_s")}
                           for r in runs],
                       "cache": grid.summary if grid is not None else None},
    }
    path = out_dir / "results.json"
    path.write_text(json.dumps(result, indent=1, default=_json_default))
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def describe_data(prepared: Prepared) -> str:
    """A Markdown paragraph saying which data this build used, so no one mistakes phantoms for the real study."""
    kind = ("**synthetic phantoms**, written in the dataset's own on-disk layout and read back by the same "
            "reader as the real data" if prepared.synthetic else "**the real dataset**")
    text = (f"This build used {kind}: {prepared.source}. Training patients: {len(prepared.train_ids)}; "
            f"held-out (validation) patients: {len(prepared.val_ids)} ({', '.join(prepared.val_ids)}).")
    if prepared.unlabelled:
        text += (f" Cases without a mask, listed and left out of training: {', '.join(prepared.unlabelled)}.")
    return text
