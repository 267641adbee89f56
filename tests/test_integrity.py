"""Every integrity failure raises ValueError naming the file and what was expected."""

from __future__ import annotations

import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import tifffile

from seglib.data import load_cases
from seglib.data.case import Case
from seglib.data.integrity import verify_integrity
from seglib.data.phantoms import write_dataset


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("integrity")
    return {
        "prostatex": write_dataset("prostatex", base / "prostate", 3, shape=(24, 24, 6)),
        "isles22": write_dataset("isles22", base / "isles", 2, shape=(16, 16, 16)),
        "lgg": write_dataset("lgg", base / "lgg", 1, shape=(16, 16, 4)),
    }


@pytest.fixture
def prostate(sources, tmp_path):
    """A private copy of the prostate phantom to damage."""
    root = tmp_path / "p"
    shutil.copytree(sources["prostatex"], root)
    return root / "Files" / "prostate"


def _save(data, affine, path):
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_clean_data_passes(sources):
    for ds, root in sources.items():
        assert verify_integrity(load_cases(ds, root)) is None


def test_corrupt_nifti_names_the_file(prostate):
    img = next((prostate / "Images").glob("ProstateX-0000_*"))
    blob = img.read_bytes()
    img.write_bytes(blob[: len(blob) // 3])  # truncated gzip stream
    with pytest.raises(ValueError, match=re.escape(img.name)):
        load_cases("prostatex", prostate)


def test_garbage_nifti_names_the_file(prostate):
    mask = prostate / "mask_prostate" / "ProstateX-0001.nii.gz"
    mask.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(ValueError, match=r"Cannot read NIfTI file .*ProstateX-0001\.nii\.gz"):
        load_cases("prostatex", prostate)


def test_mask_shape_mismatch_names_the_mask(prostate):
    mask = prostate / "mask_prostate" / "ProstateX-0000.nii.gz"
    ref = nib.load(str(mask))
    _save(np.zeros((20, 24, 6), np.uint8), ref.affine, mask)
    with pytest.raises(ValueError, match=r"ProstateX-0000\.nii\.gz: mask shape \(20, 24, 6\) does not match"):
        load_cases("prostatex", prostate)


def test_mask_affine_mismatch_names_the_mask(prostate):
    mask = prostate / "mask_prostate" / "ProstateX-0000.nii.gz"
    ref = nib.load(str(mask))
    aff = ref.affine.copy()
    aff[0, 3] += 5.0  # shifted by 5 mm
    _save(np.asarray(ref.dataobj), aff, mask)
    with pytest.raises(ValueError, match=r"ProstateX-0000\.nii\.gz: affine differs .* by 5 mm"):
        load_cases("prostatex", prostate)


def test_non_binary_nifti_mask_names_the_file(prostate):
    mask = prostate / "mask_prostate" / "ProstateX-0000.nii.gz"
    ref = nib.load(str(mask))
    data = np.asarray(ref.dataobj).copy()
    data[0, 0, 0] = 2
    _save(data, ref.affine, mask)
    with pytest.raises(ValueError, match=r"ProstateX-0000\.nii\.gz must hold only the values \{0, 1\}; found also 2"):
        load_cases("prostatex", prostate)


def test_nan_image_names_the_file(prostate):
    img = next((prostate / "Images").glob("ProstateX-0002_*"))
    ref = nib.load(str(img))
    data = ref.get_fdata(dtype=np.float32)
    data[1, 2, 3] = np.nan
    _save(data, ref.affine, img)
    with pytest.raises(ValueError, match=re.escape(img.name) + r": 1 voxel\(s\) are NaN or infinite"):
        load_cases("prostatex", prostate)


def test_channel_grid_mismatch_names_the_file(sources, tmp_path):
    root = tmp_path / "i"
    shutil.copytree(sources["isles22"], root)
    adc = next(root.rglob("sub-strokecase0001_ses-0001_adc.nii.gz"))
    ref = nib.load(str(adc))
    _save(np.zeros((16, 16, 15), np.float32), ref.affine, adc)
    with pytest.raises(ValueError, match=r"sub-strokecase0001_ses-0001_adc\.nii\.gz: shape \(16, 16, 15\) does not match"):
        load_cases("isles22", root)


def _lgg_copy(sources, tmp_path):
    root = tmp_path / "l"
    shutil.copytree(sources["lgg"], root)
    return next((root / "kaggle_3m").iterdir())


def test_lgg_mask_with_other_values_names_the_file(sources, tmp_path):
    folder = _lgg_copy(sources, tmp_path)
    mask = folder / f"{folder.name}_2_mask.tif"
    m = tifffile.imread(mask)
    m[0, 0] = 128
    tifffile.imwrite(mask, m)
    with pytest.raises(ValueError, match=re.escape(mask.name) + r" must hold only the values \{0, 255\}; found also 128"):
        load_cases("lgg", folder.parent)


def test_lgg_missing_partner_names_the_file(sources, tmp_path):
    folder = _lgg_copy(sources, tmp_path)
    (folder / f"{folder.name}_3_mask.tif").unlink()
    with pytest.raises(ValueError, match=re.escape(f"{folder.name}_3.tif") + ": image slice 3 has no mask partner"):
        load_cases("lgg", folder.parent)


def test_lgg_missing_image_names_the_mask(sources, tmp_path):
    folder = _lgg_copy(sources, tmp_path)
    (folder / f"{folder.name}_4.tif").unlink()
    with pytest.raises(ValueError, match=re.escape(f"{folder.name}_4_mask.tif") + ": mask slice 4 has no image"):
        load_cases("lgg", folder.parent)


def test_lgg_corrupt_tiff_names_the_file(sources, tmp_path):
    folder = _lgg_copy(sources, tmp_path)
    bad = folder / f"{folder.name}_1.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match=r"Cannot read TIFF file .*" + re.escape(bad.name)):
        load_cases("lgg", folder.parent)
    cut = folder / f"{folder.name}_2_mask.tif"
    cut.write_bytes(cut.read_bytes()[:100])  # truncated
    bad.unlink()
    (folder / f"{folder.name}_1_mask.tif").unlink()
    with pytest.raises(ValueError, match=r"Cannot read TIFF file .*" + re.escape(cut.name)):
        load_cases("lgg", folder.parent)


# ---- verify_integrity on records built in memory (closed-form failures)
def _case(image=None, mask=None, **meta):
    image = np.zeros((1, 4, 4, 2), np.float32) if image is None else image
    return Case(id="c", image=image, mask=mask, spacing=(1.0, 1.0, 1.0),
                paths={"t2": "/d/img.nii.gz", "mask": "/d/msk.nii.gz"}, affine=np.eye(4),
                meta={"channels": ["t2"], **meta})


def test_verify_in_memory_failures():
    verify_integrity([_case(mask=np.ones((4, 4, 2), np.uint8))])  # fine
    with pytest.raises(ValueError, match=r"/d/msk\.nii\.gz: mask shape \(4, 4, 3\) does not match image shape \(4, 4, 2\)"):
        verify_integrity([_case(mask=np.zeros((4, 4, 3), np.uint8))])
    with pytest.raises(ValueError, match=r"/d/msk\.nii\.gz: mask must be binary \{0, 1\}; found values \[0, 3\]"):
        m = np.zeros((4, 4, 2), np.uint8)
        m[0, 0, 0] = 3
        verify_integrity([_case(mask=m)])
    with pytest.raises(ValueError, match=r"/d/msk\.nii\.gz: expected a uint8 mask, got float32"):
        verify_integrity([_case(mask=np.zeros((4, 4, 2), np.float32))])
    img = np.zeros((1, 4, 4, 2), np.float32)
    img[0, 1, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"/d/img\.nii\.gz: 1 voxel\(s\) are NaN or infinite \(e\.g\. inf\)"):
        verify_integrity([_case(image=img)])
    with pytest.raises(ValueError, match=r"/d/img\.nii\.gz: expected float32 image, got float64"):
        verify_integrity([_case(image=np.zeros((1, 4, 4, 2)))])
    shifted = np.eye(4)
    shifted[2, 3] = 0.01
    with pytest.raises(ValueError, match=r"/d/msk\.nii\.gz: affine differs from the image grid .* by 0\.01 mm"):
        verify_integrity([_case(affines={"mask": shifted})])
    # a channel resampled onto the grid is exempt from the affine check
    verify_integrity([_case(affines={"t2": shifted}, resampled=["t2"])])
