"""Tests of seglib.runs (run cache, execute) and seglib.runs.grid (grid expansion, labels)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import seglib
from seglib.runs import (
    ExecutionSummary,
    LocalExecutor,
    RunCache,
    RunNotDone,
    RunOutputs,
    RunSpec,
    cell_label,
    execute,
    expand_grid,
    grid_axes,
)
from seglib.train import History, TrainSettings, fit, make_loader, predict_batches
from toydata import one_thread, squares  # noqa: F401 - one_thread is an autouse fixture

BASE = {
    "model": {"name": "unet", "conv": "3d"},
    "loss": {"name": "dice", "alpha": 0.5},
    "optim": {"name": "adam", "lr": 1e-4},
    "data": {"size": 64},
    "train": {"epochs": 3, "seed": 0},
}




# --------------------------------------------------------------------------- a toy train_fn


class Killed(RuntimeError):
    """A simulated kill of the training process."""


class Trainer:
    """A train_fn that counts its calls and can be told to die after an epoch."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.calls = 0
        self.kill_after = kill_after

    def __call__(self, spec: RunSpec, run_dir) -> RunOutputs:
        self.calls += 1
        cfg = spec.config
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))
        train, val = squares(16, 0), squares(4, 1)
        settings = TrainSettings(epochs=cfg["train"]["epochs"], lr=cfg["optim"]["lr"], device="cpu",
                                 precision="fp32", seed=cfg["train"]["seed"])

        def maybe_die(record):
            if self.kill_after is not None and record["epoch"] == self.kill_after:
                self.kill_after = None
                raise Killed("simulated kill")

        history = fit(model, nn.BCEWithLogitsLoss(), make_loader(train, 8, True, 0), make_loader(val, 4, False, 0),
                      settings, checkpoint_dir=run_dir / "checkpoints", progress=False, on_epoch_end=maybe_die)
        logits, target = next(predict_batches(model, make_loader(val, 4, False, 0), "cpu", "fp32"))
        inter = ((logits > 0) & (target > 0.5)).flatten(1).sum(1).numpy()
        size = (logits > 0).flatten(1).sum(1).numpy() + (target > 0.5).flatten(1).sum(1).numpy()
        metrics = pd.DataFrame({"case": [f"c{i}" for i in range(4)], "dice": 2 * inter / np.maximum(size, 1)})
        return RunOutputs(history=history.to_frame(), metrics=metrics,
                          predictions={"c0": (logits[0, 0] > 0).numpy(), "logits": logits[:2].numpy()},
                          extra=history.summary())


def spec(lr: float = 0.05, epochs: int = 3, seed: int = 0, fingerprint: str = "data-v1") -> RunSpec:
    cfg = json.loads(json.dumps(BASE))
    cfg["optim"]["lr"], cfg["train"]["epochs"], cfg["train"]["seed"] = lr, epochs, seed
    return RunSpec("toy", cfg, fingerprint)


def computed(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=list(History.TIMING_COLUMNS))


def assert_same_result(a, b) -> None:
    pd.testing.assert_frame_equal(computed(a.history), computed(b.history), check_exact=True)
    pd.testing.assert_frame_equal(a.metrics, b.metrics, check_exact=True)
    assert a.predictions.keys() == b.predictions.keys()
    for k in a.predictions:
        np.testing.assert_array_equal(a.predictions[k], b.predictions[k])


# --------------------------------------------------------------------------- specs
def test_key_is_stable_and_covers_config_data_and_code(monkeypatch):
    a = spec()
    assert a.key == spec().key and len(a.key) == 16 and a == spec() and hash(a) == hash(spec())
    assert spec(lr=0.01).key != a.key
    assert spec(fingerprint="data-v2").key != a.key
    from seglib.fingerprint import code_fingerprint

    assert a.code_fingerprint == code_fingerprint("train")
    assert RunSpec(a.study, a.config, a.data_fingerprint, "other-code").key != a.key
    monkeypatch.setattr(seglib, "__version__", "9.9.9")  # the version number alone changes nothing
    assert spec().key == a.key


def test_spec_rejects_bad_study_and_non_json_config():
    with pytest.raises(ValueError, match="study must be a plain folder name"):
        RunSpec("../x", {}, "d")
    with pytest.raises(TypeError, match="Cannot hash a value of type object"):
        RunSpec("toy", {"a": object()}, "d")


# --------------------------------------------------------------------------- execute and the cache
def test_execute_trains_once_then_hits_the_cache(tmp_path):
    cache, trainer = RunCache(tmp_path), Trainer()
    specs = [spec(), spec(lr=0.02)]
    assert [cache.status(s) for s in specs] == ["missing", "missing"]
    first = execute(specs, trainer, cache, progress=False)
    assert trainer.calls == 2 and [cache.status(s) for s in specs] == ["done", "done"]
    assert first.summary.runs == 2 and first.summary.trained == 2 and first.summary.hits == 0
    second = execute(specs + [spec()], trainer, cache, progress=False)
    assert trainer.calls == 2  # nothing trained
    assert (second.summary.hits, second.summary.trained) == (2, 0)
    assert isinstance(second.summary, ExecutionSummary) and len(second) == 3
    assert_same_result(first[0], second[0])
    assert_same_result(first[0], second[2])
    d = cache.run_dir(specs[0])
    assert d == tmp_path / "toy" / specs[0].key
    assert {"config.json", "history.csv", "metrics.csv", "predictions.npz", "provenance.json", "DONE",
            "checkpoints"} <= {p.name for p in d.iterdir()}
    assert (d / "checkpoints" / "best.pt").exists() and not (d / "checkpoints" / "last.pt").exists()
    assert not [p for p in d.rglob("*") if p.name.endswith(".tmp")]


def test_result_contents_and_provenance(tmp_path):
    cache = RunCache(tmp_path)
    (r,) = execute([spec()], Trainer(), cache, progress=False)
    assert r.config == spec().config
    assert list(r.history.epoch) == [1, 2, 3] and list(r.metrics.case) == ["c0", "c1", "c2", "c3"]
    assert r.predictions["c0"].dtype == bool and r.predictions["logits"].shape == (2, 1, 16, 16)
    p = r.provenance
    for k in ("device", "precision", "torch", "monai", "numpy", "python", "seglib", "hostname", "git_commit",
              "started", "ended", "wall_time_s", "best_epoch"):
        assert k in p, k
    assert p["device"] == "cpu" and p["precision"] == "fp32" and p["seglib"] == seglib.__version__
    assert p["wall_time_s"] > 0 and p["key"] == spec().key


def test_force_retrains(tmp_path):
    cache, trainer = RunCache(tmp_path), Trainer()
    execute([spec()], trainer, cache, progress=False)
    again = execute([spec()], trainer, cache, force=True, progress=False)
    assert trainer.calls == 2 and again.summary.trained == 1


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    (straight,) = execute([spec(epochs=4)], Trainer(), RunCache(tmp_path / "a"), progress=False)
    cache, trainer = RunCache(tmp_path / "b"), Trainer(kill_after=2)
    with pytest.raises(Killed):
        execute([spec(epochs=4)], trainer, cache, progress=False)
    assert cache.status(spec(epochs=4)) == "partial"
    last = torch.load(cache.checkpoint_dir(spec(epochs=4)) / "last.pt", weights_only=True)
    assert last["epoch"] == 2
    with pytest.raises(RunNotDone, match="is partial"):
        cache.load(spec(epochs=4))
    with pytest.warns(RuntimeWarning, match="is partial"):
        (resumed,) = execute([spec(epochs=4)], trainer, cache, progress=False)
    assert trainer.calls == 2
    assert_same_result(straight, resumed)


def test_half_written_folder_without_done_is_rebuilt(tmp_path):
    cache, trainer = RunCache(tmp_path), Trainer()
    (good,) = execute([spec()], trainer, cache, progress=False)
    (cache.run_dir(spec()) / "DONE").unlink()
    (cache.run_dir(spec()) / "metrics.csv").write_text("half")
    assert cache.status(spec()) == "partial"
    with pytest.warns(RuntimeWarning, match="partial .*no DONE"):
        (r,) = execute([spec()], trainer, cache, progress=False)
    assert trainer.calls == 2 and cache.status(spec()) == "done"
    assert_same_result(good, r)


@pytest.mark.parametrize("damage, why", [
    (lambda d: (d / "history.csv").unlink(), "history.csv missing"),
    (lambda d: (d / "history.csv").write_text("garbage,\n1"), "history.csv differs"),
    (lambda d: (d / "predictions.npz").write_bytes((d / "predictions.npz").read_bytes()[:50]), "predictions.npz"),
    (lambda d: (d / "DONE").write_text("{not json"), "unreadable DONE"),
    # the best checkpoint (what `seglib predict` reads) is in the manifest too: a truncated one rebuilds the run
    (lambda d: (d / "checkpoints" / "best.pt").write_bytes((d / "checkpoints" / "best.pt").read_bytes()[:100]),
     "checkpoints/best.pt differs"),
])
def test_done_folder_with_a_broken_file_is_corrupt_and_rebuilt(tmp_path, caplog, damage, why):
    cache, trainer = RunCache(tmp_path), Trainer()
    (good,) = execute([spec(epochs=1)], trainer, cache, progress=False)
    damage(cache.run_dir(spec(epochs=1)))
    assert cache.status(spec(epochs=1)) == "corrupt"
    with pytest.raises(RunNotDone, match=why):
        cache.load(spec(epochs=1))
    with pytest.warns(RuntimeWarning, match=f"corrupt .*{why}.*rebuilding"):
        (r,) = execute([spec(epochs=1)], trainer, cache, progress=False)
    assert trainer.calls == 2 and cache.status(spec(epochs=1)) == "done"
    assert "corrupt" in caplog.text
    assert_same_result(good, r)


def test_custom_executor_is_used(tmp_path):
    class Recording(LocalExecutor):
        def __init__(self):
            self.items = []

        def map(self, fn, items):
            self.items = list(items)
            return [fn(x) for x in self.items]

    ex = Recording()
    res = execute([spec(epochs=1), spec(epochs=1)], Trainer(), RunCache(tmp_path), executor=ex, progress=False)
    assert len(ex.items) == 1 and len(res) == 2  # duplicates run once


def test_train_fn_must_return_run_outputs(tmp_path):
    with pytest.raises(TypeError, match="train_fn must return RunOutputs"):
        execute([spec()], lambda s, d: {"history": None}, RunCache(tmp_path), progress=False)


# --------------------------------------------------------------------------- grids
def test_expand_grid_union_of_products_times_seeds():
    grids = [
        {"loss.name": ["dice", "bce"], "optim.name": ["adam", "sgd"]},   # 4 cells
        {"loss.name": ["tversky"], "loss.alpha": [0.25, 0.75]},         # 2 cells
        {"loss.name": ["dice"], "optim.name": ["adam"]},                 # duplicate of the first cell
    ]
    cells = expand_grid(BASE, grids, seeds=[0, 1])
    assert len(cells) == (4 + 2) * 2
    got = [(c["loss"]["name"], c["optim"]["name"], c["loss"]["alpha"], c["train"]["seed"]) for c in cells]
    assert got[:4] == [("dice", "adam", 0.5, 0), ("dice", "adam", 0.5, 1), ("dice", "sgd", 0.5, 0),
                       ("dice", "sgd", 0.5, 1)]
    assert got[-2:] == [("tversky", "adam", 0.75, 0), ("tversky", "adam", 0.75, 1)]
    assert cells == expand_grid(BASE, grids, seeds=[0, 1])  # deterministic order
    # deep copies: the base and the other cells are untouched
    cells[0]["model"]["conv"] = "changed"
    assert BASE["model"]["conv"] == "3d" and cells[1]["model"]["conv"] == "3d"
    assert all(c["data"] == {"size": 64} and c["train"]["epochs"] == 3 for c in cells)


def test_expand_grid_edge_cases():
    assert expand_grid(BASE, [], seeds=None) == [BASE]
    assert [c["train"]["seed"] for c in expand_grid(BASE, [{}], seeds=[3, 4])] == [3, 4]
    sub = expand_grid(BASE, [{"model": [{"name": "unet++", "conv": "2d"}]}])
    assert sub[0]["model"] == {"name": "unet++", "conv": "2d"}
    with pytest.raises(TypeError, match="grid values of 'data.size' must be a list"):
        expand_grid(BASE, [{"data.size": 64}])
    with pytest.raises(ValueError, match="grid key 'data.size' has no values"):
        expand_grid(BASE, [{"data.size": []}])


def test_expand_grid_unknown_key_suggests():
    with pytest.raises(ValueError, match=r"Unknown grid key 'loss.alfa'.*Did you mean \"loss.alpha\"\?"):
        expand_grid(BASE, [{"loss.name": ["dice"]}, {"loss.alfa": [0.3]}], seeds=[0])
    with pytest.raises(ValueError, match=r"Unknown grid key 'model.conv.kind'"):
        expand_grid(BASE, [{"model.conv.kind": ["x"]}])


def test_cell_label_and_axes():
    grids = [{"loss.name": ["tversky"], "loss.alpha": [0.75]}, {"optim.lr": [1e-3]}]
    axes = grid_axes(grids)
    assert axes == ["loss.name", "loss.alpha", "optim.lr"]
    cell = expand_grid(BASE, grids)[0]
    assert cell_label(cell, axes[:2]) == "loss=tversky, alpha=0.75"
    assert cell_label(cell, ["optim.lr", "train.seed"]) == "lr=0.0001, seed=0"
    # colliding short names keep the dotted key
    assert cell_label(BASE, ["model.name", "loss.name", "optim.name"]) == "model=unet, loss=dice, optim=adam"
    assert cell_label({"a": {"size": 1}, "b": {"size": 2}}, ["a.size", "b.size"]) == "a.size=1, b.size=2"
    with pytest.raises(ValueError, match=r"Unknown key 'loss.alfa'.*Did you mean"):
        cell_label(cell, ["loss.alfa"])
