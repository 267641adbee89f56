"""Study A: ischemic stroke lesions in 3D ((2+1)D convolution, input size, DiceBCE vs GDL+CE).

The functions the runner (:mod:`seglib.studies.pipeline`) calls, given the run's typed cell
(:class:`seglib.config.RunConfig`) or its data section:

* :func:`arrays`: every labelled case resized to ``data.size``³ (images trilinear; masks nearest,
  or trilinear as the seed's ``grid_sample`` did with ``mask_interp="linear_as_published"``),
  optionally z-scored (``data.normalize``: ``zscore`` over the resized volume, ``zscore_nonzero`` per case over
  the brain's non-zero voxels, robust to ISLES'22's ADC units), cached on disk;
* :func:`datasets`: whole volumes (``data.sampler="none"``) or patches drawn by the bounded
  rejection sampler / the lesion-aware sampler (:class:`seglib.data.sampling.PatchDataset`);
* :func:`evaluate`: one prediction per held-out volume (whole volume, or MONAI's
  ``sliding_window_inference`` with the patch as window when trained on patches), the metrics of
  :func:`seglib.eval.metrics.case_metrics` in millimetres of the original grid, and the loss of each
  volume alone;
* :func:`in_channels`.

Masks resampled ``linear_as_published`` stay soft (values in [0, 1]) for **training**, as in the
seed, while the held-out truth is that soft mask thresholded at 0.5, since metrics need a binary
truth. The tables, claims and texts of the notebook are in :mod:`seglib.studies.stroke.report`;
the memory / time measurement (A2) and the sampler study (A5) in
:mod:`seglib.studies.stroke.measure`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seglib.config import DataConfig, RunConfig

log = logging.getLogger(__name__)

__all__ = ["arrays", "datasets", "evaluate", "in_channels", "predict_case", "predict_logits", "VolumeDataset"]

STUDY = "stroke"


def _mask_threshold(mask_interp: str) -> float | None:
    return 0.5 if mask_interp == "linear_as_published" else None


#: data.normalize → preprocess_volume's keyword: none (as published), a z-score over the whole resized volume,
#: or a per-case, per-channel z-score over the brain's (non-zero) voxels of the native image
NORMALISATIONS = {"none": {}, "zscore": {"zscore": True}, "zscore_nonzero": {"zscore_nonzero": True}}


def _normalisation(data_cfg: DataConfig) -> dict:
    name = data_cfg.normalize
    if name not in NORMALISATIONS:
        raise ValueError(f"data.normalize = {name!r}: study A offers {', '.join(map(repr, NORMALISATIONS))} "
                         f"('none' as published).")
    return NORMALISATIONS[name]


def _build(prepared, data_cfg: DataConfig) -> dict[str, np.ndarray]:
    from seglib.data.preprocess import preprocess_volume

    size, interp = int(data_cfg.size), data_cfg.mask_interp
    norm = _normalisation(data_cfg)
    out: dict[str, list] = {k: [] for k in ("train_image", "train_mask", "val_image", "val_mask", "val_spacing")}
    for split, ids in (("train", prepared.train_ids), ("val", prepared.val_ids)):
        for cid in ids:
            case = prepared.case(cid)
            # training masks keep the seed's soft values; the held-out truth is binarised at 0.5
            thr = None if split == "train" else _mask_threshold(interp)
            item = preprocess_volume(case, size, mask_interp=interp, threshold=thr, **norm)
            out[f"{split}_image"].append(item["image"].astype(np.float32))
            mask = item["mask"]
            out[f"{split}_mask"].append(mask.astype(np.float32 if mask.dtype.kind == "f" else np.uint8))
            if split == "val":
                native = np.asarray(case.image.shape[1:], float)
                out["val_spacing"].append(np.asarray(case.spacing, float) * native / size)
    if not out["train_image"] or not out["val_image"]:
        raise ValueError(f"{STUDY}: need at least one training and one validation case, got "
                         f"{len(prepared.train_ids)} and {len(prepared.val_ids)}.")
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["val_ids"] = np.array(prepared.val_ids)
    arrays["train_ids"] = np.array(prepared.train_ids)
    return arrays


def arrays(prepared, data_cfg: DataConfig) -> dict[str, np.ndarray]:
    """Preprocessed stacks of the split, cached in ``prepared.cache_dir``.

    Returns ``train_image (N, C, S, S, S)`` float32, ``train_mask (N, S, S, S)`` (uint8, or
    float32 in [0, 1] for ``linear_as_published``), ``val_image``, ``val_mask`` (binary uint8),
    ``val_ids``, ``train_ids`` and ``val_spacing (N, 3)``: the original spacing × original
    shape / S, in mm, so volumes and distances are those of the patient.
    """
    from seglib.data.cache import cached_arrays

    key = {"study": STUDY, "what": "volumes", "fingerprint": prepared.fingerprint, "size": int(data_cfg.size),
           "mask_interp": data_cfg.mask_interp, "normalize": data_cfg.normalize,
           "channels": data_cfg.channels, "train": list(prepared.train_ids), "val": list(prepared.val_ids)}
    return cached_arrays(key, lambda: _build(prepared, data_cfg), prepared.cache_dir)


def in_channels(arrays: dict[str, np.ndarray]) -> int:
    return int(arrays["train_image"].shape[1])


class VolumeDataset(Dataset):
    """Whole volumes: ``{"image": (C, S, S, S) float32, "mask": (1, S, S, S) float32}``."""

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks.")
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.as_tensor(np.ascontiguousarray(self.images[i]), dtype=torch.float32),
                "mask": torch.as_tensor(np.ascontiguousarray(self.masks[i][None]), dtype=torch.float32)}


def datasets(arrays: dict[str, np.ndarray], cell: RunConfig):
    """Training set (whole volumes, or patches from the cell's sampler) and the whole validation volumes."""
    from seglib.data.sampling import PatchDataset

    d = cell.data
    val = VolumeDataset(arrays["val_image"], arrays["val_mask"])
    if d.sampler == "none":
        return VolumeDataset(arrays["train_image"], arrays["train_mask"]), val
    patch = _window(d)
    train = PatchDataset(list(arrays["train_image"]), list(arrays["train_mask"]), patch_size=patch,
                         sampler=d.sampler, threshold=d.sampler_threshold,
                         samples_per_epoch=d.samples_per_epoch, seed=cell.seed)
    return train, val


def _window(data_cfg: DataConfig) -> int | None:
    """The sliding window of a run trained on patches (its patch size), None for whole volumes."""
    if data_cfg.sampler == "none":
        return None
    return int(data_cfg.patch_size or max(4, int(data_cfg.size) // 2))


@torch.no_grad()
def predict_logits(model, image: np.ndarray, cell: RunConfig, device, precision: str) -> torch.Tensor:
    """Logits ``(1, 1, S, S, S)`` of one preprocessed volume ``(C, S, S, S)``: the whole volume, or MONAI's
    sliding window (the patch as window, Gaussian weighting) when the run trained on patches; under the
    run's autocast. The one prediction of study A, for :func:`evaluate` and :func:`predict_case`."""
    from seglib.train.device import autocast

    patch = _window(cell.data)
    x = torch.as_tensor(image[None], dtype=torch.float32, device=device)
    with autocast(device, precision):
        if patch is None:
            logits = model(x)
        else:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(x, roi_size=(patch,) * 3, sw_batch_size=1, predictor=model,
                                              overlap=0.25, mode="gaussian")
    return logits.float()


def evaluate(model, arrays: dict[str, np.ndarray], cell: RunConfig, loss_fn, device, precision: str):
    """Per-case metrics and loss of the held-out volumes, and the best and worst case's volumes.

    The prediction is ``sigmoid(logits) >= train.threshold``; metrics are
    :func:`seglib.eval.metrics.case_metrics` with ``val_spacing`` (so ``volume_diff`` is in ml).
    ``case_loss`` repeats ``loss`` under a name no grid axis can take.
    Returns ``(DataFrame[case_id, dice, …, loss, case_loss], {"<case>/image" (first channel, float16),
    "<case>/truth", "<case>/pred" (uint8), "<case>/spacing" (mm)})`` for the best and the worst case by Dice.
    """
    from seglib.eval.metrics import case_metrics

    threshold = float(cell.train.threshold)
    model.eval()
    rows, preds = [], {}
    for image, truth, cid, spacing in zip(arrays["val_image"], arrays["val_mask"], arrays["val_ids"],
                                          arrays["val_spacing"]):
        logits = predict_logits(model, image, cell, device, precision)
        target = torch.as_tensor(truth[None, None], dtype=torch.float32, device=logits.device)
        loss = float(loss_fn(logits, target).item())
        pred = (torch.sigmoid(logits)[0, 0] >= threshold).cpu().numpy().astype(np.uint8)
        rows.append({"case_id": str(cid), **case_metrics(pred, truth.astype(bool), spacing), "loss": loss,
                     "case_loss": loss})
        preds[str(cid)] = pred
    df = pd.DataFrame(rows)
    dice = df["dice"].fillna(-1.0)
    keep = dict.fromkeys([df["case_id"].iloc[int(dice.idxmax())], df["case_id"].iloc[int(dice.idxmin())]])
    ids = [str(c) for c in arrays["val_ids"]]
    out = {}
    for cid in keep:
        i = ids.index(cid)
        out[f"{cid}/image"] = arrays["val_image"][i, 0].astype(np.float16)
        out[f"{cid}/truth"] = arrays["val_mask"][i].astype(np.uint8)
        out[f"{cid}/pred"] = preds[cid]
        out[f"{cid}/spacing"] = np.asarray(arrays["val_spacing"][i], np.float32)
    return df, out


def predict_case(model, case, cell: RunConfig, device, precision: str) -> np.ndarray:
    """The binary prediction of one case on its own grid (``case.image.shape[1:]``): preprocessed as in
    training (:func:`seglib.data.preprocess.preprocess_volume`), predicted as in :func:`evaluate`
    (:func:`predict_logits`), its probabilities resized back and cut at ``train.threshold``."""
    from seglib.data.preprocess import preprocess_volume, resize_probabilities

    d = cell.data
    pre = preprocess_volume(case, int(d.size), **_normalisation(d))
    logits = predict_logits(model, pre["image"].astype(np.float32), cell, device, precision)
    prob = torch.sigmoid(logits)[0, 0].cpu().numpy()
    return (resize_probabilities(prob, case.image.shape[1:]) >= float(cell.train.threshold)).astype(np.uint8)
