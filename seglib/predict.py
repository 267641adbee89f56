"""``seglib predict``: apply a trained run to a dataset folder of the same kind.

The run folder (``build/runs/<study>/<key>``) holds the resolved configuration and the best
checkpoint. Every case of the folder is preprocessed as in training and predicted by the study's own
``predict_case`` (the prediction of its evaluation: the 3D sliding window with Gaussian weighting, 2D slice by
slice, autocast), mapped back onto the case's own grid and written in the dataset's own format (NIfTI with the image's affine; LGG: ``<slice>_mask.tif`` beside a copy of
the folder layout; nnU-Net: ``<case>.nii.gz`` flat, as nnU-Net writes its predictions). Where the folder has masks, per-case metrics go to ``metrics.csv`` and their
mean and median to ``summary.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seglib.config import ConfigError, RunConfig
from seglib.io import atomic_write_json

log = logging.getLogger(__name__)


def check_run(run_dir: Path) -> dict:
    """The stored metadata (``config.json``) of a finished run; FileNotFoundError/ValueError in one line if not."""
    run_dir = Path(run_dir)
    cfg_file, ckpt = run_dir / "config.json", run_dir / "checkpoints" / "best.pt"
    for f in (cfg_file, ckpt, run_dir / "DONE"):
        if not f.is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run: {f.name} is missing "
                                    f"(expected a folder build/runs/<study>/<key> written by seglib)")
    try:
        meta = json.loads(cfg_file.read_text())
        meta["study"], meta["config"]["data"]["dataset"]  # noqa: B018 - the keys predict needs
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_file} cannot be read as a run's configuration ({_first_line(e)}); "
                         f"the run is damaged: delete {run_dir} and run its study again.") from None
    return meta


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_run(run_dir: Path) -> tuple[str, RunConfig, torch.nn.Module, int]:
    """(study, typed cell, model with the best weights, best epoch) of a finished run.

    A configuration that does not validate, or a checkpoint that cannot be read (truncated, from another
    model), is a one-line ValueError naming it."""
    from seglib.studies.pipeline import build_cell_model

    run_dir = Path(run_dir)
    meta = check_run(run_dir)
    try:
        cell = RunConfig.from_dict(meta["config"])
    except ConfigError as e:
        raise ValueError(f"{run_dir / 'config.json'}: {e} The run is damaged or from another version of seglib: "
                         f"delete {run_dir} and run its study again.") from None
    ckpt = run_dir / "checkpoints" / "best.pt"
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        weights = state["model"]
        first = next(k for k in weights if k.endswith("weight") and weights[k].dim() >= 4)
        model = build_cell_model(cell, in_channels=int(weights[first].shape[1]))
        model.load_state_dict(weights)
    except Exception as e:  # noqa: BLE001 - truncated zip, unpickling error, missing or mismatched weights
        raise ValueError(f"checkpoint {ckpt} cannot be read ({_first_line(e)}); the run is incomplete or damaged: "
                         f"delete {run_dir} and run its study again to retrain it.") from None
    model.eval()
    return meta["study"], cell, model, int(state.get("epoch") or 0)


#: configuration keys in which the runs of an ensemble may differ: their seed and their cross-validation fold
ENSEMBLE_MAY_DIFFER = ("train.seed", "data.fold")


def load_runs(run_dirs) -> tuple[str, RunConfig, torch.nn.Module, list[int]]:
    """(study, typed cell of the first run, model, best epoch of each run) of one finished run, or of several
    averaged (:class:`seglib.nn.ensemble.Ensemble`): runs of one configuration that differ only in
    :data:`ENSEMBLE_MAY_DIFFER` (seeds, folds). Runs that differ in anything else are a one-line ValueError
    naming the keys, before any model is loaded."""
    from seglib.dotted import leaves
    from seglib.nn.ensemble import Ensemble

    run_dirs = [Path(r) for r in run_dirs]
    metas = [check_run(r) for r in run_dirs]
    if len({r.resolve() for r in run_dirs}) != len(run_dirs):
        raise ValueError(f"a --run is given twice ({', '.join(map(str, run_dirs))}): each run of an ensemble once")
    base = leaves({"study": metas[0]["study"], **metas[0]["config"]})
    for r, meta in zip(run_dirs[1:], metas[1:]):
        other = leaves({"study": meta["study"], **meta["config"]})
        differ = sorted(k for k in set(base) | set(other)
                        if base.get(k) != other.get(k) and k not in ENSEMBLE_MAY_DIFFER)
        if differ:
            raise ValueError(f"--run {r} cannot be averaged with --run {run_dirs[0]}: their configurations differ in "
                             f"{', '.join(differ)} (the runs of an ensemble may differ only in "
                             f"{' and '.join(ENSEMBLE_MAY_DIFFER)})")
    loaded = [load_run(r) for r in run_dirs]
    study, cell, model, _ = loaded[0]
    if len(loaded) > 1:
        model = Ensemble([m for _, _, m, _ in loaded]).eval()
    return study, cell, model, [e for *_, e in loaded]


def default_out(run_dir: Path, study: str, data_dir: Path, build: Path | None = None) -> Path:
    """``build/predictions/<study>/<run key>/<dataset folder name>-<hash of its resolved path>``: a folder of
    its own for every (run, dataset folder), never inside the data or the run."""
    import hashlib

    if build is None:
        from seglib.report.notebooks import paths

        build = paths().build
    resolved = Path(data_dir).resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    runs = [Path(r).resolve().name for r in (run_dir if isinstance(run_dir, (list, tuple)) else [run_dir])]
    name = runs[0] if len(runs) == 1 else "ensemble-" + hashlib.sha256(" ".join(sorted(runs)).encode()).hexdigest()[:16]
    return Path(build) / "predictions" / study / name / f"{resolved.name or 'root'}-{tag}"


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out(out: Path, data_dir: Path, run_dir: Path, runs_root: Path | None = None) -> None:
    """Refuse an output folder that would write into the data it reads or into a run (ValueError, one line)."""
    o, d = Path(out).expanduser().resolve(), Path(data_dir).expanduser().resolve()
    if o.exists() and not o.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder: give a folder (it is created) or leave "
                         f"--out out to write under build/predictions/.")
    if _is_within(o, d):
        raise ValueError(f"--out {out} is inside the dataset folder it reads, --data-dir {data_dir}: predictions "
                         f"would mix with the data; give a folder outside it, or leave --out out to write under "
                         f"build/predictions/.")
    for folder in (o, *o.parents):
        if (folder / "config.json").is_file() and (folder / "DONE").is_file():
            raise ValueError(f"--out {out} is inside the run folder {folder} (--run {run_dir}): a run's folder "
                             f"holds its cached results; give another folder, or leave --out out to write under "
                             f"build/predictions/.")
    if runs_root is not None and _is_within(o, Path(runs_root).resolve()):
        raise ValueError(f"--out {out} is inside the run cache {runs_root} (--run {run_dir}): give another folder, "
                         f"or leave --out out to write under build/predictions/.")


def predict_case(study: str, cell: RunConfig, model, case, device, precision: str = "fp32") -> np.ndarray:
    """The binary prediction of ``case`` on its own grid (``case.image.shape[1:]``): the study's own
    ``predict_case`` (:mod:`seglib.studies.<study>.data`), the prediction its evaluation makes
    (preprocessing, sliding window and its weighting, autocast, threshold)."""
    from seglib.studies.pipeline import study_module

    try:
        module = study_module(study)
    except ModuleNotFoundError:
        raise ValueError(f"unknown study {study!r} in the run's config") from None
    return module.predict_case(model, case, cell, device, precision)


def write_mask(dataset: str, case, mask: np.ndarray, out: Path) -> list[Path]:
    """Write ``mask`` in the dataset's own format under ``out``; returns the written files."""
    import nibabel as nib

    if dataset == "lgg":
        import tifffile

        folder = out / case.id
        folder.mkdir(parents=True, exist_ok=True)
        slices = case.meta.get("slice_numbers") or list(range(1, mask.shape[-1] + 1))
        files = []
        for z, n in enumerate(slices):
            f = folder / f"{case.id}_{n}_mask.tif"
            tifffile.imwrite(f, (mask[..., z] * 255).astype(np.uint8))
            files.append(f)
        return files
    affine = case.affine if case.affine is not None else np.diag([*case.spacing, 1.0])
    if dataset == "nnunet":  # nnU-Net's own layout for predictions: <case>.nii.gz, the label's value as foreground
        fg = case.meta.get("foreground") or [1]
        value = fg[0] if len(fg) == 1 else 1
        out.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image((mask > 0).astype(np.uint8) * np.uint8(value), affine), out / f"{case.id}.nii.gz")
        return [out / f"{case.id}.nii.gz"]
    name = {"prostatex": f"{case.id}.nii.gz", "isles22": f"{case.id}_ses-0001_msk.nii.gz",
            "atlas2": f"{case.id}_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"}[dataset]
    folder = out / ("mask_prostate" if dataset == "prostatex" else case.id)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / name)
    return [folder / name]




def predict_folder(run_dir, data_dir: Path, out: Path | None = None, device: str = "auto") -> dict:
    """Predict every case of ``data_dir`` with the run in ``run_dir`` (a folder, or a list of folders whose
    models are averaged: :func:`load_runs`); write masks, metrics and a summary.

    ``out`` defaults to :func:`default_out`. Everything is checked before anything is written: the runs are
    finished and their checkpoints readable, ``data_dir`` exists, ``out`` is a folder outside the data and
    outside every run folder, the device exists."""
    from seglib.config import check_device
    from seglib.data import load_cases
    from seglib.data.preprocess import move_slice_axis, restore_slice_axis
    from seglib.report.notebooks import paths
    from seglib.eval.metrics import case_metrics
    from seglib.train.device import resolve_device, resolve_precision

    run_dirs = [Path(r) for r in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    if not run_dirs:
        raise ValueError("no --run given: a run folder build/runs/<study>/<key>, or several to average")
    metas = [check_run(r) for r in run_dirs]
    meta = metas[0]
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} does not exist" if not data_dir.exists()
                                else f"--data-dir {data_dir} is a file, not a dataset folder")
    try:
        p = paths()
    except FileNotFoundError:
        p = None
    out = Path(out) if out is not None else default_out(run_dirs, meta["study"], data_dir,
                                                         p.build if p else Path.cwd() / "build")
    for r in run_dirs:
        check_out(out, data_dir, r, p.runs if p else None)
    try:
        check_device(device, "--device")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    study, cell, model, epochs = load_runs(run_dirs)
    dataset = cell.data.dataset
    dev = resolve_device(device)
    precision = resolve_precision(cell.train.precision, dev)
    model.to(dev)
    channels = cell.data.channels
    axis = int(cell.data.slice_axis)
    cases = load_cases(dataset, data_dir, channels=list(channels) if channels else None,
                       foreground=cell.data.foreground)
    out.mkdir(parents=True, exist_ok=True)
    rows, written = [], 0
    for case in cases:
        mask = restore_slice_axis(predict_case(study, cell, model, move_slice_axis(case, axis), dev, precision), axis)
        written += len(write_mask(dataset, case, mask, out))
        if case.mask is not None:
            rows.append({"case_id": case.id, **case_metrics(mask, case.mask, spacing=case.spacing)})
        log.info("predicted %s", case.id)
    summary = {"run": str(run_dirs[0]) if len(run_dirs) == 1 else [str(r) for r in run_dirs], "out": str(out),
               "study": study, "dataset": dataset, "best_epoch": epochs[0] if len(epochs) == 1 else epochs,
               "cases": len(cases), "files_written": written, "cases_with_mask": len(rows)}
    if rows:
        df = pd.DataFrame(rows)
        df.to_csv(out / "metrics.csv", index=False)
        for m in ("dice", "precision", "recall", "hd95"):
            summary[f"{m}_mean"] = float(np.nanmean(df[m])) if df[m].notna().any() else None
            summary[f"{m}_median"] = float(np.nanmedian(df[m])) if df[m].notna().any() else None
    atomic_write_json(out / "summary.json", summary)
    return summary
