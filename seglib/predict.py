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

log = logging.getLogger(__name__)


def load_run(run_dir: Path) -> tuple[str, dict, torch.nn.Module, int]:
    """(study, cell config, model with the best weights, best epoch) of a finished run."""
    from seglib.studies.common import build_cell_model

    run_dir = Path(run_dir)
    cfg_file, ckpt = run_dir / "config.json", run_dir / "checkpoints" / "best.pt"
    for f in (cfg_file, ckpt, run_dir / "DONE"):
        if not f.is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run: {f.name} is missing "
                                    f"(expected a folder build/runs/<study>/<key> written by seglib)")
    meta = json.loads(cfg_file.read_text())
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    weights = state["model"]
    first = next(k for k in weights if k.endswith("weight") and weights[k].dim() >= 4)
    model = build_cell_model(meta["config"], in_channels=int(weights[first].shape[1]))
    model.load_state_dict(weights)
    model.eval()
    return meta["study"], meta["config"], model, int(state.get("epoch") or 0)


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




def predict_folder(run_dir: Path, data_dir: Path, out: Path, device: str = "auto") -> dict:
    """Predict every case of ``data_dir`` with the run in ``run_dir``; write masks, metrics and a summary."""
    from seglib.data import load_cases
    from seglib.metrics import case_metrics
    from seglib.train_utils import resolve_device

    study, cell, model, epoch = load_run(run_dir)
    dataset = cell["data"]["dataset"]
    dev = resolve_device(device)
    model.to(dev)
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"--data-dir {data_dir} does not exist")
    channels = cell["data"].get("channels")
    cases = load_cases(dataset, data_dir, channels=list(channels) if channels else None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, written = [], 0
    for case in cases:
        mask = predict_case(study, cell, model, case, dev)
        written += len(write_mask(dataset, case, mask, out))
        if case.mask is not None:
            rows.append({"case_id": case.id, **case_metrics(mask, case.mask, spacing=case.spacing)})
        log.info("predicted %s", case.id)
    summary = {"run": str(run_dir), "study": study, "dataset": dataset, "best_epoch": epoch,
               "cases": len(cases), "files_written": written, "cases_with_mask": len(rows)}
    if rows:
        df = pd.DataFrame(rows)
        df.to_csv(out / "metrics.csv", index=False)
        for m in ("dice", "precision", "recall", "hd95"):
            summary[f"{m}_mean"] = float(np.nanmean(df[m])) if df[m].notna().any() else None
            summary[f"{m}_median"] = float(np.nanmedian(df[m])) if df[m].notna().any() else None
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
