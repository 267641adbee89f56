"""nnU-Net raw layout (v2; the Medical Segmentation Decathlon after ``nnUNetv2_convert_MSD_dataset``) reader.

Layout::

    DatasetNNN_Name/dataset.json
    DatasetNNN_Name/imagesTr/<case>_0000.nii.gz … <case>_000K.nii.gz    one file per channel
    DatasetNNN_Name/labelsTr/<case>.nii.gz                               integer label map
    DatasetNNN_Name/imagesTs/<case>_0000.nii.gz …                        optional, no labels

``dataset.json`` names the channels (``channel_names``: ``{"0": "T2", "1": "ADC"}``; the Decathlon's
``modality`` is accepted too), the labels (``labels``: ``{"background": 0, "tumour": 1}``; the Decathlon's
``{"0": "background", ...}`` too) and the ``file_ending`` (``.nii.gz`` or ``.nii``). Channel names are
lower-cased (``data.channels: [t2, adc]``). A case is binary here: its foreground is one label (by name or
value) or every non-zero label (``foreground=None``), the ``data.foreground`` option. Region-based labels
(lists of values) and 4D images (the Decathlon's raw ``imagesTr``: convert them with nnU-Net first) are errors
naming the file. ``root`` is the ``DatasetNNN_Name`` folder or a folder (``nnUNet_raw``) holding exactly one.

Every case goes through the same checks as the other readers: each channel and the label map on one grid
(shape and affine, :func:`seglib.data.integrity.check_same_grid`), label values among the dataset's labels,
then :func:`seglib.data.integrity.verify_integrity` in :func:`seglib.data.load_cases`. Test cases
(``imagesTs``) and training images without a label map come back with ``mask=None``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglib.data.case import Case
from seglib.data.integrity import check_same_grid, load_nifti
from seglib.registry import suggest

log = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
FILE_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class NnunetDataset:
    """What ``dataset.json`` says: the folder, channel names by index, labels (name → value), file ending."""

    root: Path
    channels: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str

    def foreground_values(self, foreground=None) -> tuple[int, ...]:
        """The label values that are foreground: ``foreground`` a label name (any case) or value, or ``None``
        for every non-zero label. An unknown one is a ValueError naming ``dataset.json`` and its labels."""
        nonzero = tuple(sorted(v for v in self.labels.values() if v != 0))
        if foreground is None or (isinstance(foreground, str) and foreground.strip().lower() == "all"):
            if not nonzero:
                raise ValueError(f"{self.root / DATASET_JSON}: labels {self.labels} name no non-zero label.")
            return nonzero
        listed = ", ".join(f"{k}={v}" for k, v in self.labels.items())
        text = str(foreground).strip()
        if re.fullmatch(r"-?\d+", text):
            value = int(text)
            if value not in nonzero:
                raise ValueError(f"data.foreground = {foreground!r}: {self.root / DATASET_JSON} has no non-zero "
                                 f"label {value}; its labels: {listed}.")
            return (value,)
        by_name = {k.lower(): v for k, v in self.labels.items()}
        if text.lower() not in by_name or by_name[text.lower()] == 0:
            raise ValueError(f"data.foreground = {foreground!r}: {self.root / DATASET_JSON} has no such "
                             f"foreground label.{suggest(text.lower(), list(by_name))} Its labels: {listed}.")
        return (by_name[text.lower()],)


def find_nnunet_root(root: Path) -> Path:
    """The ``DatasetNNN_Name`` folder: ``root`` itself when it holds ``dataset.json``, else its only child that does."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"nnunet root {root} is not a folder.")
    if (root / DATASET_JSON).is_file():
        return root
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / DATASET_JSON).is_file())
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"Several nnU-Net datasets under {root}: {', '.join(p.name for p in found)}; pass one.")
    raise ValueError(f"No {DATASET_JSON} in {root} or its sub-folders: expected DatasetNNN_Name/{DATASET_JSON} "
                     f"with imagesTr/ and labelsTr/.")


def _index_map(raw, path: Path, key: str) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: {key!r} must map channel indices to names, e.g. {{\"0\": \"T2\"}}; got {raw!r}.")
    try:
        out = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {key!r} keys must be channel indices \"0\", \"1\", ...; got {list(raw)}.") from None
    if sorted(out) != list(range(len(out))):
        raise ValueError(f"{path}: {key!r} indices must be 0..{len(out) - 1}; got {sorted(out)}.")
    return out


def _labels(raw, path: Path) -> dict[str, int]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: 'labels' must map label names to values, e.g. {{\"background\": 0, \"tumour\": 1}}.")
    if all(re.fullmatch(r"\d+", str(k)) for k in raw):  # the Decathlon's {"0": "background", "1": "edema"}
        raw = {str(v): int(k) for k, v in raw.items()}
    out = {}
    for name, value in raw.items():
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: label {name!r} = {value}: region-based labels are not supported; expected "
                             f"one integer value per label.")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: label {name!r} = {value!r}: expected a non-negative integer.")
        out[str(name)] = value
    if 0 not in out.values():
        raise ValueError(f"{path}: labels {out} have no background (value 0).")
    return out


def read_dataset_json(root: Path) -> NnunetDataset:
    """Parse ``dataset.json`` of the dataset at (or under) ``root``; errors name the file and the key."""
    base = find_nnunet_root(root)
    path = base / DATASET_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"Cannot read {path}: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with channel_names, labels and file_ending.")
    key = "channel_names" if "channel_names" in meta else "modality" if "modality" in meta else None
    if key is None:
        raise ValueError(f"{path}: no 'channel_names' (nnU-Net v2) or 'modality' (Decathlon); expected e.g. "
                         f"\"channel_names\": {{\"0\": \"T2\"}}.")
    names = _index_map(meta[key], path, key)
    channels = tuple(names[i].strip().lower() for i in range(len(names)))
    if len(set(channels)) != len(channels):
        raise ValueError(f"{path}: channel names {list(channels)} repeat (compared lower-case); expected unique names.")
    if "labels" not in meta:
        raise ValueError(f"{path}: no 'labels'; expected e.g. \"labels\": {{\"background\": 0, \"tumour\": 1}}.")
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending not in FILE_ENDINGS:
        raise ValueError(f"{path}: file_ending {ending!r} is not read here; expected one of {', '.join(FILE_ENDINGS)}.")
    return NnunetDataset(base, channels, _labels(meta["labels"], path), ending)


def dataset_channels(root: Path) -> tuple[str, ...]:
    """The channel names (lower-case) of the nnU-Net dataset at or under ``root``."""
    return read_dataset_json(root).channels


def _images(folder: Path, ds: NnunetDataset) -> dict[str, dict[int, Path]]:
    """``{case: {channel index: file}}`` of ``imagesTr`` or ``imagesTs``; every case must have every channel."""
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ds.file_ending) + "$")
    out: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if m and p.is_file():
            out.setdefault(m.group("case"), {})[int(m.group("ch"))] = p
    k = len(ds.channels)
    for case, files in out.items():
        extra = sorted(set(files) - set(range(k)))
        if extra:
            raise ValueError(f"{files[extra[0]]}: channel {extra[0]:04d}, but {ds.root / DATASET_JSON} names {k} "
                             f"channel(s) (0000..{k - 1:04d}).")
        for i in range(k):
            if i not in files:
                raise ValueError(f"{folder / (case + f'_{i:04d}' + ds.file_ending)} is missing: case {case} needs "
                                 f"one file per channel of {ds.root / DATASET_JSON} ({', '.join(ds.channels)}).")
    return out


def read_label(path: Path, ds: NnunetDataset, foreground: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(binary uint8 mask, affine)`` of a label map; a value that is not one of the dataset's labels is an error."""
    raw, affine, _ = load_nifti(path, kind="mask")
    values = np.unique(raw)
    allowed = np.asarray(sorted(ds.labels.values()))
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        raise ValueError(f"Label map {path} holds values {', '.join(f'{v:g}' for v in bad[:8].astype(float))} that "
                         f"{ds.root / DATASET_JSON} does not list; expected only {allowed.tolist()}.")
    return np.isin(raw, foreground).astype(np.uint8), affine


def read_nnunet(root: Path, channels=None, ids=None, foreground=None) -> list[Case]:
    """Every case of ``imagesTr`` (with its ``labelsTr`` map) and ``imagesTs`` (no mask).

    ``channels``: names from ``dataset.json`` (any case), in the order wanted; default all of them.
    ``foreground``: a label name or value, or ``None`` for every non-zero label (:meth:`NnunetDataset.foreground_values`).
    """
    ds = read_dataset_json(root)
    wanted = [c.strip().lower() for c in (channels or ds.channels)]
    for c in wanted:
        if c not in ds.channels:
            raise ValueError(f"nnunet channel {c!r} is not in {ds.root / DATASET_JSON}.{suggest(c, ds.channels)} "
                             f"Its channels: {', '.join(ds.channels)}.")
    idx = [ds.channels.index(c) for c in wanted]
    fg = ds.foreground_values(foreground)
    train, test = _images(ds.root / "imagesTr", ds), _images(ds.root / "imagesTs", ds)
    both = sorted(set(train) & set(test))
    if both:
        raise ValueError(f"{ds.root}: case {both[0]} is in both imagesTr and imagesTs; expected unique case ids.")
    if not train and not test:
        raise ValueError(f"No images in {ds.root / 'imagesTr'}: expected <case>_0000{ds.file_ending}, ...")
    labels_dir = ds.root / "labelsTr"
    labels = {p.name[: -len(ds.file_ending)]: p for p in sorted(labels_dir.glob(f"*{ds.file_ending}"))} \
        if labels_dir.is_dir() else {}
    orphans = sorted(set(labels) - set(train))
    if orphans:
        log.warning("nnunet: %d label map(s) without images in imagesTr (ignored): %s", len(orphans), ", ".join(orphans))
    cases, unlabelled = [], []
    for split, group in (("train", train), ("test", test)):
        for cid in sorted(group):
            if ids is not None and cid not in ids:
                continue
            files = group[cid]
            ref = files[0]
            volumes, affines, spacing, ref_shape, ref_affine = [], {}, None, None, None
            for i, name in zip(idx, wanted):
                vol, aff, zooms = load_nifti(files[i])
                if ref_shape is None:
                    ref_shape, ref_affine, spacing = vol.shape, aff, zooms
                check_same_grid(files[i], vol.shape, aff, files[idx[0]], ref_shape, ref_affine)
                volumes.append(vol)
                affines[name] = aff
            if idx[0] != 0:  # channel 0 defines the case's grid even when not read
                from seglib.data.integrity import read_header

                shape0, aff0 = read_header(ref)
                check_same_grid(files[idx[0]], ref_shape, ref_affine, ref, shape0, aff0)
            paths = {name: files[i] for i, name in zip(idx, wanted)}
            mask = None
            if split == "train" and cid in labels:
                mask, mask_aff = read_label(labels[cid], ds, fg)
                check_same_grid(labels[cid], mask.shape, mask_aff, files[idx[0]], ref_shape, ref_affine)
                affines["mask"], paths["mask"] = mask_aff, labels[cid]
            else:
                unlabelled.append(cid)
            cases.append(Case(
                id=cid, image=np.stack(volumes).astype(np.float32, copy=False), mask=mask,
                spacing=tuple(float(s) for s in spacing), paths=paths, affine=ref_affine,
                meta={"dataset": "nnunet", "channels": wanted, "affines": affines, "split": split,
                      "foreground": list(fg), "dataset_json": str(ds.root / DATASET_JSON)}))
    if unlabelled:
        log.warning("nnunet: %d case(s) have no label map (returned with mask=None, usable for prediction only): %s",
                    len(unlabelled), ", ".join(unlabelled))
    return cases
