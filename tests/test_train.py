"""Tests of seglib.train (and its helpers train_utils, train_types, train_state).

Tiny model (Conv→BN→ReLU→Conv), BCEWithLogitsLoss, 16×16 synthetic images: a bright
square on Gaussian noise, the mask is the square.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import seglib.train.loop as T
import seglib.train.device as U
import seglib.train.rng as R
from seglib.io import atomic_torch_save
from seglib.train import History, PooledDice, TrainSettings, fit, make_loader, predict_batches
from toydata import one_thread, squares  # noqa: F401 - one_thread is an autouse fixture


# --------------------------------------------------------------------------- fixtures




def tiny_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """Conv→BN→ReLU→Conv; with ``dropout`` a Dropout2d draws from the global torch RNG,
    which a resumed run must restore to match an uninterrupted one."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1)]
    if dropout:
        layers.insert(3, nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def data():
    return squares(24, 0), squares(8, 1)


def loaders(data, batch_size: int = 8):
    train, val = data
    return make_loader(train, batch_size, True, seed=0), make_loader(val, batch_size, False, seed=0)


def settings(**kw) -> TrainSettings:
    base = dict(epochs=3, lr=0.05, device="cpu", precision="fp32", seed=7)
    base.update(kw)
    return TrainSettings(**base)


def run(data, s: TrainSettings, **kw) -> tuple[History, nn.Module]:
    model = kw.pop("model", None)
    model = tiny_model() if model is None else model
    h = fit(model, nn.BCEWithLogitsLoss(), *loaders(data), s, progress=False, **kw)
    return h, model


def computed(h: History) -> pd.DataFrame:
    """The history without the machine-dependent columns (times, memory)."""
    return h.to_frame().drop(columns=list(History.TIMING_COLUMNS))


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].cpu(), b[k].cpu()), k


# --------------------------------------------------------------------------- fit
def test_fit_lowers_the_loss_and_records_each_epoch(data):
    h, _ = run(data, settings(epochs=4))
    df = h.to_frame()
    assert list(df.epoch) == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_dice", "lr", "train_time_s", "epoch_time_s", "peak_mem_mb"} <= set(df)
    assert df.train_loss.iloc[-1] < df.train_loss.iloc[0]
    assert df.val_loss.iloc[-1] < df.val_loss.iloc[0]
    assert (df.lr == 0.05).all() and (df.peak_mem_mb > 0).all() and (df.epoch_time_s >= df.train_time_s).all()
    # monitor val_loss, mode min: the best epoch is the arg-min of val_loss
    assert h.best_epoch == int(df.epoch[df.val_loss.idxmin()]) and h.best_value == df.val_loss.min()
    assert not h.stopped_early and h.device == "cpu" and h.precision == "fp32"
    assert h.total_time_s == pytest.approx(df.epoch_time_s.sum())
    assert h.summary()["best_epoch"] == h.best_epoch


def test_same_seed_gives_identical_history_and_weights(data):
    h1, m1 = run(data, settings())
    h2, m2 = run(data, settings())
    pd.testing.assert_frame_equal(computed(h1), computed(h2), check_exact=True)
    assert_same_state(m1.state_dict(), m2.state_dict())


def test_another_seed_shuffles_differently(data):
    h1, _ = run(data, settings(seed=1))
    h2, _ = run(data, settings(seed=2))
    assert not computed(h1).train_loss.equals(computed(h2).train_loss)


def test_fit_leaves_global_flags_as_they_were(data):
    before = torch.are_deterministic_algorithms_enabled()
    run(data, settings(epochs=1))
    assert torch.are_deterministic_algorithms_enabled() == before


def test_resume_after_a_kill_equals_an_uninterrupted_run(data, tmp_path):
    straight, m_straight = run(data, settings(epochs=4), checkpoint_dir=tmp_path / "a", model=tiny_model(0, 0.3))

    class Killed(RuntimeError):
        pass

    def kill_after_2(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        run(data, settings(epochs=4), checkpoint_dir=tmp_path / "b", on_epoch_end=kill_after_2,
            model=tiny_model(0, 0.3))
    # a new process: a fresh model object with other initial weights, global RNG disturbed
    torch.manual_seed(123), np.random.seed(5), random.seed(9)
    resumed, m_resumed = run(data, settings(epochs=4), checkpoint_dir=tmp_path / "b", model=tiny_model(99, 0.3))
    pd.testing.assert_frame_equal(computed(straight), computed(resumed), check_exact=True)
    assert (resumed.best_epoch, resumed.best_value) == (straight.best_epoch, straight.best_value)
    assert_same_state(m_straight.state_dict(), m_resumed.state_dict())
    last_a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    last_b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert_same_state(last_a["model"], last_b["model"])
    assert last_b["epoch"] == 4


def test_two_then_four_epochs_equals_four(data, tmp_path):
    straight, m_straight = run(data, settings(epochs=4), checkpoint_dir=tmp_path / "a")
    run(data, settings(epochs=2), checkpoint_dir=tmp_path / "b")
    resumed, m_resumed = run(data, settings(epochs=4), checkpoint_dir=tmp_path / "b")
    pd.testing.assert_frame_equal(computed(straight), computed(resumed), check_exact=True)
    assert_same_state(m_straight.state_dict(), m_resumed.state_dict())


def test_finished_checkpoint_returns_without_training(data, tmp_path, monkeypatch):
    h1, m1 = run(data, settings(epochs=2), checkpoint_dir=tmp_path)

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(T, "train_one_epoch", boom)
    h2, m2 = run(data, settings(epochs=2), checkpoint_dir=tmp_path, model=tiny_model(5))
    pd.testing.assert_frame_equal(h1.to_frame(), h2.to_frame())
    assert_same_state(m1.state_dict(), m2.state_dict())


def test_checkpoints_load_with_weights_only(data, tmp_path):
    h, model = run(data, settings(epochs=2), checkpoint_dir=tmp_path)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "epoch", "history", "early_stopping", "rng", "best_model"} <= set(last)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == h.best_epoch
    assert_same_state(best["model"], model.state_dict())  # restore_best: the model holds the best weights
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_truncated_checkpoint_warns_and_trains_from_scratch(data, tmp_path):
    fresh, m_fresh = run(data, settings(epochs=3))
    run(data, settings(epochs=2), checkpoint_dir=tmp_path)
    path = tmp_path / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="Cannot resume from checkpoint .*last.pt.*from scratch"):
        h, m = run(data, settings(epochs=3), checkpoint_dir=tmp_path)
    pd.testing.assert_frame_equal(computed(fresh), computed(h), check_exact=True)
    assert_same_state(m_fresh.state_dict(), m.state_dict())


def test_checkpoint_of_other_settings_is_not_resumed(data, tmp_path):
    run(data, settings(epochs=1, lr=0.01), checkpoint_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="settings differ in lr"):
        h, _ = run(data, settings(epochs=2), checkpoint_dir=tmp_path)
    assert h.n_epochs == 2


def test_resume_false_ignores_the_checkpoint(data, tmp_path):
    run(data, settings(epochs=2), checkpoint_dir=tmp_path)
    h, _ = run(data, settings(epochs=2), checkpoint_dir=tmp_path, resume=False)
    assert h.n_epochs == 2


# --------------------------------------------------------------------------- early stopping
def test_early_stopping_with_patience(data):
    # val_dice lies in [0, 1]: with min_delta 1 no epoch can beat the first one, so with
    # patience 2 training stops after epoch 1 + 2 = 3 and the best epoch is 1.
    h, _ = run(data, settings(epochs=10, monitor="val_dice", mode="max", min_delta=1.0, patience=2))
    assert h.n_epochs == 3 and h.stopped_early and h.best_epoch == 1
    assert h.best_value == h.records[0]["val_dice"]


def test_unknown_monitor_names_the_options(data):
    with pytest.raises(ValueError, match=r"monitor 'val_dise' is not measured\. Did you mean \"val_dice\"\?"):
        run(data, settings(epochs=1, monitor="val_dise"))


def test_without_validation_only_train_loss_can_be_monitored(data):
    with pytest.raises(ValueError, match="monitor 'val_loss' needs a validation loader"):
        fit(tiny_model(), nn.BCEWithLogitsLoss(), loaders(data)[0], None, settings(), progress=False)


def test_sgd_with_clipping_and_a_custom_metric(data):
    calls = []

    def mean_logit(logits, target):  # no reduce(): averaged weighted by batch size
        calls.append(logits.shape[0])
        return {"mean_logit": float(logits.mean())}

    h, _ = run(data, settings(epochs=2, optimizer="sgd", lr=0.1, weight_decay=1e-4, grad_clip=0.5,
                              monitor="val_mean_logit", mode="max"), metric_fn=mean_logit)
    assert "val_mean_logit" in h.records[0] and "val_dice" not in h.records[0]
    assert all(math.isfinite(r["train_loss"]) for r in h.records)
    assert calls == [8, 8]  # one validation batch of 8 per epoch


def test_grad_clip_bounds_the_update():
    # SGD without momentum, one step: Δw = lr·g_clipped. The raw gradient norm is huge
    # (inputs ×100), so clipping scales it to norm = clip: ‖Δw‖ = lr·clip = 1e-3
    # (up to float32 rounding of w + Δw, hence the relative tolerance).
    x, y = torch.randn(4, 1, 16, 16) * 100, torch.ones(4, 1, 16, 16)
    model = tiny_model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    s = settings(epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=1e-3, monitor="train_loss")
    h = fit(model, nn.BCEWithLogitsLoss(), DataLoader(TensorDataset(x, y), batch_size=4), None, s, progress=False)
    assert set(h.records[0]) == {"epoch", "train_loss", "lr", *History.TIMING_COLUMNS}
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float(torch.linalg.vector_norm(after - before)) == pytest.approx(1e-3, rel=1e-2)


# --------------------------------------------------------------------------- precision / memory format
def test_bf16_autocast_and_channels_last_run_on_cpu(data):
    h, model = run(data, settings(epochs=1, precision="bf16", channels_last=True))
    assert h.precision == "bf16" and h.channels_last
    assert math.isfinite(h.records[0]["train_loss"])
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_resolve_device():
    assert U.resolve_device("cpu") == torch.device("cpu")
    assert U.resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ValueError, match=r"Unknown device 'cdua'\. Did you mean \"cuda\"\?"):
        U.resolve_device("cdua")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1' requested but CUDA is not available"):
            U.resolve_device("cuda:1")
        if not U._mps_available():
            assert U.resolve_device("auto") == torch.device("cpu")


def test_resolve_precision(monkeypatch):
    cpu = torch.device("cpu")
    assert U.resolve_precision("fp32", cpu) == "fp32"
    assert U.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device"):
        U.resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match=r"Unknown precision 'bf61'\. Did you mean \"bf16\"\?"):
        U.resolve_precision("bf61", cpu)
    monkeypatch.setenv(U.ENV_CPU_BF16, "1")
    assert U.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(U, "CPU_AUTO_BF16", False)  # the single switch of the CPU default
    assert U.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(U, "CPU_AUTO_BF16", True)
    monkeypatch.setenv(U.ENV_CPU_BF16, "0")
    assert U.resolve_precision("auto", cpu) == "fp32"


def test_cpu_bf16_detection_reads_the_flags(tmp_path, monkeypatch):
    monkeypatch.delenv(U.ENV_CPU_BF16, raising=False)
    yes, no = tmp_path / "yes", tmp_path / "no"
    yes.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    no.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert U.cpu_has_native_bf16(yes) and not U.cpu_has_native_bf16(no)
    assert not U.cpu_has_native_bf16(tmp_path / "absent")


def test_channels_last_policy():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    m2, m3 = tiny_model(), nn.Sequential(nn.Conv3d(1, 2, 3))
    assert U.resolve_channels_last("auto", m2, cpu, "bf16") and U.resolve_channels_last("auto", m2, cuda, "fp32")
    assert not U.resolve_channels_last("auto", m2, cpu, "fp32")
    # 3D CNNs: channels_last_3d by default on CPU and CUDA (faster per step in the throughput benchmark)
    assert U.resolve_channels_last("auto", m3, cuda, "bf16") and U.resolve_channels_last("auto", m3, cpu, "fp32")
    assert not U.resolve_channels_last("auto", m3, torch.device("mps"), "fp32")
    assert U.channels_last_format(m3) == torch.channels_last_3d and U.channels_last_format(m2) == torch.channels_last
    assert not U.resolve_channels_last("on", nn.Sequential(nn.Linear(2, 2)), cpu, "fp32")
    assert U.resolve_channels_last("on", m2, cpu, "fp32") and not U.resolve_channels_last(False, m2, cuda, "bf16")
    with pytest.raises(ValueError, match="channels_last must be"):
        U.resolve_channels_last("yes", m2, cpu, "fp32")


# --------------------------------------------------------------------------- settings, metric, loaders
@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="adamm"), r"Unknown optimizer 'adamm'\. Did you mean \"adam\"\?"),
    (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
    (dict(mode="up"), "mode must be 'min' or 'max', got 'up'"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(patience=0), "patience must be an integer >= 1"),
    (dict(grad_clip=-1.0), "grad_clip must be None or > 0"),
    (dict(monitor="dice"), "monitor must be 'train_loss', 'val_loss' or 'val_<metric>'"),
])
def test_settings_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainSettings(**kw)


def test_pooled_dice_pools_counts_over_batches():
    # batch 1: 2 predicted, both true → TP=2; batch 2: 1 predicted, none true → FP=1.
    # pooled Dice = 2·2 / (2·2 + 1 + 0) = 0.8 (a mean of per-batch Dice would be (1 + 0)/2).
    d = PooledDice()
    b1 = d(torch.tensor([[[1.0, 1.0, -1.0]]]), torch.tensor([[[1.0, 1.0, 0.0]]]))
    b2 = d(torch.tensor([[[1.0, -1.0, -1.0]]]), torch.tensor([[[0.0, 0.0, 0.0]]]))
    assert b1 == {"tp": 2.0, "fp": 0.0, "fn": 0.0} and b2 == {"tp": 0.0, "fp": 1.0, "fn": 0.0}
    assert d.reduce([b1, b2]) == {"dice": pytest.approx(0.8)}
    # empty prediction and empty truth: 0/0 → NaN
    assert math.isnan(d.reduce([d(-torch.ones(1, 1, 3), torch.zeros(1, 1, 3))])["dice"])
    # two channels: foreground = argmax ≠ 0, target as class indices → TP=1, FN=1 → 2/3
    logits = torch.tensor([[[0.0, 0.0], [1.0, -1.0]]])  # (N=1, C=2, 2 pixels): pixel 0 → class 1
    assert d.reduce([d(logits, torch.tensor([[[1, 1]]]))])["dice"] == pytest.approx(2 / 3)


def test_make_loader_orders_by_generator():
    ds = TensorDataset(torch.arange(10.0))
    order = lambda ld: torch.cat([b[0] for b in ld]).tolist()  # noqa: E731
    a, b = make_loader(ds, 3, True, seed=4), make_loader(ds, 3, True, seed=4)
    assert order(a) == order(b) and sorted(order(a)) == list(range(10))
    R.reseed_loader(a, 1, 2), R.reseed_loader(b, 1, 2)
    assert order(a) == order(b)
    assert order(make_loader(ds, 3, False, seed=4)) == list(range(10))
    assert make_loader(ds, 2, True, 0, num_workers=2).worker_init_fn is R.seed_worker


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    state = R.get_rng_state()
    atomic_torch_save(state, tmp_path / "rng.pt")
    draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    R.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(draws[0], torch.rand(3)) and np.array_equal(draws[1], np.random.rand(3))
    assert draws[2] == [random.random() for _ in range(3)]


def test_predict_batches_yields_cpu_logits_in_eval_mode(data):
    model = tiny_model()
    _, val = loaders(data)
    out = list(predict_batches(model, val, "cpu", "fp32"))
    assert len(out) == 1 and out[0][0].shape == (8, 1, 16, 16) and out[0][1].shape == (8, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(out[0][0], model(val.dataset.tensors[0]))
    only_images = DataLoader(TensorDataset(val.dataset.tensors[0]), batch_size=8)
    assert next(iter(predict_batches(model, only_images, "cpu")))[1] is None


def test_evaluation_forwards_batches_together_but_scores_each_loader_batch(data, monkeypatch):
    """Validation and prediction forward consecutive loader batches in one call (fewer, larger calls), while the
    loss is still that of each loader batch: a batch-reduced loss (a soft Dice over the batch) gives the value of
    the per-batch loop, and predictions come back one loader batch at a time."""
    from seglib.nn.losses import build_loss

    model = tiny_model()
    _, val = data  # 8 images of 16 × 16
    loader = make_loader(val, 3, False, seed=0)  # batches of 3, 3, 2
    loss_fn = build_loss("dice", batch=True)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    monkeypatch.setattr(T, "FORWARD_CHUNK_ELEMENTS", 6 * 16 * 16)  # two loader batches a call
    got = T.evaluate(model, loss_fn, loader, torch.device("cpu"), "fp32", metric_fn=PooledDice())
    assert calls == [6, 2]
    model.eval()
    expected, counts = 0.0, []
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            expected += float(loss_fn(logits, y)) * len(x)
            counts.append(PooledDice()(logits, y))
    assert got["loss"] == pytest.approx(expected / 8, rel=1e-6)
    assert got["dice"] == PooledDice().reduce(counts)["dice"]
    with torch.no_grad():  # not the loss of the 8 at once
        whole = float(loss_fn(model(val.tensors[0]), val.tensors[1]))
    assert abs(got["loss"] - whole) > 1e-4
    calls.clear()
    out = list(predict_batches(model, loader, "cpu", "fp32"))
    assert calls == [6, 2] and [o[0].shape[0] for o in out] == [3, 3, 2]
    monkeypatch.setattr(T, "FORWARD_CHUNK_ELEMENTS", 1)  # a batch is never split
    calls.clear()
    list(predict_batches(model, loader, "cpu", "fp32"))
    assert calls == [3, 3, 2]


def test_autocast_takes_a_device_or_its_name():
    """A run's history records its device as a string ("cpu"); evaluation passes it on to autocast."""
    with U.autocast("cpu", "bf16"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with U.autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_learning_rate_schedule_warms_up_then_decays(data, schedule):
    s = settings(epochs=6, lr=0.1, schedule=schedule, warmup_epochs=2)
    rates = [s.lr_at(e) for e in range(1, 7)]
    assert rates[:3] == pytest.approx([0.05, 0.1, 0.1])  # linear warm-up, then the first decay epoch at lr
    assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] > 0
    if schedule == "cosine":
        assert rates[3] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))
    else:
        assert rates[3] == pytest.approx(0.1 * 0.75 ** 0.9)
    h, _ = run(data, s)
    assert list(h.to_frame()["lr"]) == pytest.approx(rates)  # what fit trained each epoch with
    assert [settings(epochs=4, lr=0.1).lr_at(e) for e in (1, 4)] == [0.1, 0.1]  # constant


def test_a_scheduled_run_resumes_at_the_rates_of_an_uninterrupted_one(data, tmp_path):
    s = settings(epochs=4, schedule="cosine", warmup_epochs=1)
    straight, m_straight = run(data, s, checkpoint_dir=tmp_path / "a")

    def stop_after_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(data, s, checkpoint_dir=tmp_path / "b", on_epoch_end=stop_after_2)
    resumed, m_resumed = run(data, s, checkpoint_dir=tmp_path / "b", model=tiny_model(5))
    pd.testing.assert_frame_equal(computed(straight), computed(resumed), check_exact=True)
    assert_same_state(m_straight.state_dict(), m_resumed.state_dict())


@pytest.mark.parametrize("kw, match", [({"schedule": "step"}, "schedule"),
                                       ({"schedule": "cosine", "warmup_epochs": 3}, "warmup_epochs")])
def test_schedule_settings_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        settings(**kw)


def test_determinism_sets_torchs_flags_without_loading_inductor():
    """``determinism`` turns deterministic kernels on (warn-only) and restores the flags, without the
    2-4 s import of ``torch._inductor`` that ``torch.use_deterministic_algorithms`` makes; where inductor
    is loaded its flag follows. In a fresh interpreter, so nothing else has imported inductor before."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from seglib.train.state import determinism, set_deterministic\n"
            "with determinism(True, torch.device('cpu')):\n"
            "    inside = (torch.are_deterministic_algorithms_enabled(),\n"
            "              torch.is_deterministic_algorithms_warn_only_enabled())\n"
            "after = torch.are_deterministic_algorithms_enabled()\n"
            "loaded = 'torch._inductor' in sys.modules\n"
            "import torch._inductor.config as ic\n"
            "set_deterministic(True)\n"
            "print(inside, after, loaded, ic.deterministic, torch.are_deterministic_algorithms_enabled())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["(True,", "True)", "False", "False", "True", "True"], out


def test_checkpoints_are_written_at_most_once_an_interval(data, tmp_path, monkeypatch):
    """``fit`` writes its checkpoints after the last epoch and after an epoch that ends the interval after the
    previous write (``checkpoint_every_s``, else ``$SEGLIB_CHECKPOINT_EVERY_S``, else 30 s), with ``best.pt``
    when the best epoch changed; 0 writes after every epoch. The weights trained do not depend on it."""
    saves = []
    real = T.save_checkpoints
    monkeypatch.setattr(T, "save_checkpoints", lambda d, state, *a, **k: (saves.append((state.epoch, k["is_best"])),
                                                                             real(d, state, *a, **k)))
    h_every, m_every = run(data, settings(epochs=4), checkpoint_dir=tmp_path / "every", checkpoint_every_s=0)
    assert [e for e, _ in saves] == [1, 2, 3, 4]
    saves.clear()
    h_once, m_once = run(data, settings(epochs=4), checkpoint_dir=tmp_path / "once", checkpoint_every_s=3600)
    assert saves == [(4, True)]
    last = torch.load(tmp_path / "once" / "last.pt", weights_only=False)
    best = torch.load(tmp_path / "once" / "best.pt", weights_only=False)
    assert last["epoch"] == 4 and best["epoch"] == h_once.best_epoch
    assert_same_state(m_every.state_dict(), m_once.state_dict())
    pd.testing.assert_frame_equal(computed(h_every), computed(h_once))
    saves.clear()
    monkeypatch.setenv(T.ENV_CHECKPOINT_EVERY, "3600")
    run(data, settings(epochs=2), checkpoint_dir=tmp_path / "env")
    assert [e for e, _ in saves] == [2]
    monkeypatch.delenv(T.ENV_CHECKPOINT_EVERY)
    assert T.checkpoint_interval() == T.CHECKPOINT_EVERY_S == 30.0
    monkeypatch.setenv(T.ENV_CHECKPOINT_EVERY, "soon")
    with pytest.raises(ValueError, match="SEGLIB_CHECKPOINT_EVERY_S='soon': expected seconds"):
        T.checkpoint_interval()


@pytest.mark.parametrize("weight_decay", [0.0, 1e-4])
def test_adam_updates_all_tensors_at_once_with_the_loops_bits(weight_decay):
    """``build_optimizer``'s Adam takes the foreach path (fewer, larger operations) and gives the very weights
    of torch's per-tensor loop, so the faster optimiser changed no result."""
    from seglib.nn.unet import build_model
    from seglib.train.settings import build_optimizer

    def trained(make_opt):
        torch.manual_seed(0)
        model = build_model("unet", spatial_dims=2, in_channels=1, out_channels=1, features=(4, 8, 16))
        opt = make_opt(model.parameters())
        gen = torch.Generator().manual_seed(1)
        for _ in range(12):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        return opt, [p.detach() for p in model.parameters()]

    settings = TrainSettings(epochs=1, lr=3e-3, weight_decay=weight_decay)
    opt, ours = trained(lambda ps: build_optimizer(ps, settings))
    assert opt.defaults["foreach"] is True
    _, loop = trained(lambda ps: torch.optim.Adam(ps, lr=3e-3, weight_decay=weight_decay, foreach=False))
    assert all(torch.equal(a, b) for a, b in zip(ours, loop))
