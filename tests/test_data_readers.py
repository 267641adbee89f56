"""Readers against values computed independently (nibabel / tifffile directly).

Runs on the real samples in ../shared/data when present (marked ``realdata``)
and on phantoms written to a temporary folder, so it stays meaningful without
the real data.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from seglib.data import load_cases, with_masks
from seglib.data.phantoms import write_dataset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")
realdata = [pytest.mark.realdata, needs_data]


# ------------------------------------------------------------ independent expectations
def nifti(path):
    img = nib.load(str(path))
    return img.get_fdata(dtype=np.float32), img.affine, tuple(float(z) for z in img.header.get_zooms())


def expect_nifti_case(case, files: dict[str, Path], mask_path: Path | None):
    """Compare a case with its files read by nibabel directly."""
    arrays = [nifti(p) for p in files.values()]
    assert case.image.dtype == np.float32
    assert case.image.shape == (len(files),) + arrays[0][0].shape
    for c, (data, aff, zooms) in enumerate(arrays):
        np.testing.assert_array_equal(case.image[c], data)
        np.testing.assert_allclose(case.affine, aff)
        assert case.spacing == pytest.approx(zooms)
    if mask_path is None:
        assert case.mask is None
    else:
        raw = np.asanyarray(nib.load(str(mask_path)).dataobj)
        assert set(np.unique(raw).tolist()) <= {0, 1}
        assert case.mask.dtype == np.uint8
        np.testing.assert_array_equal(case.mask, raw.astype(np.uint8))
        assert case.paths["mask"] == mask_path


def lgg_expected(folder: Path):
    """Slices of one LGG patient read with tifffile, ordered by their number."""
    def number(p: Path) -> int:  # "..._12.tif" or "..._12_mask.tif"
        return int(p.name.replace("_mask", "").rsplit("_", 1)[1].split(".")[0])

    imgs = sorted((p for p in folder.glob("*.tif") if "_mask" not in p.name), key=number)
    masks = sorted(folder.glob("*_mask.tif"), key=number)
    assert [number(p) for p in imgs] == [number(p) for p in masks]
    image = np.stack([tifffile.imread(p) for p in imgs], axis=-1)  # (H, W, 3, S)
    mask = np.stack([tifffile.imread(p) for p in masks], axis=-1)
    return image.transpose(2, 0, 1, 3).astype(np.float32), mask, [number(p) for p in imgs]


def check_lgg(cases, base: Path):
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    by_id = {c.id: c for c in cases}
    for folder in folders:
        if folder.name not in by_id:
            continue
        c = by_id[folder.name]
        image, mask, numbers = lgg_expected(folder)
        assert c.image.shape == image.shape and c.image.shape[0] == 3
        np.testing.assert_array_equal(c.image, image)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        np.testing.assert_array_equal(c.mask, (mask == 255).astype(np.uint8))
        assert c.meta["slice_numbers"] == numbers
        assert c.spacing == (1.0, 1.0, 1.0)
        # pairing: the k-th image file and mask file carry the same slice number
        for ip, mp in zip(c.meta["image_files"], c.meta["mask_files"]):
            assert mp.name == ip.name.replace(".tif", "_mask.tif")


# ------------------------------------------------------------ phantom fixtures
@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    base = tmp_path_factory.mktemp("phantoms")
    return {
        "isles22": write_dataset("isles22", base / "isles", 3, shape=(24, 24, 20)),
        "atlas2": write_dataset("atlas2", base / "atlas", 2, shape=(20, 24, 20)),
        "prostatex": write_dataset("prostatex", base / "prostate", 4, shape=(48, 48, 8)),
        "lgg": write_dataset("lgg", base / "lgg", 3, shape=(32, 32, 12)),
    }


def test_isles_nested_phantom(phantoms, caplog):
    root = phantoms["isles22"]
    with caplog.at_level(logging.WARNING):
        cases = load_cases("isles22", root)
    assert [c.id for c in cases] == ["sub-strokecase0001", "sub-strokecase0002", "sub-strokecase0003"]
    for c in cases:
        ses = root / "ISLES-2022" / c.id / "ses-0001"
        files = {"dwi": ses / "dwi" / f"{c.id}_ses-0001_dwi.nii.gz", "adc": ses / "dwi" / f"{c.id}_ses-0001_adc.nii.gz"}
        mask = root / "ISLES-2022" / "derivatives" / c.id / "ses-0001" / f"{c.id}_ses-0001_msk.nii.gz"
        expect_nifti_case(c, files, mask if mask.exists() else None)
    assert cases[-1].mask is None and "sub-strokecase0003" in caplog.text
    assert [c.id for c in with_masks(cases)] == ["sub-strokecase0001", "sub-strokecase0002"]
    assert "sub-strokecase0003" in caplog.records[-1].getMessage()


def test_isles_flat_layout_reads_the_same(phantoms, tmp_path):
    """The challenge repository's flat example (rawdata/, derivatives/, lower-case flair)."""
    src = phantoms["isles22"] / "ISLES-2022"
    flat = tmp_path / "flat"
    for f in src.rglob("*.nii.gz"):
        sub = f.name.split("_")[0]
        part = "derivatives" if "derivatives" in f.parts else "rawdata"
        dst = flat / part / sub / "ses-0001" / f.name.replace("FLAIR", "flair")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    for ch in (None, ["dwi", "adc", "flair"]):
        a = load_cases("isles22", phantoms["isles22"], ch)
        b = load_cases("isles22", flat, ch)
        assert [c.id for c in a] == [c.id for c in b]
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.image, y.image)
            assert (x.mask is None) == (y.mask is None)


def test_isles_flair_resampled_onto_dwi_grid(phantoms, caplog):
    from scipy.ndimage import affine_transform

    root = phantoms["isles22"]
    with caplog.at_level(logging.WARNING):
        cases = load_cases("isles22", root / "ISLES-2022", ["flair", "dwi"])
    assert "sub-strokecase0003 (no flair)" in caplog.text  # the incomplete case is reported, not fatal
    c = cases[0]
    flair, f_aff, _ = nifti(c.paths["flair"])
    dwi, d_aff, _ = nifti(c.paths["dwi"])
    assert flair.shape != dwi.shape  # its own space
    # independent linear resampling: DWI voxel -> world -> FLAIR voxel
    m = np.linalg.inv(f_aff) @ d_aff
    expected = affine_transform(flair, m[:3, :3], offset=m[:3, 3], output_shape=dwi.shape, order=1, cval=0.0)
    assert c.image.shape == (2,) + dwi.shape
    np.testing.assert_allclose(c.image[0], expected, rtol=1e-4, atol=1e-2 * float(flair.max()) * 1e-3)
    np.testing.assert_array_equal(c.image[1], dwi)
    assert c.meta["resampled"] == ["flair"]
    # the resampled FLAIR correlates with DWI inside the head (same anatomy)
    inside = dwi > np.percentile(dwi, 60)
    assert np.corrcoef(c.image[0][inside], dwi[inside])[0, 1] > 0.2


def test_unknown_dataset_and_channel():
    with pytest.raises(ValueError, match='Did you mean "isles22"'):
        load_cases("isles2022", ".")
    with pytest.raises(ValueError, match='Did you mean "prostatex"'):
        load_cases("prostate_x", ".")


def test_unknown_channel(phantoms):
    with pytest.raises(ValueError, match="Did you mean \"flair\""):
        load_cases("isles22", phantoms["isles22"], ["flare"])
    with pytest.raises(ValueError, match="one channel"):
        load_cases("prostatex", phantoms["prostatex"], ["t1"])


def test_channel_order_is_respected(phantoms):
    a = load_cases("isles22", phantoms["isles22"], ["adc", "dwi"], ids=["sub-strokecase0001"])[0]
    b = load_cases("isles22", phantoms["isles22"], ids=["sub-strokecase0001"])[0]
    np.testing.assert_array_equal(a.image, b.image[::-1])
    assert a.meta["channels"] == ["adc", "dwi"]


def test_atlas_phantom_any_root(phantoms):
    root = phantoms["atlas2"]
    ids = ["sub-r001s001", "sub-r001s002"]
    for r in (root, root / "ATLAS_2", root / "ATLAS_2" / "Training"):
        cases = load_cases("atlas2", r)
        assert [c.id for c in cases] == ids
    for c in cases:
        anat = root / "ATLAS_2" / "Training" / "R001" / c.id / "ses-1" / "anat"
        stem = f"{c.id}_ses-1_space-MNI152NLin2009aSym"
        expect_nifti_case(c, {"t1w": anat / f"{stem}_T1w.nii.gz"}, anat / f"{stem}_label-L_desc-T1lesion_mask.nii.gz")
        assert c.mask.sum() > 0


def test_prostatex_phantom(phantoms, caplog):
    root = phantoms["prostatex"]
    with caplog.at_level(logging.WARNING):
        cases = load_cases("prostatex", root)
    assert "ProstateX-0003" in caplog.text  # the unmasked image is reported
    base = root / "Files" / "prostate"
    assert [c.id for c in cases] == [f"ProstateX-{i:04d}" for i in range(4)]
    for c in cases:
        (img,) = (base / "Images").glob(f"{c.id}_t2_tse_tra_*.nii.gz")
        mask = base / "mask_prostate" / f"{c.id}.nii.gz"
        expect_nifti_case(c, {"t2": img}, mask if mask.exists() else None)
    assert len({c.image.shape for c in cases}) == 2  # a different matrix size is kept
    for r in (root / "Files", base):
        assert [c.id for c in load_cases("prostatex", r)] == [c.id for c in cases]


def test_lgg_phantom(phantoms):
    root = phantoms["lgg"]
    cases = load_cases("lgg", root)
    assert len(cases) == 3
    check_lgg(cases, root / "kaggle_3m")
    assert cases[0].meta["slice_numbers"] == list(range(1, 13))  # int order, not "1, 10, 11, 12, 2"
    assert [c.id for c in load_cases("lgg", root / "kaggle_3m")] == [c.id for c in cases]
    comp = {tifffile.TiffFile(c.meta["image_files"][0]).pages[0].compression for c in cases}
    assert len(comp) == 2  # both uncompressed and zlib-compressed files were read


def test_lgg_channel_subset(phantoms):
    full = load_cases("lgg", phantoms["lgg"])[0]
    flair = load_cases("lgg", phantoms["lgg"], ["flair"], ids=[full.id])[0]
    np.testing.assert_array_equal(flair.image[0], full.image[1])


def test_ids_not_found(phantoms):
    with pytest.raises(ValueError, match="ProstateX-0099"):
        load_cases("prostatex", phantoms["prostatex"], ids=["ProstateX-0099"])


# ------------------------------------------------------------ real samples
@pytest.mark.realdata
@needs_data
def test_real_isles22(caplog):
    root = DATA / "isles22"
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        cases = load_cases("isles22", root)
    elapsed = time.perf_counter() - t0
    ids = ["sub-strokecase0001", "sub-strokecase0002", "sub-strokecase0003", "sub-strokecase0004",
           "sub-strokecase0009"]
    assert [c.id for c in cases] == ids
    for c in cases:
        raw = root / "rawdata" / c.id / "ses-0001"
        files = {m: raw / f"{c.id}_ses-0001_{m}.nii.gz" for m in ("dwi", "adc")}
        mask = root / "derivatives" / c.id / "ses-0001" / f"{c.id}_ses-0001_msk.nii.gz"
        expect_nifti_case(c, files, mask if mask.exists() else None)
        depth = 73 if c.id in ("sub-strokecase0001", "sub-strokecase0009") else 72
        assert c.image.shape == (2, 112, 112, depth) and c.spacing == (2.0, 2.0, 2.0)
    assert cases[0].mask is None and "sub-strokecase0001" in caplog.text
    assert [int(c.mask.sum()) for c in cases[1:]] == [118, 3873, 281, 523]
    # the centres store ADC in different units: mm²/s (0002, 0003: up to about 0.004) and 10⁻³ mm²/s (others)
    adc_max = {c.id: float(c.image[1].max()) for c in cases}
    assert adc_max["sub-strokecase0002"] < 0.01 and adc_max["sub-strokecase0003"] < 0.01
    assert all(adc_max[i] > 1 for i in ("sub-strokecase0001", "sub-strokecase0004", "sub-strokecase0009"))
    assert elapsed < 30


@pytest.mark.realdata
@needs_data
def test_real_isles22_with_flair(caplog):
    with caplog.at_level(logging.WARNING):
        cases = load_cases("isles22", DATA / "isles22", ["dwi", "adc", "flair"])
    assert [c.id for c in cases] == ["sub-strokecase0009"]
    assert "sub-strokecase0001 (no flair)" in caplog.text
    c = cases[0]
    flair, f_aff, _ = nifti(c.paths["flair"])
    assert flair.shape == (512, 512, 29) and c.image.shape == (3, 112, 112, 73)
    from scipy.ndimage import affine_transform

    m = np.linalg.inv(f_aff) @ c.affine
    expected = affine_transform(flair, m[:3, :3], offset=m[:3, 3], output_shape=(112, 112, 73), order=1)
    np.testing.assert_allclose(c.image[2], expected, atol=0.5)  # FLAIR range 0..5494


@pytest.mark.realdata
@needs_data
def test_real_prostatex(caplog):
    base = DATA / "prostatex" / "Files" / "prostate"
    with caplog.at_level(logging.WARNING):
        cases = load_cases("prostatex", DATA / "prostatex")
    assert [c.id for c in cases] == ["ProstateX-0000", "ProstateX-0001", "ProstateX-0218"]
    for c in cases:
        (img,) = (base / "Images").glob(f"{c.id}_t2_tse_tra_*.nii.gz")
        mask = base / "mask_prostate" / f"{c.id}.nii.gz"
        expect_nifti_case(c, {"t2": img}, mask if mask.exists() else None)
    assert [c.image.shape for c in cases] == [(1, 384, 384, 19), (1, 384, 384, 19), (1, 320, 320, 20)]
    assert cases[0].spacing == pytest.approx((0.5, 0.5, 3.0))
    assert cases[2].spacing == pytest.approx((0.625, 0.625, 3.6))
    assert cases[2].mask is None and "ProstateX-0218" in caplog.text
    assert cases[0].meta["series"] == 4 and cases[1].meta["series"] == 10


LGG_SUBSET = ["TCGA_CS_4942_19970222", "TCGA_DU_6399_19830416", "TCGA_HT_A616_19991226"]


@pytest.mark.realdata
@needs_data
def test_real_lgg_subset():
    base = DATA / "lgg" / "kaggle_3m"
    cases = load_cases("lgg", DATA / "lgg", ids=LGG_SUBSET)
    assert [c.id for c in cases] == LGG_SUBSET
    check_lgg(cases, base)
    for c in cases:
        assert c.image.shape[1:3] == (256, 256) and c.image.shape[3] >= 20
        assert re.fullmatch(r"TCGA_[A-Z0-9]{2}_[A-Z0-9]{4}_\d{8}", c.id)


@pytest.mark.realdata
@pytest.mark.slow
@needs_data
def test_real_lgg_all_patients():
    """Every one of the 39 sample patients (load_cases about 8 s on 2 busy cores).

    Pixel-for-pixel comparison is done on a subset above; here every patient's
    slice count, slice order, image shape (from the TIFF headers) and tumour
    area per slice (masks read with tifffile) are checked independently.
    """
    base = DATA / "lgg" / "kaggle_3m"
    listed = (DATA / "lgg" / "patients.txt").read_text().split()
    cases = load_cases("lgg", DATA / "lgg")
    assert sorted(c.id for c in cases) == sorted(listed) and len(cases) == 39
    for c in cases:
        masks = sorted((base / c.id).glob("*_mask.tif"), key=lambda p: int(p.name.split("_")[-2]))
        assert c.meta["slice_numbers"] == [int(p.name.split("_")[-2]) for p in masks]
        with tifffile.TiffFile(str(base / c.id / f"{c.id}_1.tif")) as tf:
            h, w, ch = tf.pages[0].shape
        assert c.image.shape == (ch, h, w, len(masks))
        area = [int((tifffile.imread(p) == 255).sum()) for p in masks]
        assert c.mask.sum(axis=(0, 1)).tolist() == area
    n_slices = sum(c.image.shape[-1] for c in cases)
    with_tumour = sum(int(c.mask[..., s].any()) for c in cases for s in range(c.mask.shape[-1]))
    assert 0 < with_tumour < n_slices
