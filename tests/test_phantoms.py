"""Phantoms: exact layouts, determinism, manifests, and properties that make the studies' questions answerable."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from seglib.data import load_cases, with_masks
from seglib.data.phantoms.shapes import irregular_blob, smooth_noise
from seglib.data.phantoms import MANIFEST, write_dataset


def rel_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def best_threshold_dice(x: np.ndarray, y: np.ndarray, region: np.ndarray, brighter: bool = True) -> float:
    """Highest Dice of a single intensity threshold inside ``region`` (a crude baseline a U-Net must beat)."""
    v, t = x[region], y[region].astype(bool)
    best = 0.0
    for q in np.linspace(0.5, 0.999, 120):
        thr = np.quantile(v, q if brighter else 1 - q)
        pred = v > thr if brighter else v < thr
        inter = (pred & t).sum()
        best = max(best, 2 * inter / (pred.sum() + t.sum()))
    return float(best)


def brain_tissue(dwi: np.ndarray) -> np.ndarray:
    """Grey and white matter on DWI: above 40 % of the 90th percentile (background and CSF are darker)."""
    return dwi > 0.4 * np.percentile(dwi, 90)


def test_isles_layout_exact(tmp_path):
    root = write_dataset("isles22", tmp_path / "d", 2, shape=(16, 16, 12))
    assert root == tmp_path / "d"
    s1, s2 = "sub-strokecase0001", "sub-strokecase0002"
    assert rel_files(root) == sorted([
        f"ISLES-2022/{s1}/ses-0001/dwi/{s1}_ses-0001_dwi.nii.gz",
        f"ISLES-2022/{s1}/ses-0001/dwi/{s1}_ses-0001_adc.nii.gz",
        f"ISLES-2022/{s1}/ses-0001/anat/{s1}_ses-0001_FLAIR.nii.gz",
        f"ISLES-2022/derivatives/{s1}/ses-0001/{s1}_ses-0001_msk.nii.gz",
        f"ISLES-2022/{s2}/ses-0001/dwi/{s2}_ses-0001_dwi.nii.gz",  # the incomplete case: no mask, no FLAIR
        f"ISLES-2022/{s2}/ses-0001/dwi/{s2}_ses-0001_adc.nii.gz",
        MANIFEST,
    ])
    dwi = nib.load(str(root / f"ISLES-2022/{s1}/ses-0001/dwi/{s1}_ses-0001_dwi.nii.gz"))
    flair = nib.load(str(root / f"ISLES-2022/{s1}/ses-0001/anat/{s1}_ses-0001_FLAIR.nii.gz"))
    assert dwi.header.get_zooms() == (2.0, 2.0, 2.0) and dwi.shape == (16, 16, 12)
    assert flair.shape == (32, 32, 6) and flair.header.get_zooms() == pytest.approx((1.0, 1.0, 4.0))
    assert not np.allclose(flair.affine, dwi.affine)  # its own space


def test_atlas_prostate_lgg_layouts_exact(tmp_path):
    a = write_dataset("atlas2", tmp_path / "a", 6, shape=(12, 12, 12))
    s = "sub-r002s001"
    stem = f"ATLAS_2/Training/R002/{s}/ses-1/anat/{s}_ses-1_space-MNI152NLin2009aSym"
    files = rel_files(a)
    assert f"{stem}_T1w.nii.gz" in files and f"{stem}_label-L_desc-T1lesion_mask.nii.gz" in files
    assert len(files) == 2 * 6 + 1

    p = write_dataset("prostatex", tmp_path / "p", 3, shape=(24, 24, 5))
    files = rel_files(p)
    images = [f for f in files if f.startswith("Files/prostate/Images/")]
    assert len(images) == 3 and all(
        f.split("/")[-1].startswith(f"ProstateX-000{i}_t2_tse_tra_") for i, f in enumerate(images))
    assert [f for f in files if "mask_prostate" in f] == [
        "Files/prostate/mask_prostate/ProstateX-0000.nii.gz", "Files/prostate/mask_prostate/ProstateX-0001.nii.gz"]
    assert nib.load(str(p / images[0])).get_data_dtype() == np.uint16

    g = write_dataset("lgg", tmp_path / "g", 2, shape=(16, 16, 11))
    files = rel_files(g)
    folders = sorted({f.split("/")[1] for f in files if f.startswith("kaggle_3m/")})
    assert len(folders) == 2
    for pid in folders:
        assert all(re_ok(pid) for _ in [0])
        for n in range(1, 12):
            img = tifffile.imread(g / "kaggle_3m" / pid / f"{pid}_{n}.tif")
            msk = tifffile.imread(g / "kaggle_3m" / pid / f"{pid}_{n}_mask.tif")
            assert img.shape == (16, 16, 3) and img.dtype == np.uint8
            assert msk.shape == (16, 16) and set(np.unique(msk).tolist()) <= {0, 255}


def re_ok(pid: str) -> bool:
    import re

    return re.fullmatch(r"TCGA_[A-Z]{2}_\d{4}_\d{8}", pid) is not None


def test_deterministic_and_case_independent_of_n(tmp_path):
    a = load_cases("prostatex", write_dataset("prostatex", tmp_path / "a", 3, shape=(20, 20, 5), seed=7))
    b = load_cases("prostatex", write_dataset("prostatex", tmp_path / "b", 5, shape=(20, 20, 5), seed=7))
    c = load_cases("prostatex", write_dataset("prostatex", tmp_path / "c", 3, shape=(20, 20, 5), seed=8))
    for x, y in zip(a[:2], b[:2]):  # same seed: case k identical whatever n_cases is
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.mask, y.mask)
    assert not np.array_equal(a[0].image, c[0].image)


def test_manifest_reuse_rewrite_and_refusal(tmp_path, caplog):
    root = write_dataset("lgg", tmp_path / "g", 2, shape=(16, 16, 4), seed=1)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["seed"] == 1 and manifest["dataset"] == "lgg" and len(manifest["hash"]) == 16
    stamp = (root / MANIFEST).stat().st_mtime_ns
    marker = root / "kaggle_3m" / "untouched"
    marker.write_text("x")
    assert write_dataset("lgg", root, 2, shape=(16, 16, 4), seed=1) == root
    assert (root / MANIFEST).stat().st_mtime_ns == stamp and marker.exists()  # reused, not rewritten
    write_dataset("lgg", root, 2, shape=(16, 16, 4), seed=2)  # other parameters: rewritten
    assert json.loads((root / MANIFEST).read_text())["seed"] == 2 and not marker.exists()
    assert "rewriting" in caplog.text
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no phantom.json: refusing to overwrite"):
        write_dataset("lgg", foreign, 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match='Did you mean "contrast"'):
        write_dataset("lgg", tmp_path / "x", 2, contrastt=0.5)
    with pytest.raises(ValueError, match='Did you mean "prostatex"'):
        write_dataset("prostate", tmp_path / "x", 2)
    with pytest.raises(ValueError, match="leaves no labelled case"):
        write_dataset("isles22", tmp_path / "x", 1)
    with pytest.raises(ValueError, match="shape must be three sizes"):
        write_dataset("lgg", tmp_path / "x", 2, shape=(16, 16))


def test_stroke_properties(tmp_path):
    cases = with_masks(load_cases("isles22", write_dataset("isles22", tmp_path / "s", 9)))
    assert len(cases) == 8 and cases[0].image.shape == (2, 48, 48, 48) and cases[0].spacing == (2.0, 2.0, 2.0)
    n_lesions = [ndimage.label(c.mask)[1] for c in cases]
    assert max(n_lesions) >= 3 and min(n_lesions) >= 1  # several lesions per case
    sizes = np.concatenate([np.bincount(ndimage.label(c.mask)[0].ravel())[1:] for c in cases])
    assert sizes.min() < 30 and sizes.max() > 500  # small to large lesions (voxels)
    dice_dwi, dice_adc = [], []
    for c in cases:
        brain = brain_tissue(c.image[0])
        m = c.mask.astype(bool)
        assert c.image[0][m].mean() > 1.2 * c.image[0][brain & ~m].mean()  # brighter on DWI
        assert c.image[1][m].mean() < 0.8 * c.image[1][brain & ~m].mean()  # darker on ADC
        dice_dwi.append(best_threshold_dice(c.image[0], c.mask, brain))
        dice_adc.append(best_threshold_dice(c.image[1], c.mask, brain, brighter=False))
    # intensities overlap: one threshold cannot segment the lesions
    assert 0.3 < np.mean(dice_dwi) < 0.85 and 0.2 < np.mean(dice_adc) < 0.85


def test_contrast_knob_sets_difficulty(tmp_path):
    def score(contrast):
        root = write_dataset("isles22", tmp_path / f"c{contrast}", 4, shape=(32, 32, 32), contrast=contrast)
        cs = with_masks(load_cases("isles22", root))
        return np.mean([best_threshold_dice(c.image[0], c.mask, brain_tissue(c.image[0])) for c in cs])

    easy, hard = score(1.5), score(0.5)
    assert easy > hard + 0.1


def test_prostate_properties(tmp_path):
    cases = load_cases("prostatex", write_dataset("prostatex", tmp_path / "p", 6))
    shapes = {c.image.shape for c in cases}
    assert (1, 96, 96, 12) in shapes and (1, 80, 80, 13) in shapes
    assert cases[-1].mask is None
    for c in with_masks(cases):
        com = np.array(ndimage.center_of_mass(c.mask))
        assert np.all(np.abs(com[:2] - np.array(c.mask.shape[:2]) / 2) < 0.15 * np.array(c.mask.shape[:2]))
        per_slice = c.mask.sum(axis=(0, 1))
        assert (per_slice == 0).any() and (per_slice > 0).sum() >= 4  # gland in some slices, not all
        # gland and surround intensities overlap: a threshold alone does poorly
        body = c.image[0] > np.percentile(c.image[0], 30)
        assert best_threshold_dice(c.image[0], c.mask, body, brighter=False) < 0.7


def test_lgg_properties(tmp_path):
    cases = load_cases("lgg", write_dataset("lgg", tmp_path / "g", 6))
    assert cases[0].image.shape == (3, 64, 64, 16)
    for c in cases:
        assert 0 <= c.image.min() and c.image.max() <= 255
        per_slice = c.mask.sum(axis=(0, 1))
        assert 0 < (per_slice > 0).sum() < 0.75 * len(per_slice)  # tumour only in some slices
        m = c.mask.astype(bool)
        assert c.image[1][m].mean() > c.image[1][(c.image[1] > 20) & ~m].mean()  # brighter on FLAIR
    areas = [c.mask.sum() for c in cases]
    assert max(areas) > 3 * min(areas)  # small and large tumours


def test_irregular_blob_never_empty_and_irregular():
    rng = np.random.default_rng(0)
    blob = irregular_blob(rng, (30, 30, 30), (15, 15, 15), (8, 6, 7))
    ellipsoid_volume = 4 / 3 * np.pi * 8 * 6 * 7  # ≈ 1407 voxels
    assert 0.3 * ellipsoid_volume < blob.sum() < 1.5 * ellipsoid_volume
    # irregular: far from convex (solidity = volume / convex-hull-ish box fraction)
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(blob, iterations=2))
    assert blob.sum() < filled.sum()
    tiny = irregular_blob(rng, (10, 10, 10), (0, 0, 9), (0.1, 0.1, 0.1))
    assert tiny.sum() >= 1
    n = smooth_noise(rng, (20, 20), 2.0)
    assert abs(n.std() - 1) < 1e-6


def test_fast_to_write(tmp_path):
    t0 = time.perf_counter()
    write_dataset("prostatex", tmp_path / "p", 20)
    write_dataset("lgg", tmp_path / "g", 20)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20, f"writing 40 phantom cases took {elapsed:.1f} s"
