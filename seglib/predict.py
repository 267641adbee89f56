"""``seglib predict``: apply a trained run to a dataset folder of the same kind.

The run folder (``build/runs/<study>/<key>``) holds the resolved configuration and the best
checkpoint. Every case of the folder is preprocessed as in training, predicted (3D: MONAI's
sliding-window inference; 2D: slice by slice), mapped back onto the case's own grid and written in
the dataset's own format (NIfTI with the image's affine; LGG: ``<slice>_mask.tif`` beside a copy of
the folder layout). Where the folder has masks, per-case metrics go to ``metrics.csv`` and their
mean and median to ``summary.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

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


def load_run(run_dir: Path) -> tuple[str, dict, torch.nn.Module, int]:
    """(study, cell config, model with the best weights, best epoch) of a finished run.

    A checkpoint that cannot be read (truncated, from another model) is a one-line ValueError naming it."""
    from seglib.studies.pipeline import build_cell_model

    run_dir = Path(run_dir)
    meta = check_run(run_dir)
    ckpt = run_dir / "checkpoints" / "best.pt"
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        weights = state["model"]
        first = next(k for k in weights if k.endswith("weight") and weights[k].dim() >= 4)
        model = build_cell_model(meta["config"], in_channels=int(weights[first].shape[1]))
        model.load_state_dict(weights)
    except Exception as e:  # noqa: BLE001 - truncated zip, unpickling error, missing or mismatched weights
        raise ValueError(f"checkpoint {ckpt} cannot be read ({_first_line(e)}); the run is incomplete or damaged: "
                         f"delete {run_dir} and run its study again to retrain it.") from None
    model.eval()
    return meta["study"], meta["config"], model, int(state.get("epoch") or 0)


def default_out(run_dir: Path, study: str, data_dir: Path, build: Path | None = None) -> Path:
    """``build/predictions/<study>/<run key>/<dataset folder name>-<hash of its resolved path>``: a folder of
    its own for every (run, dataset folder), never inside the data or the run."""
    import hashlib

    if build is None:
        from seglib.report.notebooks import paths

        build = paths().build
    resolved = Path(data_dir).resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return Path(build) / "predictions" / study / Path(run_dir).resolve().name / f"{resolved.name or 'root'}-{tag}"


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


def _probabilities(model, x: torch.Tensor, device, spatial_dims: int, roi=None) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        x = x.to(device)
        if spatial_dims == 3:
            roi = roi or tuple(x.shape[2:])
            logits = sliding_window_inference(x, roi_size=roi, sw_batch_size=1, predictor=model, overlap=0.25)
        else:
            logits = torch.cat([model(x[i:i + 16]) for i in range(0, len(x), 16)])
        return torch.sigmoid(logits.float()).cpu().numpy()


def _resize(prob: np.ndarray, shape) -> np.ndarray:
    from seglib.data.preprocess import resize_volume

    return resize_volume(prob[None].astype(np.float32), tuple(int(s) for s in shape), "linear")[0]


def predict_case(study: str, cell: dict, model, case, device) -> np.ndarray:
    """The binary prediction of ``case`` on its own grid (``case.image.shape[1:]``)."""
    from seglib.data.preprocess import buda_preprocess, extract_slices, preprocess_volume

    d, thr = cell["data"], cell["train"]["threshold"]
    shape = case.image.shape[1:]
    if study == "stroke":
        pre = preprocess_volume(case, d["size"], zscore=d["normalize"] == "zscore")
        roi = (d["patch_size"],) * 3 if d.get("patch_size") and d["sampler"] != "none" else None
        prob = _probabilities(model, torch.from_numpy(pre["image"])[None], device, 3, roi)[0, 0]
        return (_resize(prob, shape) >= thr).astype(np.uint8)
    if study == "prostate":
        norm = "slice" if d["normalize"] == "minmax" else None
        dummy = type(case)(case.id, case.image, np.zeros(shape, np.uint8), case.spacing)
        sl = extract_slices([dummy], d["size"], normalise=norm)
        prob = _probabilities(model, torch.from_numpy(sl["image"]), device, 2)[:, 0]  # (Z, S, S)
        vol = np.stack([_resize(p, shape[:2]) for p in prob], axis=-1)
        return (vol >= thr).astype(np.uint8)
    if study == "brain":
        if d["normalize"] != "buda":
            dummy = type(case)(case.id, case.image, np.zeros(shape, np.uint8), case.spacing)
            sl = extract_slices([dummy], d["size"], normalise=None)
            prob = _probabilities(model, torch.from_numpy(sl["image"]), device, 2)[:, 0]
            return (np.stack([_resize(p, shape[:2]) for p in prob], axis=-1) >= thr).astype(np.uint8)
        dummy = type(case)(case.id, case.image, np.zeros(shape, np.uint8), case.spacing)
        pre = buda_preprocess(dummy, d["size"])
        x = torch.from_numpy(np.ascontiguousarray(pre["image"].transpose(3, 0, 1, 2)))
        prob = _probabilities(model, x, device, 2)[:, 0]  # (S', size, size)
        h0, h1, w0, w1 = (int(v) for v in pre["bbox"])
        side = max(h1 - h0, w1 - w0)
        out = np.zeros(shape, np.uint8)
        for p, z in zip(prob, pre["slices"]):
            sq = _resize(p, (side, side))
            ph, pw = side - (h1 - h0), side - (w1 - w0)
            sq = sq[ph // 2: ph // 2 + (h1 - h0), pw // 2: pw // 2 + (w1 - w0)]  # undo the square padding
            out[h0:h1, w0:w1, int(z)] = (sq >= thr).astype(np.uint8)
        return out
    raise ValueError(f"unknown study {study!r} in the run's config")


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
    name = {"prostatex": f"{case.id}.nii.gz", "isles22": f"{case.id}_ses-0001_msk.nii.gz",
            "atlas2": f"{case.id}_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"}[dataset]
    folder = out / ("mask_prostate" if dataset == "prostatex" else case.id)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / name)
    return [folder / name]




def predict_folder(run_dir: Path, data_dir: Path, out: Path | None = None, device: str = "auto") -> dict:
    """Predict every case of ``data_dir`` with the run in ``run_dir``; write masks, metrics and a summary.

    ``out`` defaults to :func:`default_out`. Everything is checked before anything is written: the run is
    finished and its checkpoint readable, ``data_dir`` exists, ``out`` is a folder outside the data and
    outside every run folder, the device exists."""
    from seglib.config import ConfigError, check_device
    from seglib.data import load_cases
    from seglib.report.notebooks import paths
    from seglib.eval.metrics import case_metrics
    from seglib.train.device import resolve_device

    run_dir = Path(run_dir)
    meta = check_run(run_dir)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} does not exist" if not data_dir.exists()
                                else f"--data-dir {data_dir} is a file, not a dataset folder")
    try:
        p = paths()
    except FileNotFoundError:
        p = None
    out = Path(out) if out is not None else default_out(run_dir, meta["study"], data_dir,
                                                         p.build if p else Path.cwd() / "build")
    check_out(out, data_dir, run_dir, p.runs if p else None)
    try:
        check_device(device, "--device")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    study, cell, model, epoch = load_run(run_dir)
    dataset = cell["data"]["dataset"]
    dev = resolve_device(device)
    model.to(dev)
    channels = cell["data"].get("channels")
    cases = load_cases(dataset, data_dir, channels=list(channels) if channels else None)
    out.mkdir(parents=True, exist_ok=True)
    rows, written = [], 0
    for case in cases:
        mask = predict_case(study, cell, model, case, dev)
        written += len(write_mask(dataset, case, mask, out))
        if case.mask is not None:
            rows.append({"case_id": case.id, **case_metrics(mask, case.mask, spacing=case.spacing)})
        log.info("predicted %s", case.id)
    summary = {"run": str(run_dir), "out": str(out), "study": study, "dataset": dataset, "best_epoch": epoch,
               "cases": len(cases), "files_written": written, "cases_with_mask": len(rows)}
    if rows:
        df = pd.DataFrame(rows)
        df.to_csv(out / "metrics.csv", index=False)
        for m in ("dice", "precision", "recall", "hd95"):
            summary[f"{m}_mean"] = float(np.nanmean(df[m])) if df[m].notna().any() else None
            summary[f"{m}_median"] = float(np.nanmedian(df[m])) if df[m].notna().any() else None
    atomic_write_json(out / "summary.json", summary)
    return summary
