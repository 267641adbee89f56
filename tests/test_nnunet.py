"""The nnU-Net raw layout reader (``seglib/data/readers/nnunet.py``), its phantom, the configuration checks that
read its ``dataset.json``, the slicing axis of the 2D studies, and a study trained and predicted on it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seglib.config import ConfigError, resolve
from seglib.data import load_cases, with_masks
from seglib.data.case import Case
from seglib.data.phantoms import write_dataset
from seglib.data.preprocess import move_slice_axis, restore_slice_axis
from seglib.data.readers.nnunet import read_dataset_json

AFF = np.diag([1.5, 1.5, 3.0, 1.0])


def _save(arr, path: Path, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))


@pytest.fixture()
def tiny(tmp_path) -> Path:
    """Dataset042_Tiny: 2 channels (T2, ADC), labels background 0, gland 1, tumour 2; cases a (labelled), b (label
    map missing) in imagesTr and c in imagesTs. Case a's label: voxel (0,0,0) = 1, (1,1,1) = 2, (2,2,2) = 2."""
    root = tmp_path / "nnUNet_raw" / "Dataset042_Tiny"
    json_text = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "gland": 1, "tumour": 2},
                 "numTraining": 2, "file_ending": ".nii.gz"}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(json_text))
    for case, folder in (("a", "imagesTr"), ("b", "imagesTr"), ("c", "imagesTs")):
        for k in range(2):
            _save(np.full((3, 4, 5), 10.0 * (k + 1), np.float32) + np.arange(60).reshape(3, 4, 5),
                  root / folder / f"{case}_{k:04d}.nii.gz")
    label = np.zeros((3, 4, 5), np.uint8)
    label[0, 0, 0], label[1, 1, 1], label[2, 2, 2] = 1, 2, 2
    _save(label, root / "labelsTr" / "a.nii.gz")
    return root


def test_reads_by_dataset_json(tiny, caplog):
    with caplog.at_level(logging.WARNING):
        cases = load_cases("nnunet", tiny.parent)  # the nnUNet_raw folder holding one dataset
    assert [c.id for c in cases] == ["a", "b", "c"]
    a, b, c = cases
    assert a.meta["channels"] == ["t2", "adc"] and a.image.shape == (2, 3, 4, 5)
    expected = np.arange(60).reshape(3, 4, 5)
    np.testing.assert_array_equal(a.image[1], expected + 20.0)  # channel 0001 = ADC
    assert a.spacing == (1.5, 1.5, 3.0) and np.allclose(a.affine, AFF)
    assert int(a.mask.sum()) == 3 and a.mask.dtype == np.uint8  # every non-zero label by default
    assert b.mask is None and c.mask is None and c.meta["split"] == "test"
    assert "b, c" in caplog.text


@pytest.mark.parametrize("foreground, voxels", [(None, 3), ("all", 3), ("gland", 1), ("Tumour", 2), (2, 2), ("1", 1)])
def test_foreground_by_name_or_value(tiny, foreground, voxels):
    a = load_cases("nnunet", tiny, ids=["a"], foreground=foreground)[0]
    assert int(a.mask.sum()) == voxels
    assert set(np.unique(a.mask)) <= {0, 1}


def test_channel_subset_and_order(tiny):
    a = load_cases("nnunet", tiny, ["adc", "T2"], ids=["a"])[0]
    np.testing.assert_array_equal(a.image[0] - a.image[1], np.full((3, 4, 5), 10.0))
    with pytest.raises(ValueError, match='not in .*dataset.json. Did you mean "adc"'):
        load_cases("nnunet", tiny, ["adcc"])


def test_errors_name_the_file(tiny):
    with pytest.raises(ValueError, match="has no such foreground label.* Its labels: background=0, gland=1, tumour=2"):
        load_cases("nnunet", tiny, foreground="edema")
    with pytest.raises(ValueError, match="has no non-zero label 0"):
        load_cases("nnunet", tiny, foreground=0)
    with pytest.raises(ValueError, match="only dataset 'nnunet'"):
        load_cases("isles22", tiny, foreground=1)
    bad = np.zeros((3, 4, 5), np.uint8)
    bad[0, 0, 0] = 7
    _save(bad, tiny / "labelsTr" / "b.nii.gz")
    with pytest.raises(ValueError, match=r"labelsTr/b.nii.gz holds values 7 .*expected only \[0, 1, 2\]"):
        load_cases("nnunet", tiny)
    _save(np.zeros((3, 4, 6), np.uint8), tiny / "labelsTr" / "b.nii.gz")
    with pytest.raises(ValueError, match=r"labelsTr/b.nii.gz: shape \(3, 4, 6\) does not match"):
        load_cases("nnunet", tiny)
    (tiny / "labelsTr" / "b.nii.gz").unlink()
    (tiny / "imagesTs" / "c_0001.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"imagesTs/c_0001.nii.gz is missing: case c needs one file per channel"):
        load_cases("nnunet", tiny)


def test_dataset_json_errors(tmp_path):
    root = tmp_path / "Dataset001_X"
    root.mkdir()
    with pytest.raises(ValueError, match="No dataset.json"):
        read_dataset_json(tmp_path / "Dataset001_X")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"liver": [1, 2]}}))
    with pytest.raises(ValueError, match="region-based labels are not supported"):
        read_dataset_json(root)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"1": "CT"}, "labels": {"background": 0}}))
    with pytest.raises(ValueError, match="indices must be 0..0"):
        read_dataset_json(root)
    # the Medical Segmentation Decathlon's spelling: modality, labels value -> name
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR", "1": "T1w"},
                                                   "labels": {"0": "background", "1": "edema"}}))
    ds = read_dataset_json(tmp_path)
    assert ds.channels == ("flair", "t1w") and ds.labels == {"background": 0, "edema": 1}
    assert ds.file_ending == ".nii.gz" and ds.foreground_values() == (1,)


def test_4d_image_is_an_error_naming_it(tiny):
    _save(np.zeros((3, 4, 5, 2), np.float32), tiny / "imagesTr" / "b_0000.nii.gz")
    with pytest.raises(ValueError, match=r"imagesTr/b_0000.nii.gz: expected a 3D volume"):
        load_cases("nnunet", tiny)


def test_phantom_layout_and_labels(tmp_path):
    root = write_dataset("nnunet", tmp_path / "p", 3, shape=(16, 16, 12))
    base = root / "Dataset001_Phantom"
    meta = json.loads((base / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "DWI", "1": "ADC"} and meta["labels"] == {"background": 0, "lesion": 1, "rim": 2}
    assert sorted(p.name for p in (base / "imagesTs").iterdir()) == ["phantom_003_0000.nii.gz", "phantom_003_0001.nii.gz"]
    cases = with_masks(load_cases("nnunet", root))
    lesion = with_masks(load_cases("nnunet", root, foreground="lesion"))
    rim = with_masks(load_cases("nnunet", root, foreground="rim"))
    for c, le, ri in zip(cases, lesion, rim):
        np.testing.assert_array_equal(c.mask, le.mask | ri.mask)  # all = lesion + rim, disjoint
        assert not (le.mask & ri.mask).any() and le.mask.sum() > 0 and ri.mask.sum() > 0


def test_config_reads_channels_and_labels_from_dataset_json(tiny):
    for study in ("stroke", "prostate", "brain"):
        cfg = resolve(study, {"profile": "smoke", "data": {"dataset": "nnunet", "data_dir": str(tiny),
                                                           "channels": ["ADC"], "foreground": "tumour"}})
        assert cfg.data.dataset == "nnunet"
    with pytest.raises(ConfigError, match="dataset 'nnunet' has no channel 'dwi'.* Its channels: t2, adc"):
        resolve("stroke", {"profile": "smoke", "data": {"dataset": "nnunet", "data_dir": str(tiny),
                                                        "channels": ["dwi"]}})
    with pytest.raises(ConfigError, match="no such foreground label"):
        resolve("brain", {"profile": "smoke", "data": {"dataset": "nnunet", "data_dir": str(tiny),
                                                       "foreground": "edema"}})
    # phantoms (no data_dir): the writer's channels and labels
    resolve("prostate", {"profile": "smoke", "data": {"dataset": "nnunet", "channels": ["adc"], "foreground": "rim"}})
    with pytest.raises(ConfigError, match="only data.dataset 'nnunet'"):
        resolve("prostate", {"profile": "smoke", "data": {"foreground": "gland"}})
    with pytest.raises(ConfigError, match="is 3D: it cuts no slices"):
        resolve("stroke", {"profile": "smoke", "data": {"dataset": "nnunet", "slice_axis": 0}})


def test_move_slice_axis_round_trip():
    img = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    mask = (img[0] % 7 == 0).astype(np.uint8)
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    case = Case("x", img, mask, (1.0, 2.0, 3.0), affine=aff, meta={"affines": {"t2": aff}})
    moved = move_slice_axis(case, 0)
    assert moved.image.shape == (2, 4, 5, 3) and moved.mask.shape == (4, 5, 3)
    assert moved.spacing == (2.0, 3.0, 1.0)
    # the same voxel keeps its world position: moved voxel (j, k, i) is original voxel (i, j, k)
    np.testing.assert_allclose(moved.affine @ [2, 3, 1, 1], aff @ [1, 2, 3, 1])
    np.testing.assert_allclose(moved.meta["affines"]["t2"], moved.affine)
    np.testing.assert_array_equal(moved.image[:, :, :, 1], img[:, 1])  # slice k along axis 0 is plane [k]
    np.testing.assert_array_equal(restore_slice_axis(moved.mask, 0), mask)
    assert move_slice_axis(case, 2) is case


@pytest.mark.parametrize("study, data", [
    ("stroke", {}),                                       # 3D volumes
    ("prostate", {"slice_axis": 0, "foreground": "lesion"}),  # 2D slices cut along the first voxel axis
    ("brain", {"channels": ["adc"]}),                     # 2D, Buda's preprocessing, one channel
])
def test_a_study_trains_and_predicts_on_an_nnunet_dataset(tmp_path, study, data):
    """The smoke profile of each study with ``data.dataset=nnunet`` on phantoms in the nnU-Net layout: one grid
    cell trained through ``run_grid``, then ``seglib predict`` writes ``<case>.nii.gz`` for every case
    (imagesTs included) on the case's own grid, with metrics for the labelled ones."""
    from seglib.predict import predict_folder
    from seglib.report.notebooks import Paths
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import prepare

    one_cell = {"stroke": {"loss.name": ["dice_bce"]}, "prostate": {"loss.name": ["bce"]},
                "brain": {"loss.name": ["dice"]}}[study]
    cfg = resolve(study, {"profile": "smoke", "data": {"dataset": "nnunet", "n_cases": 5,
                                                        "phantom_shape": [16, 16, 12], **data},
                          "train": {"epochs": 1}, "grid": [one_cell], "seeds": [0]})
    paths = Paths(tmp_path / "build")
    prepared = prepare(cfg, paths)
    assert prepared.source.startswith("synthetic phantoms in the nnU-Net raw (dataset.json) layout")
    assert len(prepared.cases) == 4 and prepared.unlabelled == ["phantom_005"]
    if study == "prostate":  # cut along axis 0: 16 slices of 16 x 12 per case
        assert prepared.cases[0].image.shape == (2, 16, 12, 16)
    grid = run_grid(cfg, prepared, paths, progress=False)
    assert len(grid.runs) == 1 and grid.cases["dice"].between(0, 1).all()
    run_dir = paths.runs / study / grid.runs["key"].iloc[0]
    out = tmp_path / "pred"
    summary = predict_folder(run_dir, prepared.root, out, device="cpu")
    assert summary["cases"] == 5 and summary["cases_with_mask"] == 4
    for case in load_cases("nnunet", prepared.root):
        img = nib.load(str(out / f"{case.id}.nii.gz"))
        assert img.shape == case.image.shape[1:] and np.allclose(img.affine, case.affine)
        assert set(np.unique(np.asarray(img.dataobj)).tolist()) <= {0, 1}


def test_foreground_and_slice_axis_are_part_of_the_data_fingerprint(tmp_path):
    """The array caches key on the prepared data's fingerprint: the same files read with another foreground or cut
    along another axis must not hit the arrays of the default (and the default keeps its fingerprint)."""
    from seglib.report.notebooks import Paths
    from seglib.studies.pipeline import prepare

    paths = Paths(tmp_path / "build")
    prints = set()
    for data in ({}, {"foreground": "lesion"}, {"slice_axis": 1}):
        cfg = resolve("prostate", {"profile": "smoke", "data": {"dataset": "nnunet", "n_cases": 3,
                                                                 "phantom_shape": [12, 12, 8], **data}})
        prints.add(prepare(cfg, paths).fingerprint)
    assert len(prints) == 3
