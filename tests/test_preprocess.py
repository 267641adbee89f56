"""Preprocessing as published (studies A, B, C), splits and the array cache.

(Splits and cache live in seglib/data/splits.py and cache.py; their tests are
here with the preprocessing they serve.)
"""

from __future__ import annotations

import logging
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from seglib.data import load_cases, with_masks
from seglib.data.cache import cached_arrays, case_files, data_fingerprint, file_digest
from seglib.data.case import Case
from seglib.data.phantoms import write_dataset
from seglib.data.preprocess import (
    buda_preprocess,
    extract_slices,
    minmax,
    preprocess_volume,
    resize_volume,
    stack_volumes,
    subsample_crop_pad,
    zscore_channels,
)
from seglib.data.splits import leaked_patients, split_as_buda, split_by_patient, split_by_slice, split_k_fold


def _case(image, mask, cid="p"):
    return Case(id=cid, image=np.asarray(image, np.float32), mask=None if mask is None else np.asarray(mask, np.uint8),
                spacing=(1.0,) * (np.ndim(image) - 1))


# ------------------------------------------------------------------ study A
def test_resize_linear_closed_form():
    # 1D ramp 0,1,2,3 resized 4 -> 2 with align_corners=False samples source
    # positions (i + 0.5) * 2 - 0.5 = 0.5 and 2.5, i.e. values 0.5 and 2.5.
    ramp = np.broadcast_to(np.arange(4, dtype=np.float32)[:, None, None], (4, 2, 2))[None]
    out = resize_volume(ramp, (2, 2, 2))
    np.testing.assert_allclose(out[0, :, 0, 0], [0.5, 2.5])
    const = np.full((2, 5, 6, 7), 3.0, np.float32)
    np.testing.assert_allclose(resize_volume(const, 4), 3.0)  # constants stay constant
    with pytest.raises(ValueError, match="Unknown resize mode 'cubic'"):
        resize_volume(const, 4, "cubic")
    with pytest.raises(ValueError, match=r"size must be a positive int or 3 positive ints, got \(4, 4\)"):
        resize_volume(const, (4, 4))


def test_mask_nearest_vs_linear_as_published():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[3:7, 2:8, 4:6] = 1
    case = _case(np.random.default_rng(0).random((2, 10, 10, 10)), mask)
    near = preprocess_volume(case, 16)
    assert near["image"].shape == (2, 16, 16, 16) and near["mask"].dtype == np.uint8
    assert set(np.unique(near["mask"]).tolist()) == {0, 1}
    pub = preprocess_volume(case, 16, mask_interp="linear_as_published")
    vals = pub["mask"]
    assert vals.dtype == np.float32 and ((vals > 0) & (vals < 1)).any()  # the seed's non-binary masks
    thr = preprocess_volume(case, 16, mask_interp="linear_as_published", threshold=0.5)
    assert thr["mask"].dtype == np.uint8 and set(np.unique(thr["mask"]).tolist()) == {0, 1}
    # nearest-exact to a multiple: every target voxel copies its source voxel
    exact = preprocess_volume(case, 20)["mask"]
    np.testing.assert_array_equal(exact[::2, ::2, ::2], mask)
    with pytest.raises(ValueError, match="mask_interp must be one of"):
        preprocess_volume(case, 16, mask_interp="linear")
    assert "mask" not in preprocess_volume(_case(case.image, None), 8)


def test_zscore_channels():
    rng = np.random.default_rng(1)
    img = np.stack([rng.normal(5, 2, (6, 6, 6)), rng.normal(-1, 0.1, (6, 6, 6))]).astype(np.float32)
    z = zscore_channels(img)
    np.testing.assert_allclose(z.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(1, 2, 3)), 1, atol=1e-5)
    img[:, :2] = 0
    zn = zscore_channels(img, nonzero=True)
    assert (zn[:, :2] == 0).all()
    np.testing.assert_allclose(zn[:, 2:].mean(axis=(1, 2, 3)), 0, atol=1e-5)
    out = preprocess_volume(_case(img, None), 4, zscore=True)["image"]
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    with pytest.raises(ValueError, match="Channel 0 is constant"):
        zscore_channels(np.ones((1, 3, 3, 3), np.float32))


def test_subsample_crop_pad():
    a = np.arange(10 * 7 * 12, dtype=np.float32).reshape(1, 10, 7, 12)
    out = subsample_crop_pad(a, size=3, stride=3)
    # stride 3: axis sizes 4, 3, 4; centre crop of 4 to 3 starts at (4 - 3) // 2 = 0
    np.testing.assert_array_equal(out, a[:, ::3, ::3, ::3][:, 0:3, :, 0:3])
    padded = subsample_crop_pad(a, size=6, stride=3)
    assert padded.shape == (1, 6, 6, 6)
    # pads of (6 - 4) // 2 = 1, (6 - 3) // 2 = 1, 1 voxel before the data
    np.testing.assert_array_equal(padded[:, 1:5, 1:4, 1:5], a[:, ::3, ::3, ::3])
    assert padded.sum() == a[:, ::3, ::3, ::3].sum()


# ------------------------------------------------------------------ study B
def test_minmax():
    x = np.array([[[2.0, 4.0], [6.0, 10.0]]])
    np.testing.assert_allclose(minmax(x, axes=(1, 2)), [[[0, 0.25], [0.5, 1.0]]])
    np.testing.assert_array_equal(minmax(np.full((1, 2, 2), 7.0), axes=(1, 2)), 0)


def test_extract_slices_per_slice_and_volume():
    img = np.zeros((1, 4, 4, 3), np.float32)
    img[..., 0] = 1.0
    img[0, 0, 0, 0] = 3.0  # slice 0 in [1, 3]
    img[..., 1] = np.arange(16).reshape(4, 4)  # slice 1 in [0, 15]
    img[..., 2] = 5.0  # constant slice -> 0
    mask = np.zeros((4, 4, 3), np.uint8)
    mask[1:3, 1:3, 1] = 1
    cases = [_case(img, mask, "a"), _case(img * 2, mask, "b")]
    out = extract_slices(cases)
    assert out["image"].shape == (6, 1, 4, 4) and out["mask"].shape == (6, 4, 4)
    assert out["patient"].tolist() == ["a"] * 3 + ["b"] * 3 and out["slice"].tolist() == [0, 1, 2] * 2
    np.testing.assert_allclose(out["image"][0, 0, 0, 0], 1.0)  # (3 - 1) / (3 - 1)
    np.testing.assert_allclose(out["image"][0, 0, 1, 1], 0.0)  # (1 - 1) / 2
    np.testing.assert_allclose(out["image"][1, 0].ravel(), np.arange(16) / 15)
    np.testing.assert_array_equal(out["image"][2], 0)
    vol = extract_slices(cases, normalise="volume")  # volume range [0, 15]
    np.testing.assert_allclose(vol["image"][0, 0, 1, 1], 1 / 15)
    q = extract_slices(cases, quantise=True)
    np.testing.assert_allclose(q["image"] * 255, np.round(q["image"] * 255), atol=1e-4)
    big = extract_slices(cases, size=8)
    assert big["image"].shape == (6, 1, 8, 8) and int(big["mask"][1].sum()) == 4 * int(mask[..., 1].sum())
    with pytest.raises(ValueError, match="Case c has no mask; filter with seglib.data.with_masks"):
        extract_slices([_case(img, None, "c")])
    with pytest.raises(ValueError, match="pass size=S"):
        extract_slices([cases[0], _case(np.ones((1, 5, 5, 2)), np.zeros((5, 5, 2)), "d")])
    with pytest.raises(ValueError, match="normalise must be"):
        extract_slices(cases, normalise="global")


def test_extract_slices_on_prostate_phantom(tmp_path):
    cases = with_masks(load_cases("prostatex", write_dataset("prostatex", tmp_path / "p", 4, shape=(32, 32, 6))))
    out = extract_slices(cases, size=24)
    assert out["image"].shape == (sum(c.image.shape[-1] for c in cases), 1, 24, 24)  # 6 + 7 + 6 slices
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert set(np.unique(out["mask"]).tolist()) == {0, 1}


# ------------------------------------------------------------------ study C
def test_buda_preprocess_closed_form():
    # (C=2, H=8, W=8, S=5): a bright 3x5 rectangle in slices 1..3, noise-free.
    img = np.zeros((2, 8, 8, 5), np.float32)
    img[0, 2:5, 1:6, 1:4] = 100.0
    img[1, 2:5, 1:6, 1:4] = 50.0
    img[0, 2:5, 1:6, 2] = 200.0
    img[0, 7, 7, 2] = 15.0  # under 10 % of the max (200): zeroed, so it does not stretch the box
    mask = np.zeros((8, 8, 5), np.uint8)
    mask[3, 2:4, 2] = 1
    out = buda_preprocess(_case(img, mask), size=5)
    # ends dropped -> slices 1..3; box rows 2..4, cols 1..5 (3x5) -> pad rows by 1 each side -> 5x5, no resize
    assert out["slices"].tolist() == [1, 2, 3] and out["bbox"].tolist() == [2, 5, 1, 6]
    assert out["image"].shape == (2, 5, 5, 3) and out["mask"].shape == (5, 5, 3)
    np.testing.assert_array_equal(out["mask"][2, 1:3, 1], 1)  # row 3 -> 3 - 2 + 1 pad = 2; cols 2,3 -> 1,2
    assert out["mask"].sum() == 2
    np.testing.assert_allclose(out["image"].mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out["image"].std(axis=(1, 2, 3)), 1, atol=1e-5)
    assert out["image"][0, 0, 0, 0] == out["image"][0].min()  # padding is the darkest value
    keep = buda_preprocess(_case(img, mask), size=5, drop_ends=False, crop_slices=False)
    assert keep["slices"].tolist() == [0, 1, 2, 3, 4]
    crop = buda_preprocess(_case(img, mask), size=5, drop_ends=False)
    assert crop["slices"].tolist() == [1, 2, 3]  # Buda's crop_sample also crops empty slices
    with pytest.raises(ValueError, match="Case p has no mask"):
        buda_preprocess(_case(img, None))
    with pytest.raises(ValueError, match="empty after thresholding"):
        buda_preprocess(_case(np.zeros((1, 4, 4, 4)), np.zeros((4, 4, 4))))


def test_buda_preprocess_on_lgg_phantom(tmp_path):
    cases = load_cases("lgg", write_dataset("lgg", tmp_path / "g", 2, shape=(40, 48, 12)))
    outs = [buda_preprocess(c, size=32) for c in cases]
    for c, o in zip(cases, outs):
        assert o["image"].shape[:3] == (3, 32, 32) and o["image"].shape[3] <= 10
        assert o["slices"][0] >= 1 and o["slices"][-1] <= 10
        # the mask's tumour slices survive (it sits inside the head)
        assert (o["mask"].sum(axis=(0, 1)) > 0).sum() == (c.mask[..., o["slices"]].sum(axis=(0, 1)) > 0).sum()
    st = stack_volumes(outs, [c.id for c in cases])
    n = sum(o["image"].shape[-1] for o in outs)
    assert st["image"].shape == (n, 3, 32, 32) and st["mask"].shape == (n, 32, 32)
    assert st["patient"].tolist().count(cases[0].id) == outs[0]["image"].shape[-1]


# ------------------------------------------------------------------ splits
def test_split_by_patient():
    ids = [f"p{i:02d}" for i in range(20)] * 3  # duplicates (e.g. one id per slice) collapse
    tr, va = split_by_patient(ids, 0.2, seed=3)
    assert len(va) == 4 and len(tr) == 16 and not set(tr) & set(va) and sorted(tr + va) == sorted(set(ids))
    assert (tr, va) == split_by_patient(list(reversed(ids)), 0.2, seed=3)  # order-free, deterministic
    assert va != split_by_patient(ids, 0.2, seed=4)[1]
    tr10, va10 = split_by_patient(ids, seed=0, n_val=10)
    assert len(va10) == 10 and len(tr10) == 10
    assert len(split_by_patient(["a", "b", "c"], 0.01)[1]) == 1  # at least one each side
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_by_patient(ids, 1.5)
    with pytest.raises(ValueError, match="n_val must be between 1 and 19"):
        split_by_patient(ids, n_val=20)


def test_split_as_buda_reproduces_python_random():
    ids = [f"TCGA_{i:03d}" for i in range(30)]
    random.seed(42)  # the published code seeds the global generator, then samples
    expected = sorted(random.sample(sorted(ids), k=10))
    tr, va = split_as_buda(list(reversed(ids)))
    assert va == expected and len(tr) == 20


def test_split_by_slice_leaks_patients():
    patients = np.repeat([f"p{i}" for i in range(5)], 20)  # 5 patients x 20 slices
    tr, va = split_by_slice(patients, 0.2, seed=0)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(100))
    assert leaked_patients(patients, tr, va) == [f"p{i}" for i in range(5)]  # every patient on both sides
    ptr, pva = split_by_patient(patients, 0.2, seed=0)
    rows_tr = np.flatnonzero(np.isin(patients, ptr))
    rows_va = np.flatnonzero(np.isin(patients, pva))
    assert leaked_patients(patients, rows_tr, rows_va) == []


# ------------------------------------------------------------------ cache
def test_cached_arrays_builds_once_and_rebuilds_corrupt(tmp_path, caplog):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(6).reshape(2, 3), "id": np.array(["a", "b"])}

    key = {"study": "c", "size": 32, "data": "abc"}
    a = cached_arrays(key, build, tmp_path)
    b = cached_arrays(key, build, tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(a["x"], b["x"])
    assert b["id"].tolist() == ["a", "b"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npz")  # no temporaries left
    cached_arrays({**key, "size": 64}, build, tmp_path)
    assert len(calls) == 2  # another key, another entry
    npz = next(p for p in tmp_path.glob("*.npz") if p.name == files[1])
    npz.write_bytes(npz.read_bytes()[:40])  # truncated
    with caplog.at_level(logging.WARNING):
        c = cached_arrays(key, build, tmp_path)
    assert len(calls) == 3 and "unreadable" in caplog.text and npz.name in caplog.text
    np.testing.assert_array_equal(c["x"], a["x"])
    assert zipfile.is_zipfile(npz)
    with pytest.raises(TypeError, match="dict of numpy arrays"):
        cached_arrays({"k": 1}, lambda: [1, 2], tmp_path)


def test_data_fingerprint(tmp_path):
    root = tmp_path / "d"
    (root / "s").mkdir(parents=True)
    f1, f2 = root / "a.bin", root / "s" / "b.bin"
    f1.write_bytes(b"hello")
    f2.write_bytes(b"world")
    fp = data_fingerprint([f1, f2], root)
    assert fp == data_fingerprint([f2, f1, f1], root)  # order and duplicates do not matter
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert data_fingerprint([copy / "a.bin", copy / "s" / "b.bin"], copy) == fp  # location-free
    f1.write_bytes(b"hellO")  # same size, other content
    assert data_fingerprint([f1, f2], root) != fp
    with pytest.raises(ValueError, match="is not under the data root"):
        data_fingerprint([f1], root / "s")


def test_data_fingerprint_of_a_folder_of_links(tmp_path):
    """A dataset assembled from links (to cases kept elsewhere) hashes as the same files copied there; a root
    that is itself a link works too."""
    store = tmp_path / "store"
    (store / "case1").mkdir(parents=True)
    (store / "case1" / "img.bin").write_bytes(b"hello")
    (store / "case2").mkdir()
    (store / "case2" / "img.bin").write_bytes(b"world")
    links = tmp_path / "links"
    links.mkdir()
    for c in ("case1", "case2"):
        (links / c).symlink_to(store / c, target_is_directory=True)
    files = [links / c / "img.bin" for c in ("case1", "case2")]
    fp = data_fingerprint(files, links)
    assert fp == data_fingerprint([store / c / "img.bin" for c in ("case1", "case2")], store)
    (tmp_path / "root-link").symlink_to(store, target_is_directory=True)
    assert data_fingerprint([store / "case1" / "img.bin", store / "case2" / "img.bin"], tmp_path / "root-link") == fp
    with pytest.raises(ValueError, match="is not under the data root"):
        data_fingerprint(files, links / "case1")


def test_file_digest_large_files_hash_head_and_tail(tmp_path):
    import hashlib

    f = tmp_path / "big.bin"
    data = bytearray(range(256)) * 40  # 10240 bytes; "large" above 4096 with 1024-byte chunks
    f.write_bytes(bytes(data))
    small = file_digest(f)  # default limit: full content hash
    assert small == hashlib.sha256(bytes(data)).hexdigest()
    part = file_digest(f, full_limit=4096, chunk=1024)
    data[5000] ^= 1  # a change in the middle is not seen by the partial hash...
    f.write_bytes(bytes(data))
    assert file_digest(f, full_limit=4096, chunk=1024) == part and file_digest(f) != small
    data[-1] ^= 1  # ...a change in the last chunk is
    f.write_bytes(bytes(data))
    assert file_digest(f, full_limit=4096, chunk=1024) != part


def test_cache_with_reader_fingerprint(tmp_path):
    root = write_dataset("lgg", tmp_path / "g", 2, shape=(16, 16, 5))
    cases = load_cases("lgg", root)
    files = case_files(cases)
    assert len(files) == 2 * 2 * 5  # every image and mask slice
    key = {"prep": "buda", "size": 16, "data": data_fingerprint(files, root)}

    def build():
        return stack_volumes([buda_preprocess(c, 16) for c in cases], [c.id for c in cases])

    first = cached_arrays(key, build, tmp_path / "cache")
    again = cached_arrays(key, lambda: pytest.fail("rebuilt"), tmp_path / "cache")
    np.testing.assert_array_equal(first["image"], again["image"])


# ------------------------------------------------------------------ study A: ADC units across centres
def test_zscore_nonzero_is_unit_invariant_closed_form():
    # channel 1 is channel 0 times 1e-3 (the same ADC in mm²/s instead of 10⁻³ mm²/s); zeros are background.
    # brain voxels 1, 2, 3, 6: mean 3, std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5)
    vol = np.zeros((2, 2, 2), np.float32)
    vol.flat[:4] = [1, 2, 3, 6]
    img = np.stack([vol, vol * np.float32(1e-3)])
    z = zscore_channels(img, nonzero=True)
    expected = (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5)
    np.testing.assert_allclose(z[0].flat[:4], expected, rtol=1e-5)
    np.testing.assert_allclose(z[1], z[0], rtol=1e-4, atol=1e-5)
    assert (z[:, 1, 1] == 0).all()  # background stays 0
    case = _case(img, None)
    out = preprocess_volume(case, 2, zscore_nonzero=True)["image"]  # size 2 = native: resize is the identity
    np.testing.assert_allclose(out, z, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        preprocess_volume(case, 2, zscore=True, zscore_nonzero=True)


def _adc_brain_quartiles(image: np.ndarray) -> np.ndarray:
    adc = image[1]
    return np.percentile(adc[adc != 0], [25, 50, 75])


def test_adc_units_phantom_comparable_after_zscore_nonzero(tmp_path):
    """A phantom whose every second case stores ADC in mm²/s (×1e-3): as published (no normalisation) the two
    groups' ADC differ by 1000×; after the per-case z-score over brain voxels their quartiles agree."""
    root = write_dataset("isles22", tmp_path / "mixed", 5, shape=(16, 16, 16), mixed_adc_units=True)
    cases = with_masks(load_cases("isles22", root))
    raw_max = [float(c.image[1].max()) for c in cases]
    milli = [m for i, m in enumerate(raw_max) if i % 2 == 0]
    si = [m for i, m in enumerate(raw_max) if i % 2 == 1]
    assert min(milli) > 1 and max(si) < 0.01  # the unit difference is there
    raw = [_adc_brain_quartiles(preprocess_volume(c, 12)["image"]) for c in cases]
    assert np.median([q[1] for q in raw[::2]]) / np.median([q[1] for q in raw[1::2]]) > 500
    norm = [_adc_brain_quartiles(preprocess_volume(c, 12, zscore_nonzero=True)["image"]) for c in cases]
    groups = np.array([np.mean(norm[0::2], axis=0), np.mean(norm[1::2], axis=0)])
    np.testing.assert_allclose(groups[0], groups[1], atol=0.25)  # same anatomy, z units: within 0.25 sd


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isles22"


@pytest.mark.realdata
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data is absent")
def test_adc_units_real_isles22_comparable_after_zscore_nonzero():
    """All five real cases: 0002 and 0003 store ADC in mm²/s, 0001, 0004 and 0009 in 10⁻³ mm²/s. As published the
    brain's median ADC differs by about 1000× between the groups; after the corrected normalisation each case's
    ADC quartiles over the brain lie within 0.5 sd of every other case's, and the lesion is darker than the brain
    (negative z) in every labelled case."""
    cases = load_cases("isles22", REAL)
    assert len(cases) == 5
    si = {"sub-strokecase0002", "sub-strokecase0003"}
    raw_median = {c.id: float(np.median(c.image[1][c.image[1] != 0])) for c in cases}
    ratio = min(v for k, v in raw_median.items() if k not in si) / max(v for k, v in raw_median.items() if k in si)
    assert ratio > 200
    quart = {}
    for c in cases:
        out = preprocess_volume(c, 32, zscore_nonzero=True)["image"]
        quart[c.id] = _adc_brain_quartiles(out)
        if c.mask is not None:
            z = zscore_channels(c.image, nonzero=True)[1]
            assert z[c.mask > 0].mean() < -0.3, c.id  # restricted diffusion: dark on ADC, in either unit
    q = np.array(list(quart.values()))
    assert (q.max(axis=0) - q.min(axis=0) < 0.5).all(), quart


def test_refit_trains_on_every_patient_and_keeps_the_validation_patients():
    import dataclasses

    from seglib.config import DataConfig
    from seglib.studies.pipeline import split_ids

    ids = [f"P{i:02d}" for i in range(39)][::-1]
    for d in (DataConfig(folds=5, fold=3), DataConfig(n_val=8), DataConfig()):
        train, val = split_ids(ids, d)
        all_train, same_val = split_ids(ids, dataclasses.replace(d, refit=True))
        assert same_val == val and all_train == sorted(ids) and set(val) <= set(all_train) and len(train) < 39


def test_k_fold_validates_every_patient_once():
    ids = [f"P{i:02d}" for i in range(39)] * 3  # slices of each patient: ids repeat
    vals = [split_k_fold(ids, 5, k)[1] for k in range(5)]
    assert sorted(p for v in vals for p in v) == sorted(set(ids))  # every patient exactly once
    assert {len(v) for v in vals} == {7, 8}
    for k, v in enumerate(vals):
        train, val = split_k_fold(reversed(ids), 5, k)  # the order the cases were read in does not matter
        assert val == v and not set(train) & set(val) and len(train) + len(val) == 39
    with pytest.raises(ValueError, match="data.fold = 5"):
        split_k_fold(ids, 5, 5)
    with pytest.raises(ValueError, match="data.folds = 40"):
        split_k_fold(ids, 40, 0)
