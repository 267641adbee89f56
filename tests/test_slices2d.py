"""The 2D studies' evaluation options: test-time flips, per-volume post-processing, and a grid over CV folds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seglib.config import RunConfig, load
from seglib.studies import slices2d
from seglib.studies.pipeline import for_cell, split_ids

REPO = Path(__file__).resolve().parents[1]


def cell(**train) -> RunConfig:
    c = RunConfig()
    return dataclasses.replace(c, train=dataclasses.replace(c.train, batch_size=3, **train))


class Asymmetric(nn.Module):
    """A fixed convolution whose kernel has no mirror symmetry: its flipped predictions differ."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(18, dtype=torch.float32).reshape(1, 2, 3, 3) / 20 - 0.4)

    def forward(self, x):
        return self.conv(x)


def test_flips_average_the_mirrored_predictions():
    images = np.random.default_rng(0).normal(size=(5, 2, 8, 8)).astype(np.float32)
    model = Asymmetric().eval()
    plain = slices2d.predict_slices(model, images, cell(), torch.device("cpu"), "fp32")
    for tta, views in (("lr", ((), (3,))), ("lr_ud", ((), (2,), (3,), (2, 3)))):
        got = slices2d.predict_slices(model, images, cell(tta=tta), torch.device("cpu"), "fp32")
        expected = np.zeros_like(plain, dtype=np.float64)
        with torch.no_grad():
            for dims in views:  # flipped along W (left-right) and H (up-down) of (N, C, H, W)
                x = torch.from_numpy(images)
                x = torch.flip(x, dims) if dims else x
                y = torch.sigmoid(model(x))[:, 0]
                expected += (torch.flip(y, [d - 1 for d in dims]) if dims else y).numpy()
        np.testing.assert_allclose(got, expected / len(views), rtol=1e-5, atol=1e-6)
        assert not np.allclose(plain, got, atol=1e-3)  # the flips changed something: the kernel is asymmetric


def test_largest_component_is_kept_per_patient_across_slices():
    # two patients of 3 slices each (stored out of order); patient A has a blob over two slices and a speck
    pred = np.zeros((6, 6, 6), np.uint8)
    pred[0, 1:4, 1:4] = 1  # A slice 2: part of the big blob
    pred[2, 1:4, 1:4] = 1  # A slice 1: the big blob goes on across slices
    pred[1, 5, 5] = 1  # A slice 0: a speck far away
    pred[3, 0, 0] = pred[4, 4:6, 4:6] = 1  # B: a speck and a 2x2 square in another slice
    arrays = {"val_patient": np.array(list("AAABBB")), "val_slice": np.array([2, 0, 1, 0, 1, 2]),
              "val_mask": pred.copy(), "val_image": np.zeros((6, 1, 6, 6), np.float32)}
    kept = pred.copy()
    patients = arrays["val_patient"]
    for p in "AB":
        idx = np.flatnonzero(patients == p)
        idx = idx[np.argsort(arrays["val_slice"][idx])]
        kept[idx] = slices2d.postprocess_volume(pred[idx], cell(postprocess="largest"))
    assert kept[1].sum() == 0 and kept[3].sum() == 0  # the specks are gone
    assert kept[0].sum() == kept[2].sum() == 9 and kept[4].sum() == 4  # the largest component of each stays
    assert slices2d.postprocess_volume(pred, cell()) is pred  # "none" leaves it alone


class Constant(nn.Module):
    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.logits = torch.from_numpy(logits)
        self.i = 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = self.logits[self.i: self.i + len(x)]
        self.i += len(x)
        return out[:, None] + 0 * self.dummy


def test_evaluate_applies_the_post_processing_per_volume():
    truth = np.zeros((4, 6, 6), np.uint8)
    truth[:2, 1:4, 1:4] = 1  # patient A: a blob on both slices; B: a blob on its first slice
    truth[2, 2:5, 2:5] = 1
    pred = truth.copy()
    pred[1, 5, 5] = 1  # a false-positive speck in A
    pred[3, 0, 0:3] = 1  # a false-positive line in B, in a slice without tumour (not touching the blob)
    arrays = {"val_patient": np.array(list("AABB")), "val_slice": np.array([0, 1, 0, 1]), "val_mask": truth,
              "val_image": np.zeros((4, 1, 6, 6), np.float32)}
    logits = np.where(pred > 0, 8.0, -8.0).astype(np.float32)
    loss = nn.BCEWithLogitsLoss()
    raw, _ = slices2d.evaluate(Constant(logits), arrays, cell(), loss, torch.device("cpu"), "fp32")
    post, _ = slices2d.evaluate(Constant(logits), arrays, cell(postprocess="largest"), loss, torch.device("cpu"), "fp32")
    assert (raw["dice"] < 1).all()
    assert post["dice"].tolist() == pytest.approx([1.0, 1.0])


def test_a_grid_over_folds_splits_each_cell_its_own_way(tmp_path):
    cfg = load("brain", None, ["data.folds=3", "grid=[{data.fold: [0, 1, 2]}]", "train.epochs=1"])

    class Prep:  # what for_cell reads of a Prepared
        pass

    import seglib.studies.pipeline as P

    ids = [f"P{i}" for i in range(9)]
    cases = [type("C", (), {"id": i})() for i in ids]
    train, val = split_ids(ids, cfg.data)
    prepared = P.Prepared("brain", "lgg", tmp_path, True, cases, [], train, val, "f", "s", tmp_path)
    seen = []
    for k in range(3):
        d = dataclasses.replace(cfg.data, fold=k)
        p = for_cell(prepared, d)
        assert not set(p.train_ids) & set(p.val_ids)
        seen += p.val_ids
    assert sorted(seen) == ids
    assert for_cell(prepared, cfg.data) is prepared  # the study's own split: unchanged


@pytest.mark.parametrize("path", sorted((REPO / "params").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_parameter_file_validates(path, tmp_path):
    load(path.parent.name, path, data_dir=str(tmp_path))  # full profiles need a data folder: any existing one


def test_the_lgg_cpu_recipe_trains_fold_0_and_predicts_with_its_post_processing(tmp_path, monkeypatch):
    """params/brain/real-cpu.yaml, shrunk to phantoms: its two runs train side by side in the profile's Dask
    workers at the cosine schedule's rates, one validated on fold 0 of 5 (the notebook's results), the other refit on
    every patient (data.refit, left out of the results); `seglib predict` with the refit run keeps one 3D component
    per volume."""
    from seglib.cli import main
    from seglib.data import load_cases
    from seglib.paths import paths
    from seglib.runs import RunCache
    from seglib.studies.collect import grid_specs, run_grid
    from seglib.studies.pipeline import prepare
    from seglib.train.settings import TrainSettings
    from scipy import ndimage

    monkeypatch.setenv("SEGLIB_BUILD", str(tmp_path / "build"))
    cfg = load("brain", REPO / "params" / "brain" / "real-cpu.yaml",
               ["profile=quick", "data.n_cases=10", "data.size=32", "data.samples_per_epoch=16", "train.epochs=4",
                "train.batch_size=8", "model.features=[4, 8, 16, 32, 64]"])
    p = paths(REPO)
    prepared = prepare(cfg, p)
    ids = sorted(c.id for c in prepared.cases)
    assert prepared.val_ids == split_ids(ids, cfg.data)[1] and len(prepared.val_ids) == 2  # fold 0 of 5
    assert cfg.seeds == (0,) and cfg.executor.name == "dask" and cfg.executor.workers == 2
    assert cfg.data.augment_intensity and cfg.train.monitor == "train_loss"
    grid = run_grid(cfg, prepared, p, progress=False)
    expected = [TrainSettings.from_config(cfg.train, cfg.optim, 0).lr_at(e) for e in range(1, 5)]
    lr = grid.history["lr"].tolist()
    assert lr == pytest.approx(expected) and expected[0] < expected[1] > expected[3]
    assert len(grid.runs) == 1 and sorted(grid.cases["case_id"]) == prepared.val_ids
    specs, _ = grid_specs(cfg, prepared)
    assert [s.config["data"]["refit"] for s in specs] == [False, True]
    assert list(grid.refit["key"]) == [specs[1].key]
    refit = for_cell(prepared, dataclasses.replace(cfg.data, refit=True))
    assert refit.train_ids == ids and refit.val_ids == prepared.val_ids  # the refit run trains on every patient
    runs = [RunCache(p.runs).run_dir(s) for s in specs]
    assert [json.loads((r / "provenance.json").read_text())["monitor"] for r in runs] == ["train_loss"] * 2
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(runs[1]), "--data-dir", str(prepared.root), "--out", str(out)]) == 0
    import tifffile

    for case in load_cases("lgg", prepared.root):
        files = sorted((out / case.id).glob("*_mask.tif"), key=lambda f: int(f.stem.split("_")[-2]))
        vol = np.stack([tifffile.imread(f) for f in files], axis=-1) > 0
        assert ndimage.label(vol, structure=np.ones((3, 3, 3)))[1] <= 1  # the largest component, or nothing
