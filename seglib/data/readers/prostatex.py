"""PROSTATEx axial T2 with whole-gland masks, in the Cuocolo et al. layout.

Layout (github rcuocolo/PROSTATEx_masks)::

    Files/prostate/Images/ProstateX-NNNN_t2_tse_tra_K.nii.gz
    Files/prostate/mask_prostate/ProstateX-NNNN.nii.gz

``root`` may be the ``prostate`` folder or any parent of it. Each case keeps
its own matrix (384×384 or 320×320 in the release); an image without a mask is
returned with ``mask=None`` and reported with a warning; a mask without an
image is reported too. Files are read with nibabel.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from seglib.data.case import Case
from seglib.data.channels import CHANNELS as DATASET_CHANNELS
from seglib.data.integrity import binary_mask, load_nifti

log = logging.getLogger(__name__)

IMAGE_RE = re.compile(r"^(?P<id>ProstateX-\d+)_t2_tse_tra(?:_(?P<series>\d+))?\.nii(\.gz)?$", re.IGNORECASE)
MASK_RE = re.compile(r"^(?P<id>ProstateX-\d+)\.nii(\.gz)?$", re.IGNORECASE)
CHANNELS = DATASET_CHANNELS["prostatex"]


def find_prostate_root(root: Path) -> Path:
    """The folder holding ``Images`` and ``mask_prostate`` at or below ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"prostatex root {root} is not a folder.")
    for cand in (root, root / "prostate", root / "Files" / "prostate", root / "prostatex" / "Files" / "prostate"):
        if (cand / "Images").is_dir():
            return cand
    found = sorted(p.parent for p in root.rglob("Images") if p.is_dir() and (p.parent / "mask_prostate").is_dir())
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(f"Several PROSTATEx layouts under {root}: {', '.join(map(str, found))}; pass one.")
    raise ValueError(
        f"No PROSTATEx layout under {root}: expected Files/prostate/Images/ProstateX-NNNN_t2_tse_tra_K.nii.gz."
    )


def read_prostatex(root: Path, channels=None, ids=None) -> list[Case]:
    """Read every T2 image and its gland mask. ``channels`` may only be ``["t2"]``."""
    if channels is not None and [c.lower() for c in channels] != list(CHANNELS):
        raise ValueError(f"prostatex has one channel, ['t2']; got {list(channels)}.")
    base = find_prostate_root(root)
    images: dict[str, Path] = {}
    for p in sorted((base / "Images").iterdir()):
        m = IMAGE_RE.match(p.name)
        if not m:
            continue
        pid = m.group("id")
        if pid in images:
            raise ValueError(f"Two T2 images for {pid}: {images[pid]} and {p}; expected one per patient.")
        images[pid] = p
    masks: dict[str, Path] = {}
    mask_dir = base / "mask_prostate"
    if mask_dir.is_dir():
        for p in sorted(mask_dir.iterdir()):
            m = MASK_RE.match(p.name)
            if m:
                masks[m.group("id")] = p
    orphans = sorted(set(masks) - set(images))
    if orphans:
        log.warning("prostatex: %d mask(s) without an image (ignored): %s", len(orphans), ", ".join(orphans))
    if not images:
        raise ValueError(f"No ProstateX-NNNN_t2_tse_tra_K.nii.gz images in {base / 'Images'}.")

    cases, unmasked = [], []
    for pid in sorted(images):
        if ids is not None and pid not in ids:
            continue
        img_path = images[pid]
        vol, affine, zooms = load_nifti(img_path)
        paths = {"t2": img_path}
        affines = {"t2": affine}
        mask = None
        if pid in masks:
            raw, mask_aff, _ = load_nifti(masks[pid], kind="mask")
            mask = binary_mask(raw, masks[pid])
            paths["mask"] = masks[pid]
            affines["mask"] = mask_aff
        else:
            unmasked.append(pid)
        m = IMAGE_RE.match(img_path.name)
        cases.append(
            Case(
                id=pid,
                image=vol[None].astype(np.float32, copy=False),
                mask=mask,
                spacing=zooms,
                paths=paths,
                affine=affine,
                meta={
                    "dataset": "prostatex",
                    "channels": list(CHANNELS),
                    "series": int(m.group("series")) if m.group("series") else None,
                    "affines": affines,
                },
            )
        )
    if unmasked:
        log.warning(
            "prostatex: %d image(s) have no gland mask (returned with mask=None): %s",
            len(unmasked), ", ".join(unmasked),
        )
    shapes = sorted({c.image.shape[1:] for c in cases})
    if len(shapes) > 1:
        log.info("prostatex: cases keep their own matrix sizes: %s", shapes)
    return cases
