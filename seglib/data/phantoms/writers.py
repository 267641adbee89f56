"""Synthetic datasets written in each real dataset's own on-disk layout.

``write_dataset("isles22", root, n_cases)`` writes files that ``load_cases``
reads exactly as it reads the real release, so the quick profile exercises the
real readers. NIfTI files are written with nibabel, TIFF slices with tifffile;
the anatomy comes from ``seglib.data.phantoms.shapes``.

Layouts written:

* ``isles22``: the official nested release, ``ISLES-2022/sub-strokecaseNNNN/
  ses-0001/dwi/…_dwi.nii.gz`` and ``…_adc.nii.gz``, ``…/anat/…_FLAIR.nii.gz``
  (own grid: finer in-plane, thicker slices, rotated), masks in
  ``ISLES-2022/derivatives/sub-…/ses-0001/…_msk.nii.gz``. The last
  ``unlabelled`` case(s) have no mask and no FLAIR (as the real
  sub-strokecase0001 sample).
* ``atlas2``: ``ATLAS_2/Training/RNNN/sub-rNNNsMMM/ses-1/anat/…_T1w.nii.gz``
  with ``…_label-L_desc-T1lesion_mask.nii.gz`` beside it.
* ``prostatex``: ``Files/prostate/Images/ProstateX-NNNN_t2_tse_tra_K.nii.gz``
  (uint16) and ``Files/prostate/mask_prostate/ProstateX-NNNN.nii.gz``; every
  fourth case (from the second) has a smaller matrix and coarser spacing, as the
  320×320 cases of the release; the last ``unlabelled`` image(s) have no mask.
* ``nnunet``: ``Dataset001_Phantom/dataset.json`` (channels DWI, ADC; labels background 0, lesion 1, rim 2),
  ``imagesTr/phantom_NNN_0000.nii.gz``, ``_0001``, ``labelsTr/phantom_NNN.nii.gz``; the last ``unlabelled``
  case(s) in ``imagesTs/`` without labels.
* ``lgg``: ``kaggle_3m/TCGA_<inst>_<id>_<date>/…_<n>.tif`` (H×W×3 uint8) and
  ``…_<n>_mask.tif`` ({0, 255}); odd-numbered patients zlib-compressed, the
  others uncompressed (the reader must take both).

Each case draws from ``np.random.default_rng([seed, dataset_number, k])``, so
case k is the same whatever ``n_cases`` is, and datasets are independent. A ``phantom.json`` manifest records the
parameters and their hash; calling again with the same parameters reuses the
folder, different parameters rewrite it, and a non-empty folder without a
manifest is never overwritten. Writes go to a temporary sibling folder that is
renamed into place, so a half-written dataset is never visible.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from seglib.data.phantoms import shapes as ps
from seglib.hashing import stable_hash
from seglib.registry import check_kwargs, look_up

log = logging.getLogger(__name__)

#: format version of the manifest; the generators' source hash is recorded as well,
#: so editing the generators also invalidates phantoms written before
PHANTOM_VERSION = 1
MANIFEST = "phantom.json"


def _affine(spacing, shape, flip_x=True, angle_deg=0.0) -> np.ndarray:
    """RAS affine with the grid centred on the origin, optionally rotated about z."""
    s = np.asarray(spacing, float)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    direction = rot @ np.diag([-1.0 if flip_x else 1.0, 1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = direction * s
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
    return aff


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _resample_to(data: np.ndarray, src_aff, dst_shape, dst_aff) -> np.ndarray:
    """Linear resampling of a source-grid map onto another grid (scipy)."""
    from scipy.ndimage import affine_transform

    m = np.linalg.inv(src_aff) @ dst_aff
    return affine_transform(data, m[:3, :3], offset=m[:3, 3], output_shape=tuple(dst_shape),
                            order=1, mode="constant", cval=0.0).astype(np.float32)


# ----------------------------------------------------------------- writers
def _write_isles22(out: Path, n_cases, shape, seed, knobs) -> None:
    stream = 1
    shape = tuple(shape or (48, 48, 48))
    spacing = knobs.pop("spacing", 2.0)
    unlabelled = knobs.pop("unlabelled", 1)
    mixed_units = knobs.pop("mixed_adc_units", False)
    base = out / "ISLES-2022"
    for i in range(n_cases):
        rng = np.random.default_rng([seed, stream, i])
        sub = f"sub-strokecase{i + 1:04d}"
        labelled = i < n_cases - unlabelled
        maps, lesion = ps.stroke_volumes(rng, shape, ("dwi", "adc", "flair"), **knobs)
        aff = _affine((spacing,) * 3, shape)
        ses = base / sub / "ses-0001"
        _save_nifti(maps["dwi"], aff, ses / "dwi" / f"{sub}_ses-0001_dwi.nii.gz")
        adc = maps["adc"] * np.float32(1e-3) if mixed_units and i % 2 else maps["adc"]  # mm²/s, not 10⁻³ mm²/s
        _save_nifti(adc, aff, ses / "dwi" / f"{sub}_ses-0001_adc.nii.gz")
        if labelled:
            f_shape = (shape[0] * 2, shape[1] * 2, max(2, shape[2] // 2))
            f_aff = _affine((spacing / 2, spacing / 2, spacing * 2), f_shape, angle_deg=rng.uniform(-6, 6))
            f_aff[:3, 3] += rng.uniform(-2, 2, 3)
            flair = _resample_to(maps["flair"], aff, f_shape, f_aff)
            _save_nifti(flair, f_aff, ses / "anat" / f"{sub}_ses-0001_FLAIR.nii.gz")
            der = base / "derivatives" / sub / "ses-0001"
            _save_nifti(lesion.astype(np.uint8), aff, der / f"{sub}_ses-0001_msk.nii.gz")


def _write_atlas2(out: Path, n_cases, shape, seed, knobs) -> None:
    stream = 2
    shape = tuple(shape or (48, 48, 48))
    spacing = knobs.pop("spacing", 2.0)
    for i in range(n_cases):
        rng = np.random.default_rng([seed, stream, i])
        cohort, k = i // 5 + 1, i % 5 + 1
        sub = f"sub-r{cohort:03d}s{k:03d}"
        maps, lesion = ps.stroke_volumes(rng, shape, ("t1w",), **knobs)
        aff = _affine((spacing,) * 3, shape)
        anat = out / "ATLAS_2" / "Training" / f"R{cohort:03d}" / sub / "ses-1" / "anat"
        stem = f"{sub}_ses-1_space-MNI152NLin2009aSym"
        _save_nifti(maps["t1w"], aff, anat / f"{stem}_T1w.nii.gz")
        _save_nifti(lesion.astype(np.uint8), aff, anat / f"{stem}_label-L_desc-T1lesion_mask.nii.gz")


def _write_prostatex(out: Path, n_cases, shape, seed, knobs) -> None:
    stream = 3
    shape = tuple(shape or (96, 96, 12))
    spacing = knobs.pop("spacing", (2.0, 2.0, 3.0))
    unlabelled = knobs.pop("unlabelled", 1)
    base = out / "Files" / "prostate"
    for i in range(n_cases):
        rng = np.random.default_rng([seed, stream, i])
        pid = f"ProstateX-{i:04d}"
        if i % 4 == 1:  # the release's 320×320 at 0.625 mm next to 384×384 at 0.5 mm
            f = 320 / 384
            sh = (round(shape[0] * f), round(shape[1] * f), shape[2] + 1)
            sp = (spacing[0] / f, spacing[1] / f, spacing[2] * 1.2)
        else:
            sh, sp = shape, tuple(spacing)
        img, gland = ps.prostate_volume(rng, sh, **knobs)
        aff = _affine(sp, sh)
        series = int(rng.integers(3, 12))
        _save_nifti(np.clip(np.round(img), 0, 65535).astype(np.uint16), aff,
                    base / "Images" / f"{pid}_t2_tse_tra_{series}.nii.gz")
        if i < n_cases - unlabelled:
            _save_nifti(gland.astype(np.uint8), aff, base / "mask_prostate" / f"{pid}.nii.gz")


def _write_nnunet(out: Path, n_cases, shape, seed, knobs) -> None:
    """Stroke-like volumes as an nnU-Net raw dataset: two channels, labels lesion (1) and a one-voxel rim
    around it (2), the last ``unlabelled`` case(s) in ``imagesTs``."""
    from scipy.ndimage import binary_dilation

    from seglib.data.channels import CHANNELS, NNUNET_PHANTOM_LABELS

    stream = 5
    shape = tuple(shape or (48, 48, 48))
    spacing = knobs.pop("spacing", 2.0)
    unlabelled = knobs.pop("unlabelled", 1)
    base = out / "Dataset001_Phantom"
    channels = CHANNELS["nnunet"]
    for i in range(n_cases):
        rng = np.random.default_rng([seed, stream, i])
        case = f"phantom_{i + 1:03d}"
        maps, lesion = ps.stroke_volumes(rng, shape, channels, **knobs)
        aff = _affine((spacing,) * 3, shape)
        labelled = i < n_cases - unlabelled
        images = base / ("imagesTr" if labelled else "imagesTs")
        for k, ch in enumerate(channels):
            _save_nifti(maps[ch], aff, images / f"{case}_{k:04d}.nii.gz")
        if labelled:
            rim = binary_dilation(lesion) & ~lesion
            label = np.where(lesion, NNUNET_PHANTOM_LABELS["lesion"], np.where(rim, NNUNET_PHANTOM_LABELS["rim"], 0))
            _save_nifti(label.astype(np.uint8), aff, base / "labelsTr" / f"{case}.nii.gz")
    meta = {"name": "Phantom", "description": "seglib synthetic phantom (stroke-like)",
            "channel_names": {str(k): ch.upper() for k, ch in enumerate(channels)},  # the reader lower-cases them
            "labels": dict(NNUNET_PHANTOM_LABELS), "numTraining": n_cases - unlabelled, "file_ending": ".nii.gz"}
    (base / "dataset.json").write_text(json.dumps(meta, indent=1))


_INSTITUTIONS = ("CS", "DU", "EZ", "FG", "HT")


def _write_lgg(out: Path, n_cases, shape, seed, knobs) -> None:
    stream = 4
    import tifffile

    shape = tuple(shape or (64, 64, 16))
    base = out / "kaggle_3m"
    for i in range(n_cases):
        rng = np.random.default_rng([seed, stream, i])
        date = f"{int(rng.integers(1983, 2004))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        pid = f"TCGA_{_INSTITUTIONS[i % 5]}_{(4941 + 37 * i) % 10000:04d}_{date}"
        image, tumour = ps.lgg_volume(rng, shape, **knobs)
        folder = base / pid
        folder.mkdir(parents=True, exist_ok=True)
        comp = "zlib" if i % 2 else None
        for s in range(shape[2]):
            tifffile.imwrite(folder / f"{pid}_{s + 1}.tif", np.ascontiguousarray(image[:, :, :, s].transpose(1, 2, 0)),
                             photometric="rgb", compression=comp)
            tifffile.imwrite(folder / f"{pid}_{s + 1}_mask.tif", (tumour[:, :, s] * 255).astype(np.uint8),
                             photometric="minisblack", compression=comp)


#: dataset → (writer, allowed knobs with defaults)
_COMMON = {"contrast": 1.0, "noise": None, "bias": None}
WRITERS = {
    "isles22": (_write_isles22, {**_COMMON, "lesions": (2, 5), "lesion_radius": (1.8, 8.0),
                                 "spacing": 2.0, "unlabelled": 1, "mixed_adc_units": False}),
    "atlas2": (_write_atlas2, {**_COMMON, "lesions": (2, 5), "lesion_radius": (1.8, 8.0), "spacing": 2.0}),
    "prostatex": (_write_prostatex, {**_COMMON, "spacing": (2.0, 2.0, 3.0), "unlabelled": 1}),
    "lgg": (_write_lgg, {**_COMMON, "tumour_radius": (0.12, 0.32)}),
    "nnunet": (_write_nnunet, {**_COMMON, "lesions": (2, 5), "lesion_radius": (1.8, 8.0), "spacing": 2.0,
                               "unlabelled": 1}),
}


def _code_hash() -> str:
    """Hash of the generator sources: any change to them invalidates old phantoms."""
    import hashlib

    h = hashlib.sha256()
    for mod_file in (__file__, ps.__file__):
        h.update(Path(mod_file).read_bytes())
    return h.hexdigest()[:16]


def _manifest(dataset, n_cases, shape, seed, knobs) -> dict:
    params = {"dataset": dataset, "n_cases": n_cases, "shape": list(shape) if shape else None,
              "seed": seed, "knobs": knobs, "version": PHANTOM_VERSION, "code": _code_hash()}
    return {**params, "hash": stable_hash(params)}


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write_dataset(dataset: str, root, n_cases: int, shape=None, seed: int = 0, **knobs) -> Path:
    """Write ``n_cases`` synthetic cases of ``dataset`` under ``root``; return ``root``.

    Args:
        dataset: ``"isles22"``, ``"atlas2"``, ``"prostatex"``, ``"lgg"`` or ``"nnunet"``.
        root: folder to create; pass it to ``load_cases(dataset, root)``.
        n_cases: number of cases (patients), including the unlabelled ones.
        shape: voxel grid (stroke default 48³ at 2 mm; prostate 96×96×12 at
            2×2×3 mm; LGG 64×64×16 slices).
        seed: case k is drawn from ``default_rng([seed, dataset_number, k])``.
        knobs: ``contrast`` (target/tissue contrast factor, 1.0 default; lower is
            harder), ``noise`` (noise sd relative to a reference tissue),
            ``bias`` (std of the log bias field); stroke: ``lesions`` (min, max
            per case), ``lesion_radius`` (min, max voxels at 48³), ``spacing``;
            prostate: ``spacing``; ISLES / prostate: ``unlabelled`` (cases
            without mask, at the end); ISLES: ``mixed_adc_units`` (every second case stores its ADC in
            mm²/s, the others in 10⁻³ mm²/s, as the real centres differ); LGG: ``tumour_radius`` (fraction of the
            half-width).
    """
    writer, allowed = look_up(dataset, WRITERS, "phantom dataset")
    check_kwargs(knobs, allowed, f"write_dataset({dataset!r})")
    if int(n_cases) < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}.")
    if shape is not None and (len(shape) != 3 or min(shape) < 4):
        raise ValueError(f"shape must be three sizes of at least 4, got {shape}.")
    unl = knobs.get("unlabelled", allowed.get("unlabelled", 0))
    if unl and unl >= n_cases:
        raise ValueError(f"n_cases={n_cases} leaves no labelled case with unlabelled={unl}.")
    params = {k: v for k, v in knobs.items() if v is not None}
    root = Path(root)
    manifest = _manifest(dataset, int(n_cases), shape, int(seed), params)
    old = _read_manifest(root)
    if old is not None and old.get("hash") == manifest["hash"]:
        log.info("Reusing phantom %s at %s (hash %s)", dataset, root, manifest["hash"])
        return root
    if root.exists() and any(root.iterdir()) and old is None:
        raise ValueError(f"{root} exists, is not empty and holds no {MANIFEST}: refusing to overwrite it.")

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        gen_knobs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()}
        writer(tmp, int(n_cases), shape, int(seed), gen_knobs)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if old is not None:
            log.warning("Phantom parameters changed: rewriting %s", root)
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:  # another process put it there first
            again = _read_manifest(root)
            if again is None or again.get("hash") != manifest["hash"]:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("Wrote %d %s phantom case(s) to %s", n_cases, dataset, root)
    return root
