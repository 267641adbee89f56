"""Study C's data and evaluation: Buda's per-volume preprocessing, slice datasets, per-volume DSC (training side)."""

from __future__ import annotations

import numpy as np

from seglib.config import DataConfig, RunConfig
from seglib.data.cache import cached_arrays
from seglib.studies import slices2d


def arrays(prepared, data_cfg: DataConfig) -> dict:
    """Buda's per-volume preprocessing of every labelled case, cached, split into train/val slices."""
    from seglib.data.preprocess import buda_preprocess, extract_slices, stack_volumes

    cases = prepared.cases
    key = {"study": "brain", "fingerprint": prepared.fingerprint, "size": data_cfg.size,
           "normalize": data_cfg.normalize, "ids": [c.id for c in cases]}

    def build():
        if data_cfg.normalize == "buda":
            return stack_volumes([buda_preprocess(c, data_cfg.size) for c in cases], [c.id for c in cases])
        return extract_slices(cases, data_cfg.size, normalise=None)

    slices = cached_arrays(key, build, prepared.cache_dir)
    slices["mask"] = slices["mask"].astype(np.uint8)
    return slices2d.split_arrays(slices, prepared.train_ids, prepared.val_ids)


in_channels = slices2d.in_channels

#: example slices each run stores (C5 shows ``settings.n_examples`` of them)
EXAMPLES_STORED = 4


def predict_case(model, case, cell: RunConfig, device, precision) -> np.ndarray:
    """The binary prediction of one case on its own grid ``(H, W, Z)``, predicted as in :func:`evaluate`
    (:func:`seglib.studies.slices2d.predict_slices`). With Buda's preprocessing the slices kept by it are
    predicted, resized onto the square crop, its padding undone and put back into the brain's bounding box;
    the other slices stay empty."""
    from seglib.data.case import Case
    from seglib.data.preprocess import buda_preprocess, resize_probabilities

    d = cell.data
    if d.normalize != "buda":
        return slices2d.predict_case_slices(model, case, cell, device, precision, None)
    shape = case.image.shape[1:]
    pre = buda_preprocess(Case(case.id, case.image, np.zeros(shape, np.uint8), case.spacing), d.size)
    images = np.ascontiguousarray(pre["image"].transpose(3, 0, 1, 2))
    probs = slices2d.predict_slices(model, images, cell, device, precision)  # (S', size, size)
    h0, h1, w0, w1 = (int(v) for v in pre["bbox"])
    side = max(h1 - h0, w1 - w0)
    ph, pw = side - (h1 - h0), side - (w1 - w0)
    out = np.zeros(shape, np.uint8)
    for p, z in zip(probs, pre["slices"]):
        sq = resize_probabilities(p, (side, side))[ph // 2: ph // 2 + (h1 - h0), pw // 2: pw // 2 + (w1 - w0)]
        out[h0:h1, w0:w1, int(z)] = (sq >= cell.train.threshold).astype(np.uint8)
    return slices2d.postprocess_volume(out, cell)


def datasets(arrays: dict, cell: RunConfig):
    return slices2d.datasets(arrays, cell, "brain")


def evaluate(model, arrays, cell, loss_fn, device, precision):
    examples = slices2d.example_slices(arrays, EXAMPLES_STORED)
    return slices2d.evaluate(model, arrays, cell, loss_fn, device, precision, examples=examples)
