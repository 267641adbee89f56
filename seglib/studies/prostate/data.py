"""Study B's data and evaluation: PROSTATEx slices, their datasets, per-patient evaluation (training side)."""

from __future__ import annotations

import numpy as np

from seglib.config import DataConfig, RunConfig
from seglib.data.cache import cached_arrays
from seglib.studies import slices2d


def arrays(prepared, data_cfg: DataConfig) -> dict:
    """Every slice of every labelled case, min-max normalised per slice and resized, split by patient
    (or by slice, as published, which leaks patients between training and validation)."""
    from seglib.data.preprocess import extract_slices
    from seglib.data.splits import split_by_slice

    cases = prepared.cases
    norm = _normalise(data_cfg)
    key = {"study": "prostate", "fingerprint": prepared.fingerprint, "size": data_cfg.size, "normalize": norm,
           "ids": [c.id for c in cases]}
    slices = cached_arrays(key, lambda: extract_slices(cases, data_cfg.size, normalise=norm), prepared.cache_dir)
    slices["mask"] = slices["mask"].astype(np.uint8)
    if data_cfg.split == "patient":
        return slices2d.split_arrays(slices, prepared.train_ids, prepared.val_ids)
    train_idx, val_idx = split_by_slice(slices["patient"].astype(str), data_cfg.val_fraction, seed=0)
    out = {}
    for part, idx in (("train", train_idx), ("val", val_idx)):
        for k, v in slices.items():
            out[f"{part}_{k}"] = v[idx]
    return out


def _normalise(data_cfg: DataConfig) -> str | None:
    return "slice" if data_cfg.normalize == "minmax" else None


in_channels = slices2d.in_channels


def predict_case(model, case, cell: RunConfig, device, precision) -> np.ndarray:
    """The binary prediction of one case on its own grid: its slices normalised as in training, predicted
    as in :func:`evaluate` (:func:`seglib.studies.slices2d.predict_slices`)."""
    return slices2d.predict_case_slices(model, case, cell, device, precision, _normalise(cell.data))


def datasets(arrays: dict, cell: RunConfig):
    return slices2d.datasets(arrays, cell, "prostate")


def example_index(arrays: dict) -> int:
    """B5's slice: the validation slice with the largest gland (the seed showed ProstateX-0200, slice 13)."""
    areas = arrays["val_mask"].reshape(len(arrays["val_mask"]), -1).sum(axis=1)
    return int(np.argmax(areas))


def evaluate(model, arrays, cell, loss_fn, device, precision):
    return slices2d.evaluate(model, arrays, cell, loss_fn, device, precision, examples=[example_index(arrays)])
