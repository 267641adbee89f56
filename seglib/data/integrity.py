"""Reading files with errors that name them, and nnU-Net-style integrity checks.

``verify_integrity`` plays the role of nnU-Net's ``--verify_dataset_integrity``
(``nnunetv2/experiment_planning/verify_dataset_integrity.py``): every image
channel and its mask share one grid (shape and affine), masks are binary, and
no voxel is NaN or infinite. It is written here because MONAI has no
equivalent for our ``Case`` record. Every failure raises ``ValueError`` naming
the offending file and what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from seglib.data.case import Case

log = logging.getLogger(__name__)

#: affines closer than this (mm, element-wise) describe the same grid
AFFINE_ATOL = 1e-3


def load_nifti(path: Path, *, kind: str = "image"):
    """Read a NIfTI file with nibabel; return ``(array, affine, zooms)``.

    ``kind="image"`` returns float32 (scl_slope/inter applied by nibabel);
    ``kind="mask"`` returns the stored values unscaled-but-exact as float64
    first so that non-integer labels are not silently truncated. Any failure
    (missing, truncated gzip, bad header) becomes ``ValueError`` naming the file.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        if kind == "mask":
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    except Exception as err:  # nibabel raises many types for a corrupt file
        raise ValueError(f"Cannot read NIfTI file {path}: {type(err).__name__}: {err}") from err
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}.")
    return data, affine, zooms


def read_header(path: Path):
    """Shape and affine of a NIfTI file without reading its voxels."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)
    except Exception as err:
        raise ValueError(f"Cannot read NIfTI header of {path}: {type(err).__name__}: {err}") from err


def load_tiff(path: Path) -> np.ndarray:
    """Read a TIFF with tifffile (compressed or not); errors name the file."""
    import tifffile

    path = Path(path)
    try:
        data = np.asarray(tifffile.imread(str(path)))
    except Exception as err:
        raise ValueError(f"Cannot read TIFF file {path}: {type(err).__name__}: {err}") from err
    if data.size == 0:  # tifffile warns and returns an empty array for a file without pages
        raise ValueError(f"Cannot read TIFF file {path}: no image data (corrupt or empty file).")
    return data


def binary_mask(data: np.ndarray, path: Path, foreground: float = 1) -> np.ndarray:
    """Map a mask with values in ``{0, foreground}`` to uint8 ``{0, 1}``.

    Any other value (a label 2, a resampled 0.5, NaN) is an error naming the file.
    """
    is_bg = data == 0
    is_fg = data == foreground
    ok = is_bg | is_fg
    if not ok.all():
        bad = np.unique(np.asarray(data)[~ok])[:8]
        raise ValueError(
            f"Mask {path} must hold only the values {{0, {foreground:g}}}; "
            f"found also {', '.join(f'{v:g}' for v in bad.astype(float))}."
        )
    return is_fg.astype(np.uint8)


def check_same_grid(
    path: Path, shape, affine, ref_path: Path, ref_shape, ref_affine, atol: float = AFFINE_ATOL
) -> None:
    """Raise ``ValueError`` naming ``path`` unless it lies on ``ref_path``'s grid."""
    if tuple(shape) != tuple(ref_shape):
        raise ValueError(
            f"{path}: shape {tuple(shape)} does not match {Path(ref_path).name} "
            f"{tuple(ref_shape)}; expected the same voxel grid."
        )
    if affine is not None and ref_affine is not None and not np.allclose(affine, ref_affine, atol=atol):
        raise ValueError(
            f"{path}: affine differs from {Path(ref_path).name} by up to "
            f"{np.abs(np.asarray(affine) - np.asarray(ref_affine)).max():.4g} mm "
            f"(tolerance {atol:g}); expected the same geometry."
        )


def _path_of(case: Case, role: str) -> str:
    p = case.paths.get(role)
    if p is not None:
        return str(p)
    files = case.meta.get(f"{role}_files")
    if files:
        return f"{Path(files[0]).parent} ({role} slices)"
    return f"case {case.id} ({role})"


def verify_integrity(cases: Iterable[Case], atol: float = AFFINE_ATOL) -> None:
    """Check every case as nnU-Net's ``--verify_dataset_integrity`` does.

    Checks: the image is float32 ``(C, *spatial)`` with only finite values;
    the mask (when present) is uint8, has shape ``image.shape[1:]`` and only
    values {0, 1}; each file's affine recorded in ``meta["affines"]`` is within
    ``atol`` mm of ``case.affine`` (channels listed in ``meta["resampled"]``
    were resampled onto that grid and are exempt). Returns ``None``; raises
    ``ValueError`` naming the first offending file and what was expected.
    """
    n = 0
    for case in cases:
        n += 1
        img = case.image
        channels = list(case.meta.get("channels", []))
        img_role = channels[0] if channels else "image"
        if not isinstance(img, np.ndarray) or img.ndim < 3:
            raise ValueError(
                f"{_path_of(case, img_role)}: expected a channels-first array (C, *spatial), "
                f"got {getattr(img, 'shape', type(img).__name__)}."
            )
        if img.dtype != np.float32:
            raise ValueError(f"{_path_of(case, img_role)}: expected float32 image, got {img.dtype}.")
        for c in range(img.shape[0]):
            finite = np.isfinite(img[c])
            if not finite.all():
                role = channels[c] if c < len(channels) else img_role
                bad = img[c][~finite]
                raise ValueError(
                    f"{_path_of(case, role)}: {bad.size} voxel(s) are NaN or infinite "
                    f"(e.g. {bad.flat[0]}); expected finite intensities."
                )
        if case.mask is not None:
            m = case.mask
            if m.shape != img.shape[1:]:
                raise ValueError(
                    f"{_path_of(case, 'mask')}: mask shape {m.shape} does not match image "
                    f"shape {img.shape[1:]} ({_path_of(case, img_role)}); expected equal shapes."
                )
            if m.dtype != np.uint8:
                raise ValueError(f"{_path_of(case, 'mask')}: expected a uint8 mask, got {m.dtype}.")
            if m.max(initial=0) > 1:
                vals = np.unique(m)
                raise ValueError(
                    f"{_path_of(case, 'mask')}: mask must be binary {{0, 1}}; found values "
                    f"{vals.tolist()[:8]}."
                )
        affines = case.meta.get("affines") or {}
        resampled = set(case.meta.get("resampled", []))
        if case.affine is not None:
            for role, aff in affines.items():
                if role in resampled or aff is None:
                    continue
                if not np.allclose(aff, case.affine, atol=atol):
                    diff = np.abs(np.asarray(aff) - case.affine).max()
                    raise ValueError(
                        f"{_path_of(case, role)}: affine differs from the image grid "
                        f"({_path_of(case, img_role)}) by {diff:.4g} mm; expected the same "
                        f"geometry within {atol:g} mm."
                    )
    log.debug("verify_integrity: %d case(s) passed", n)
