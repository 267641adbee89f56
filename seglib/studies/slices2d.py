"""The 2D studies' shared pipeline (B prostate, C brain): slices in, per-volume metrics out.

A study module builds its cached slice arrays (``image (N, C, S, S)``, ``mask (N, S, S)``,
``patient (N,)``, ``slice (N,)``) and this module does the rest: datasets with the study's
augmentation and slice sampling, prediction of the validation slices, per-volume metrics
(slices regrouped by patient before measuring), a per-case loss, and the stored examples. A run's
settings come as its typed cell (:class:`seglib.config.RunConfig`: ``cell.data.size``, ``cell.train.threshold``).
"""

from __future__ import annotations

import numpy as np
import torch

from seglib.config import RunConfig
from seglib.data.sampling import slice_weights
from seglib.data.transforms import SliceDataset, build_augmentation
from seglib.eval.metrics import volume_metrics


def split_arrays(slices: dict, train_ids, val_ids) -> dict:
    """``train_*`` and ``val_*`` arrays from the slice stack, by patient."""
    patient = slices["patient"].astype(str)
    out = {}
    for part, ids in (("train", train_ids), ("val", val_ids)):
        sel = np.isin(patient, list(ids))
        if not sel.any():
            raise ValueError(f"no {part} slices: none of the patients {sorted(ids)} is in the slice stack")
        for k, v in slices.items():
            out[f"{part}_{k}"] = v[sel]
    return out


def in_channels(arrays: dict) -> int:
    return int(arrays["train_image"].shape[1])


def datasets(arrays: dict, cell: RunConfig, augmentation: str):
    """Training slices (augmented, optionally drawn ∝ lesion area + uniform share) and validation slices."""
    d, seed = cell.data, cell.seed
    params = {"intensity": True} if d.augment_intensity else {}
    transform = build_augmentation(augmentation, seed=seed, **params) if d.augment else None
    weights = groups = None
    if d.slice_sampling == "lesion_weighted":
        patients = arrays["train_patient"].astype(str)
        areas = arrays["train_mask"].reshape(len(patients), -1).sum(axis=1).astype(float)
        weights = np.empty(len(patients))
        for p in np.unique(patients):
            sel = patients == p
            weights[sel] = slice_weights(areas[sel])
        groups = patients
    train = SliceDataset(arrays["train_image"], arrays["train_mask"][:, None], transform=transform,
                         weights=weights, samples_per_epoch=d.samples_per_epoch, seed=seed, groups=groups)
    val = SliceDataset(arrays["val_image"], arrays["val_mask"][:, None])
    return train, val


def predict_slices(model, images: np.ndarray, cell: RunConfig, device, precision) -> np.ndarray:
    """Foreground probabilities ``(N, S, S)`` float32 of preprocessed slices ``(N, C, S, S)``: batches of
    ``train.batch_size`` under the run's precision (:func:`seglib.train.predict_batches`). The one prediction
    of the 2D studies, for their evaluation and for ``seglib predict``."""
    from seglib.train import make_loader, predict_batches

    images = np.asarray(images)
    views = TTA_VIEWS[cell.train.tta]
    total = None
    for dims in views:  # each view predicted, flipped back and averaged (the mirror of a slice is a slice)
        view = np.flip(images, axis=tuple(d + 2 for d in dims)) if dims else images
        slices = SliceDataset(np.ascontiguousarray(view), np.zeros((len(images), 1, *images.shape[2:]), np.uint8))
        loader = make_loader(slices, cell.train.batch_size, shuffle=False, seed=0)
        probs = np.concatenate([torch.sigmoid(logits)[:, 0].numpy()
                                for logits, _ in predict_batches(model, loader, device, precision)])
        probs = np.flip(probs, axis=tuple(d + 1 for d in dims)) if dims else probs
        total = probs.astype(np.float64) if total is None else total + probs
    return (total / len(views)).astype(np.float32)


#: ``train.tta`` → the views of a slice predicted and averaged (flipped axes of ``(H, W)``): "lr" itself and its
#: left-right mirror (the flip study C's augmentation trains on), "lr_ud" also up-down and both (study B's)
TTA_VIEWS = {"none": ((),), "lr": ((), (1,)), "lr_ud": ((), (0,), (1,), (0, 1))}


def postprocess_volume(mask: np.ndarray, cell: RunConfig) -> np.ndarray:
    """``train.postprocess`` on one patient's binary volume ``(..., Z)`` or slice stack ``(Z, H, W)``:
    "largest" keeps its largest 26-connected component (across slices), "none" returns it as it is."""
    if cell.train.postprocess == "none":
        return mask
    from seglib.eval.metrics import largest_connected_component

    return largest_connected_component(mask).astype(mask.dtype)


def predict_val(model, arrays: dict, cell: RunConfig, device, precision) -> np.ndarray:
    """Foreground probabilities of every validation slice, ``(N, S, S)`` float32."""
    return predict_slices(model, arrays["val_image"], cell, device, precision)


def predict_case_slices(model, case, cell: RunConfig, device, precision, normalise) -> np.ndarray:
    """The binary prediction of one raw case on its own grid ``(H, W, Z)``: every slice extracted as in
    training (:func:`seglib.data.preprocess.extract_slices` with ``normalise``), predicted by
    :func:`predict_slices`, resized back and cut at ``train.threshold``."""
    from seglib.data.case import Case
    from seglib.data.preprocess import extract_slices, resize_probabilities

    shape = case.image.shape[1:]
    unlabelled = Case(case.id, case.image, np.zeros(shape, np.uint8), case.spacing)
    sl = extract_slices([unlabelled], cell.data.size, normalise=normalise)
    probs = predict_slices(model, sl["image"], cell, device, precision)
    vol = np.stack([resize_probabilities(p, shape[:2]) for p in probs], axis=-1)
    return postprocess_volume((vol >= cell.train.threshold).astype(np.uint8), cell)


def evaluate(model, arrays: dict, cell: RunConfig, loss_fn, device, precision, *, examples=None):
    """Per-volume metrics of the validation patients, their per-case loss, and example predictions.

    ``examples``: indices of validation slices whose image, truth and prediction are stored
    (``"slice<i>/image|truth|pred"``) for the figures.
    """
    probs = predict_val(model, arrays, cell, device, precision)
    pred = (probs >= cell.train.threshold).astype(np.uint8)
    truth = arrays["val_mask"].astype(np.uint8)
    patients = arrays["val_patient"].astype(str)
    if cell.train.postprocess != "none":  # per patient, on its slices stacked in slice order
        order = arrays["val_slice"] if "val_slice" in arrays else np.arange(len(pred))
        for p in np.unique(patients):
            idx = np.flatnonzero(patients == p)
            idx = idx[np.argsort(order[idx], kind="stable")]
            pred[idx] = postprocess_volume(pred[idx], cell)
    frame = volume_metrics(list(pred), list(truth), list(patients))
    frame = frame.rename(columns={frame.columns[0]: "case_id"}) if "case_id" not in frame else frame
    # per-case loss: the loss of the logits of each patient's slices (logit = log(p / (1 - p)))
    losses = {}
    with torch.no_grad():
        for p in np.unique(patients):
            sel = patients == p
            pr = torch.from_numpy(np.clip(probs[sel], 1e-6, 1 - 1e-6))[:, None]
            logits = torch.log(pr) - torch.log1p(-pr)
            tgt = torch.from_numpy(truth[sel][:, None].astype(np.float32))
            losses[p] = float(loss_fn(logits, tgt))
    frame["case_loss"] = frame["case_id"].map(losses)  # "loss" is the grid axis (the loss function)
    predictions = {}
    for i in examples if examples is not None else []:
        predictions[f"slice{i}/image"] = arrays["val_image"][i].astype(np.float16)
        predictions[f"slice{i}/truth"] = truth[i]
        predictions[f"slice{i}/pred"] = pred[i]
        predictions[f"slice{i}/prob"] = probs[i].astype(np.float16)
    return frame, predictions


def example_slices(arrays: dict, n: int) -> list[int]:
    """Validation slices to show: tumour areas from small to large, plus the most irregular outline."""
    masks = arrays["val_mask"]
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    idx = np.flatnonzero(areas > 0)
    if idx.size == 0:
        return list(range(min(n, len(masks))))
    order = idx[np.argsort(areas[idx], kind="stable")]
    picks = [int(order[int(round(q * (len(order) - 1)))]) for q in np.linspace(0, 1, max(n - 1, 1))]
    # irregularity: boundary pixels per sqrt(area), the most irregular outline among the rest
    edges = np.array([_boundary(masks[i]) / np.sqrt(areas[i]) for i in order])
    picks.append(int(order[int(np.argmax(edges))]))
    return list(dict.fromkeys(picks))[:n]


def _boundary(mask: np.ndarray) -> int:
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return int((m & ~inner).sum())

