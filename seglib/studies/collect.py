"""A study's grid: expand it into runs, execute them through the run cache, gather their results
(one row per run, per case, per epoch) and write the notebook's outputs beside it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from seglib.config import StudyConfig, as_dict
from seglib.dotted import get_dotted
from seglib.io import atomic_write_bytes, atomic_write_json
from seglib.paths import Paths
from seglib.studies.pipeline import LAYOUT_NAMES, Prepared, study_module, train_cell  # noqa: F401

log = logging.getLogger(__name__)


@dataclass
class GridResults:
    """Every run of a study's grid: one row per run, per case, per epoch, and the stored predictions."""

    runs: pd.DataFrame
    cases: pd.DataFrame
    history: pd.DataFrame
    predictions: dict[str, dict[str, np.ndarray]]
    axes: list[str]
    summary: dict
    #: the runs trained on every patient (``data.refit``), one row each (key, config, seed, ...): not in the
    #: frames above, which hold the runs that validate on patients they did not train on
    refit: pd.DataFrame = field(default_factory=pd.DataFrame)

    def provenance(self) -> list[dict]:
        cols = ["key", "config", "seed", "wall_s", "device", "precision"]
        rows = self.runs[[c for c in cols if c in self.runs]].to_dict("records")
        refit = self.refit[[c for c in cols if c in self.refit]].to_dict("records") if len(self.refit) else []
        return rows + [{**r, "refit": True} for r in refit]


def grid_specs(cfg: StudyConfig, prepared: Prepared):
    """The grid's runs: ``(specs, axes)``."""
    from seglib.runs import RunSpec, expand_grid, grid_axes

    base = cfg.run_base()
    base["train"]["seed"] = 0
    # the data is identified by its content (prepared.fingerprint), not by where it lies: moving or
    # renaming the dataset folder keeps every cached run
    base["data"]["data_dir"] = None
    grids = [dict(g) for g in cfg.grid]
    cells = expand_grid(base, grids, list(cfg.seeds))
    return [RunSpec(cfg.study, cell, prepared.fingerprint) for cell in cells], grid_axes(grids)


def run_grid(cfg: StudyConfig, prepared: Prepared, paths: Paths, *, force: bool = False,
             progress: bool = True, executor=None) -> GridResults:
    """Expand the grid into runs, train what the cache lacks, and collect every run's results.

    ``executor``: an :class:`~seglib.config.ExecutorConfig` (or a name, ``"dask"``); by default
    ``$SEGLIB_EXECUTOR`` (what ``seglib run --executor`` sets), else ``cfg.executor``. Where the runs train
    changes none of their keys."""
    from seglib.config import ExecutorConfig
    from seglib.runs import RunCache, axis_name, cell_label, execute
    from seglib.runs.executors import BATCH_ENV, executor_settings, open_executor

    if isinstance(executor, str):
        executor = ExecutorConfig(name=executor)
    ex = executor or executor_settings(cfg.executor)
    specs, axes = grid_specs(cfg, prepared)
    module = study_module(cfg.study)
    # per-epoch bars only where someone watches: not in a kernel that seglib run / report executes
    epoch_bars = progress and os.environ.get(BATCH_ENV) != "1"
    fn = partial(train_cell, module=module, prepared=prepared, progress=epoch_bars)
    log.info("%s: %d runs, executor %s", cfg.study, len(specs), ex.name)
    with open_executor(ex, data_dir=prepared.root, project=paths.root, build=paths.build, runs=paths.runs,
                       study=cfg.study) as remote:
        results = execute(specs, fn, RunCache(paths.runs), force=force, progress=progress, executor=remote)
    run_rows, case_frames, hist_frames, preds, refit_rows = [], [], [], {}, []
    label_axes = [a for a in axes if a != "data.refit"]  # a refit run is labelled as the configuration it refits
    for spec, res in zip(specs, results):
        label = cell_label(spec.config, label_axes) if label_axes else "baseline"
        # every run carries the descriptors that tables and figures group by, swept or not, so a grid of
        # any shape (one configuration, one axis) has the columns they read
        axis_values = {axis_name(k): get_dotted(spec.config, k) for k in dict.fromkeys([*DESCRIPTORS, *axes])}
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
        if spec.config["data"].get("refit"):  # validated on patients it trained on: kept out of the results
            refit_rows.append(row)
            continue
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
                       pd.concat(hist_frames, ignore_index=True), preds, label_axes, summary, pd.DataFrame(refit_rows))


#: configuration keys every run row, case row and epoch row carries (as columns named by ``axis_name``)
DESCRIPTORS = ("model.name", "model.conv", "data.size", "loss.name", "loss.alpha", "optim.name")


def config_order(runs: pd.DataFrame) -> list[str]:
    """Configuration labels in grid order."""
    return list(dict.fromkeys(runs["config"]))


def write_outputs(out_dir: Path, cfg: StudyConfig, prepared: Prepared, grid: GridResults | None,
                  tables: dict[str, pd.DataFrame], claims: list[dict], headline: dict,
                  title: str, extra: dict | None = None) -> Path:
    """Write every table as CSV and ``results.json`` (claims, headline numbers, provenance, and the keys
    of ``extra``) beside the executed notebook, for the report index and the tests."""
    import platform
    from importlib import metadata

    import seglib
    from seglib.runs.cache import git_commit

    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    for label, df in tables.items():
        atomic_write_bytes(out_dir / "tables" / f"{label}.csv", df.to_csv(index=False).encode("utf-8"))
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
        "synthetic": prepared.synthetic, "seglib_version": seglib.__version__, "git_commit": git_commit(),
        "claims": claims, "headline": headline, "tables": sorted(tables),
        "provenance": {"parameters": as_dict(cfg), "config_hash": cfg.hash, "packages": packages,
                       "device": runs[0]["device"] if runs else None,
                       "precision": runs[0].get("precision") if runs else None, "runs": [
                           {"run": r["key"], "label": f'{r["config"]} (seed {r["seed"]})', "wall_s": r.get("wall_s"),
                            "device": r.get("device"), "precision": r.get("precision"),
                            **({"refit": True} if r.get("refit") else {})}
                           for r in runs],
                       "cache": grid.summary if grid is not None else None},
        **(extra or {}),
    }
    return atomic_write_json(out_dir / "results.json", result)


def describe_data(prepared: Prepared) -> str:
    """A Markdown paragraph saying which data this build used, so no one mistakes phantoms for the real study."""
    kind = ("**synthetic phantoms**, written in the dataset's own on-disk layout and read back by the same "
            "reader as the real data" if prepared.synthetic else "**the real dataset**")
    text = (f"This build used {kind}: {prepared.source}. Training patients: {len(prepared.train_ids)}; "
            f"held-out (validation) patients: {len(prepared.val_ids)} ({', '.join(prepared.val_ids)}).")
    if prepared.unlabelled:
        text += (f" Cases without a mask, listed and left out of training: {', '.join(prepared.unlabelled)}.")
    return text
