"""LGG MRI segmentation (Kaggle ``kaggle_3m``, Buda et al. 2019) reader.

Layout: ``kaggle_3m/TCGA_<inst>_<id>_<date>/TCGA_<inst>_<id>_<date>_<n>.tif``
(256×256×3 uint8: pre-contrast, FLAIR, post-contrast) and ``…_<n>_mask.tif``
(256×256 uint8 in {0, 255}). ``root`` is the folder holding the ``TCGA_*``
folders or a parent holding ``kaggle_3m``. Slices are ordered by their number
as an integer (text order would put 10 before 2); each image must have its
mask partner and vice versa. TIFFs are read with tifffile, which decodes both
the release's uncompressed files and zlib-compressed copies.

Result per patient: ``image`` (3, H, W, S) float32 with the raw 0-255 values,
``mask`` (H, W, S) uint8 {0, 1} (255 → 1), ``spacing`` (1, 1, 1): the release
ships no geometry, so pixel units are all that is known.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from seglib.data.case import Case
from seglib.data.channels import CHANNELS as DATASET_CHANNELS, channels_of
from seglib.data.integrity import binary_mask, load_tiff
from seglib.registry import look_up

log = logging.getLogger(__name__)

SLICE_RE = re.compile(r"^(?P<pid>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)
CHANNELS = {name: i for i, name in enumerate(DATASET_CHANNELS["lgg"])}  # channel → index in the TIFF


def find_lgg_root(root: Path) -> Path:
    """The folder holding the ``TCGA_*`` patient folders."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"lgg root {root} is not a folder.")
    for cand in (root, root / "kaggle_3m", root / "lgg" / "kaggle_3m", root / "lgg-mri-segmentation" / "kaggle_3m"):
        if cand.is_dir() and any(p.is_dir() and p.name.startswith("TCGA_") for p in cand.iterdir()):
            return cand
    raise ValueError(f"No TCGA_* patient folders under {root}: expected kaggle_3m/TCGA_<inst>_<id>_<date>/.")


def slice_pairs(folder: Path) -> list[tuple[int, Path, Path]]:
    """``[(n, image, mask), ...]`` sorted by slice number ``n`` (int order).

    A slice with only an image or only a mask raises ``ValueError`` naming it.
    """
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for p in folder.iterdir():
        m = SLICE_RE.match(p.name)
        if not m:
            continue
        n = int(m.group("n"))
        target = masks if m.group("mask") else images
        if n in target:
            raise ValueError(f"{p}: slice {n} appears twice in {folder} (also {target[n].name}).")
        target[n] = p
    for n in sorted(set(images) - set(masks)):
        raise ValueError(f"{images[n]}: image slice {n} has no mask partner (expected {images[n].stem}_mask.tif).")
    for n in sorted(set(masks) - set(images)):
        partner = masks[n].name.replace("_mask", "")
        raise ValueError(f"{masks[n]}: mask slice {n} has no image partner (expected {partner}).")
    return [(n, images[n], masks[n]) for n in sorted(images)]


def read_patient(folder: Path, channel_idx: list[int], channel_names: list[str]) -> Case:
    pairs = slice_pairs(folder)
    if not pairs:
        raise ValueError(f"{folder}: no TCGA_*_<n>.tif slices found.")
    imgs, msks = [], []
    ref_shape = None
    for _, ip, mp in pairs:
        im = load_tiff(ip)
        if im.ndim != 3 or im.shape[-1] != 3:
            raise ValueError(f"{ip}: expected an (H, W, 3) RGB slice, got shape {im.shape}.")
        mk = load_tiff(mp)
        if mk.ndim == 3:  # some tools write greyscale masks as RGB: accept identical channels
            if not (mk == mk[..., :1]).all():
                raise ValueError(f"{mp}: expected a greyscale mask, got {mk.shape} with differing channels.")
            mk = mk[..., 0]
        if ref_shape is None:
            ref_shape = im.shape[:2]
        if im.shape[:2] != ref_shape:
            raise ValueError(f"{ip}: slice shape {im.shape[:2]} differs from the patient's {ref_shape}.")
        if mk.shape != ref_shape:
            raise ValueError(f"{mp}: mask shape {mk.shape} does not match its image {im.shape[:2]}.")
        imgs.append(im[..., channel_idx])
        msks.append(binary_mask(mk, mp, foreground=255))
    image = np.stack(imgs, axis=-1).transpose(2, 0, 1, 3).astype(np.float32)  # (C, H, W, S)
    mask = np.stack(msks, axis=-1)  # (H, W, S)
    numbers = [n for n, _, _ in pairs]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        log.warning("lgg: %s has gaps in its slice numbers: %s", folder.name, numbers)
    return Case(
        id=folder.name,
        image=image,
        mask=mask,
        spacing=(1.0, 1.0, 1.0),
        paths={"folder": folder},
        affine=None,
        meta={
            "dataset": "lgg",
            "channels": channel_names,
            "slice_numbers": numbers,
            "image_files": [ip for _, ip, _ in pairs],
            "mask_files": [mp for _, _, mp in pairs],
            "spacing_known": False,
        },
    )


def read_lgg(root: Path, channels=None, ids=None) -> list[Case]:
    """Read every patient folder. ``channels`` ⊂ {pre_contrast, flair, post_contrast}; default all three."""
    names = [c.lower() for c in channels_of("lgg", channels)]
    idx = [look_up(c, CHANNELS, "lgg channel") for c in names]
    base = find_lgg_root(root)
    folders = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("TCGA_"))
    if ids is not None:
        wanted = set(ids)
        folders = [f for f in folders if f.name in wanted]
    from tqdm.auto import tqdm

    return [read_patient(f, idx, names) for f in tqdm(folders, desc="lgg patients", disable=None, leave=False)]
