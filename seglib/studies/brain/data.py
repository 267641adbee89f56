"""Study C's data and evaluation: Buda's per-volume preprocessing, slice datasets, per-volume DSC (training side)."""

from __future__ import annotations

import numpy as np

from seglib.data.cache import cached_arrays
from seglib.studies import slices2d


def arrays(prepared, data_cfg: dict) -> dict:
    """Buda's per-volume preprocessing of every labelled case, cached, split into train/val slices."""
    from seglib.data.preprocess import buda_preprocess, extract_slices, stack_volumes

    cases = prepared.cases
    key = {"study": "brain", "fingerprint": prepared.fingerprint, "size": data_cfg["size"],
           "normalize": data_cfg["normalize"], "ids": [c.id for c in cases]}

    def build():
        if data_cfg["normalize"] == "buda":
            return stack_volumes([buda_preprocess(c, data_cfg["size"]) for c in cases], [c.id for c in cases])
        return extract_slices(cases, data_cfg["size"], normalise=None)

    slices = cached_arrays(key, build, prepared.cache_dir)
    slices["mask"] = slices["mask"].astype(np.uint8)
    return slices2d.split_arrays(slices, prepared.train_ids, prepared.val_ids)


in_channels = slices2d.in_channels


def datasets(arrays: dict, cell: dict):
    return slices2d.datasets(arrays, cell, "brain")


def evaluate(model, arrays, cell, loss_fn, device, precision):
    examples = slices2d.example_slices(arrays, 4)
    return slices2d.evaluate(model, arrays, cell, loss_fn, device, precision, examples=examples)
