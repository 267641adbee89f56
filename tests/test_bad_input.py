"""Bad input never costs work: every mistake a user can make is refused in one line before training starts."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seglib import cli
from seglib.config import ConfigError, load, resolve

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="params.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- 2. checked before a notebook starts

@pytest.mark.parametrize("seeds", [[-1], [0, 2**32], [3, -7]])
def test_seeds_out_of_range(seeds):
    with pytest.raises(ConfigError, match=r"seeds\[\d\] = -?\d+: expected an integer in \[0, 2\*\*32\)"):
        resolve("brain", {"seeds": seeds})


def test_seed_at_the_top_of_the_range_is_fine():
    assert resolve("brain", {"profile": "smoke", "seeds": [0, 2**32 - 1]}).seeds == (0, 2**32 - 1)


@pytest.mark.parametrize("monitor,hint", [("val_dsc", "val_dice"), ("val_los", "val_loss"), ("val_iou", None)])
def test_monitor_must_be_measured(monitor, hint):
    with pytest.raises(ConfigError, match=r"train.monitor = '%s': training does not measure it" % monitor) as e:
        load("prostate", None, [f"train.monitor={monitor}"])
    assert "train_loss, val_loss, val_dice" in str(e.value)
    assert (f'Did you mean "{hint}"' in str(e.value)) == (hint is not None)
    assert str(e.value).startswith(f"-p train.monitor={monitor}: ")


def test_monitor_swept_by_the_grid_is_checked_per_cell():
    with pytest.raises(ConfigError, match=r"grid\[0\] \(train.monitor=val_f1\): train.monitor = 'val_f1'"):
        resolve("brain", {"profile": "smoke", "grid": [{"train.monitor": ["val_dice", "val_f1"]}]})


@pytest.mark.parametrize("device,message", [
    ("cuda:7", r"train.device = 'cuda:7': device 'cuda:7' requested but"),
    ("gpu", r"train.device = 'gpu': Unknown device 'gpu'"),
    ("cuda:x", r"train.device = 'cuda:x': Unknown device"),
])
def test_device_must_exist(device, message, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=message):
        load("brain", None, [f"train.device={device}"])


@pytest.mark.parametrize("device", ["auto", "cpu", "CPU"])
def test_auto_and_cpu_devices_are_fine(device):
    assert resolve("brain", {"profile": "smoke", "train": {"device": device}}).train.device == device


@pytest.mark.parametrize("features,message", [
    ([], r"model.features = \[\]: expected at least 2 positive widths"),
    ([16], r"model.features = \[16\]: expected at least 2 positive widths"),
    ([8, 0, 16], r"model.features = \[8, 0, 16\]: expected a value in \[1, inf\]"),
    ([8, -16], r"model.features = \[8, -16\]: expected a value in \[1, inf\]"),
])
def test_model_widths(features, message):
    with pytest.raises(ConfigError, match=message):
        resolve("prostate", {"model": {"features": features}})


def test_unetpp_needs_five_levels():
    with pytest.raises(ConfigError, match=r"model 'unetpp' .* needs exactly 5 widths"):
        resolve("brain", {"profile": "smoke", "grid": [], "model": {"name": "unetpp", "features": [8, 16, 32]}})


def test_channels_are_the_datasets():
    with pytest.raises(ConfigError, match=r"data.channels = \['dwi', 't2'\]: dataset 'isles22' has no channel 't2'. "
                                          r"Its channels: dwi, adc, flair"):
        load("stroke", None, ["data.channels=[dwi,t2]"])
    with pytest.raises(ConfigError, match=r"has no channel 'flar'. Did you mean \"flair\"\?"):
        resolve("brain", {"data": {"channels": ["flar"]}})
    with pytest.raises(ConfigError, match=r"data.channels = \[\]: expected at least one"):
        resolve("prostate", {"data": {"channels": []}})
    assert resolve("stroke", {"data": {"channels": ["dwi", "flair"]}}).data.channels == ("dwi", "flair")


def test_override_of_a_key_the_grid_sweeps():
    with pytest.raises(ConfigError, match=r"-p data.size=20: the grid of study 'stroke' sweeps data.size "
                                          r"\(grid\[0\]: \[16, 24\]\).*-p \"grid=\[\{model.conv: \[3d, 2\+1d\], "
                                          r"data.size: \[20\]"):
        load("stroke", None, ["data.size=20"])


def test_the_suggested_grid_is_accepted():
    with pytest.raises(ConfigError) as e:
        load("stroke", None, ["data.size=20"])
    suggested = str(e.value).split('-p "', 1)[1].rstrip('"')
    cfg = load("stroke", None, [suggested])
    assert cfg.grid[0]["data.size"] == [20]


def test_override_of_a_key_some_blocks_do_not_sweep_is_fine():
    # prostate's grid sweeps loss.alpha in its Tversky block only: the BCE block uses the value
    assert load("prostate", None, ["loss.alpha=0.75"]).loss.alpha == 0.75


def test_duplicate_key_in_a_file(tmp_path):
    f = write(tmp_path, "train:\n  epochs: 3\n  batch_size: 2\n  epochs: 4\n", "dup.yaml")
    with pytest.raises(ConfigError, match=r"dup.yaml: duplicate key 'epochs' on line 4 \(first on line 2\)"):
        load("brain", f)
    f = write(tmp_path, "seeds: [0]\ntrain: {epochs: 3}\nseeds: [1]\n", "dup2.yaml")
    with pytest.raises(ConfigError, match=r"dup2.yaml: duplicate key 'seeds' on line 3"):
        load("brain", f)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_params_file(tmp_path, text):
    with pytest.raises(ConfigError, match=r"empty.yaml: the file is empty"):
        load("brain", write(tmp_path, text, "empty.yaml"))


def test_empty_params_file_in_the_cli(tmp_path, capsys):
    assert cli.main(["check", "brain", "--params", str(write(tmp_path, "", "empty.yaml"))]) == 2
    assert "the file is empty" in capsys.readouterr().err


@pytest.mark.parametrize("word", ["on", "off", "auto"])
def test_on_off_literals_as_written(tmp_path, word):
    assert load("brain", None, [f"train.channels_last={word}"]).train.channels_last == word
    f = write(tmp_path, f"train: {{channels_last: {word}}}\n")
    assert load("brain", f).train.channels_last == word
    # a notebook's dict (or YAML 1.1) may hand a boolean: it means on/off
    assert resolve("brain", {"train": {"channels_last": word == "on"}}).train.channels_last in ("on", "off")


def test_on_off_error_quotes_what_was_written():
    with pytest.raises(ConfigError, match=r"train.channels_last = 'of': expected one of 'auto', 'on', 'off'. "
                                          r"Did you mean \"off\"\?"):
        load("brain", None, ["train.channels_last=of"])


@pytest.mark.parametrize("word,value", [("yes", True), ("no", False), ("on", True), ("off", False), ("true", True)])
def test_yes_no_still_mean_booleans_for_boolean_fields(word, value):
    assert load("brain", None, [f"data.augment={word}"]).data.augment is value


@pytest.mark.parametrize("key,hint", [("epochz", "train.epochs"), ("lr", "optim.lr"), ("trian", "train"),
                                      ("batchsize", "train.batch_size"), ("alpah", "loss.alpha")])
def test_top_level_typo_searches_every_section(tmp_path, key, hint):
    f = write(tmp_path, f"{key}: 3\n")
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key '%s'. Did you mean \"%s\"\?" % (key, hint)):
        load("prostate", f)


@pytest.mark.parametrize("text,message", [
    ("train.epochz=3", r"^-p train.epochz=3: unknown key 'train.epochz'. Did you mean \"epochs\"\?"),
    ("epochz=3", r"^-p epochz=3: unknown key 'epochz'. Did you mean \"train.epochs\"\?"),
    ("train.epochs=zero", r"^-p train.epochs=zero: train.epochs = 'zero' \(str\): expected an integer"),
    ("seeds=[-1]", r"^-p seeds=\[-1\]: seeds\[0\] = -1"),
    ("loss.alpha=2", r"^-p loss.alpha=2: loss.alpha = 2"),
])
def test_errors_from_p_name_the_option(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load("prostate", write(tmp_path, "train: {epochs: 3}\n"), [text])


def test_errors_in_the_file_still_name_the_file(tmp_path):
    f = write(tmp_path, "train: {monitor: val_dsc}\n", "mine.yaml")
    with pytest.raises(ConfigError, match=r"^\S*mine.yaml: train.monitor = 'val_dsc'"):
        load("brain", f, ["train.epochs=2"])


def test_cli_check_names_the_p_option(capsys):
    assert cli.main(["check", "brain", "-p", "train.epochz=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-p train.epochz=3: unknown key 'train.epochz'" in err


# --------------------------------------------------------------------------- 3. full disk, read-only folder, Ctrl-C

def _raise(err):
    def f(*a, **k):
        raise err
    return f


@pytest.mark.parametrize("err,message", [
    (OSError(errno.ENOSPC, "No space left on device", "/b/runs/brain/k/metrics.csv"),
     r"^seglib: no space left on the device to write /b/runs/brain/k/metrics.csv \(seglib run brain\)"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/build/executed/brain.ipynb"),
     r"^seglib: cannot write /ro/build/executed/brain.ipynb \(seglib run brain\): the file system is read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/build/runs"),
     r"^seglib: cannot write /ro/build/runs \(seglib run brain\): permission denied"),
])
def test_disk_errors_are_one_line(err, message, monkeypatch, capsys):
    import seglib.report.notebooks

    monkeypatch.setattr(seglib.report.notebooks, "run_notebook", _raise(err))
    assert cli.main(["run", "brain", "--profile", "smoke", "--quiet"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert pytest.importorskip("re").match(message, lines[0])


def test_disk_error_while_writing_a_file(monkeypatch, capsys, tmp_path):
    # the write function itself fails: Path.write_text as used for stamps, results and summary.json
    monkeypatch.setattr(Path, "write_text", _raise(OSError(errno.ENOSPC, "No space left on device", str(tmp_path))))
    import seglib.report.notebooks

    def writes(cfg, p, **k):
        (p.executed / "x.txt").write_text("x")

    monkeypatch.setattr(seglib.report.notebooks, "run_notebook", writes)
    monkeypatch.setenv("SEGLIB_BUILD", str(tmp_path))
    assert cli.main(["run", "prostate", "--profile", "smoke", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no space left on the device to write {tmp_path}" in err


def test_keyboard_interrupt_in_process(monkeypatch, capsys):
    import seglib.report.notebooks

    monkeypatch.setattr(seglib.report.notebooks, "run_notebook", _raise(KeyboardInterrupt()))
    assert cli.main(["run", "brain", "--profile", "smoke", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seglib: interrupted (Ctrl-C) during seglib run brain")


@pytest.mark.slow
def test_ctrl_c_while_a_kernel_runs(tmp_path):
    env = {**os.environ, "SEGLIB_BUILD": str(tmp_path / "build"), "PYTHONPATH": str(ROOT), "SEGLIB_ROOT": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "seglib.cli", "run", "brain", "--profile", "smoke", "--quiet"],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until papermill has started the kernel, then interrupt
    deadline = time.time() + 60
    staging = tmp_path / "build" / "staging"  # the notebook executes there until it succeeds
    while not list(staging.glob("brain-*/brain.ipynb")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    # no traceback of this process (the kernel, a child writing to the same stderr, may log its own shutdown)
    assert "seglib/cli.py" not in err and "papermill/execute.py" not in err and "\nKeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("seglib: interrupted (Ctrl-C) during seglib run brain")


# --------------------------------------------------------------------------- 1. seglib predict

def fake_run(folder: Path, study="brain", dataset="lgg", checkpoint=b"not a checkpoint") -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"study": study, "config": {"data": {"dataset": dataset}}}))
    (folder / "DONE").write_text("")
    (folder / "checkpoints" / "best.pt").write_bytes(checkpoint)
    return folder


def tiny_run(folder: Path) -> Path:
    """A finished brain run with a real (untrained) 2-level U-Net checkpoint."""
    import torch

    from seglib.config import RunConfig
    from seglib.studies.pipeline import build_cell_model

    cell = resolve("brain", {"profile": "smoke", "grid": [], "model": {"features": [4, 8]},
                                    "data": {"size": 16}}).run_base()
    cell["train"]["seed"] = 0
    run = fake_run(folder)
    (run / "config.json").write_text(json.dumps({"study": "brain", "config": cell}))
    model = build_cell_model(RunConfig.from_dict(cell), in_channels=3)  # config.json keeps the plain dict
    torch.save({"model": model.state_dict(), "epoch": 1}, run / "checkpoints" / "best.pt")
    return run


@pytest.fixture
def lgg(tmp_path):
    from seglib.data.phantoms import write_dataset

    return write_dataset("lgg", tmp_path / "data" / "kaggle_3m", 2, shape=(16, 16, 4), seed=0)


def predict(*args):
    return cli.main(["predict", *map(str, args)])


def nothing_written(folder: Path, before: set) -> bool:
    return {p for p in folder.rglob("*")} == before


@pytest.mark.parametrize("inside", ["", "masks", "TCGA_x/deeper"])
def test_predict_refuses_out_inside_the_data(tmp_path, lgg, inside, capsys):
    run = fake_run(tmp_path / "build" / "runs" / "brain" / "k")
    before = set(tmp_path.rglob("*"))
    out = lgg / inside if inside else lgg
    assert predict("--run", run, "--data-dir", lgg, "--out", out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--out {out} is inside the dataset folder it reads, --data-dir {lgg}" in err
    assert nothing_written(tmp_path, before)


@pytest.mark.parametrize("where", ["run", "run/checkpoints", "other_run/x", "runs_root/brain/new"])
def test_predict_refuses_out_in_a_run_folder(tmp_path, lgg, where, capsys, monkeypatch):
    build = tmp_path / "build"
    monkeypatch.setenv("SEGLIB_BUILD", str(build))
    run = fake_run(build / "runs" / "brain" / "k")
    other = fake_run(tmp_path / "elsewhere" / "k2")
    out = {"run": run, "run/checkpoints": run / "checkpoints", "other_run/x": other / "x",
           "runs_root/brain/new": build / "runs" / "brain" / "new"}[where]
    before = set(tmp_path.rglob("*"))
    assert predict("--run", run, "--data-dir", lgg, "--out", out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out} is inside the run" in err and str(run) in err
    assert nothing_written(tmp_path, before)


def test_predict_refuses_a_file_as_out(tmp_path, lgg, capsys):
    run = fake_run(tmp_path / "runs" / "k")
    f = tmp_path / "out.txt"
    f.write_text("keep me")
    assert predict("--run", run, "--data-dir", lgg, "--out", f) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {f} is an existing file, not a folder" in err
    assert f.read_text() == "keep me"


def test_predict_truncated_checkpoint_is_one_line(tmp_path, lgg, capsys):
    import torch

    run = tiny_run(tmp_path / "runs" / "k")
    ckpt = run / "checkpoints" / "best.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert predict("--run", run, "--data-dir", lgg, "--out", tmp_path / "pred") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"seglib: checkpoint {ckpt} cannot be read (")
    assert not (tmp_path / "pred").exists()
    del torch


def test_predict_default_out_is_its_own_folder(tmp_path, lgg, monkeypatch, capsys):
    build = tmp_path / "build"
    monkeypatch.setenv("SEGLIB_BUILD", str(build))
    run = tiny_run(build / "runs" / "brain" / "abc123")
    assert predict("--run", run, "--data-dir", lgg) == 0
    summary = json.loads(capsys.readouterr().out)
    out = Path(summary["out"])
    assert out.parent == build / "predictions" / "brain" / "abc123"
    assert out.name.startswith("kaggle_3m-") and len(out.name) == len("kaggle_3m-") + 8
    assert (out / "summary.json").is_file() and summary["cases"] == 2
    # another folder of the same name gets another folder of predictions
    from seglib.predict import default_out

    assert default_out(run, "brain", tmp_path / "kaggle_3m", build) != out


# --------------------------------------------------------------------------- 2. grids a figure cannot draw

@pytest.mark.parametrize("rows", [
    [{"config": "BCE", "alpha": np.nan, "precision_mean": 0.8, "recall_mean": 0.7, "dice_mean": 0.75}],
    [{"config": "BCE", "precision_mean": 0.8, "recall_mean": 0.7, "dice_mean": 0.75}],
    [],
])
def test_tradeoff_without_tversky_says_so(rows):
    import matplotlib.pyplot as plt

    from seglib import plots

    fig = plots.tradeoff_vs_alpha(pd.DataFrame(rows), baseline="BCE")
    text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "this grid has no Tversky run" in text
    plt.close(fig)


def test_tradeoff_without_a_baseline_run_draws_the_curve():
    import matplotlib.pyplot as plt

    from seglib import plots

    df = pd.DataFrame([{"config": f"tversky a={a}", "alpha": a, "precision_mean": a, "recall_mean": 1 - a,
                        "dice_mean": 0.5} for a in (0.25, 0.75)])
    fig = plots.tradeoff_vs_alpha(df, baseline="BCE")
    assert len(fig.axes) >= 3
    plt.close(fig)


@pytest.mark.slow
def test_ctrl_c_while_two_notebooks_run_side_by_side(tmp_path):
    """`seglib run all --jobs 2`: Ctrl-C stops both kernels, starts no third notebook and ends with one line."""
    env = {**os.environ, "SEGLIB_BUILD": str(tmp_path / "build"), "PYTHONPATH": str(ROOT), "SEGLIB_ROOT": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "seglib.cli", "run", "all", "--profile", "smoke", "--jobs", "2"],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = tmp_path / "build" / "staging"
    deadline = time.time() + 60
    while len(list(staging.glob("*/*.ipynb"))) < 2 and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(2)
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert time.time() - t0 < 20
    assert "seglib/cli.py" not in err and "concurrent/futures" not in err
    assert err.strip().splitlines()[-1].startswith("seglib: interrupted (Ctrl-C) during seglib run all")
    assert not (tmp_path / "build" / "executed" / "stroke.ipynb").exists()  # the third notebook never ran


def test_a_kernel_that_ignores_the_interrupt_is_stopped_after_the_grace():
    """A kernel ignores SIGINT outside a cell (starting up, between cells): the lost Ctrl-C must not leave its
    notebook running to the end. ``stop_child_processes`` interrupts again, then terminates what is left."""
    from concurrent.futures import ThreadPoolExecutor

    from seglib.report.notebooks import stop_child_processes

    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "up"
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(child.wait)
        t0 = time.time()
        stop_child_processes([future], grace=1.0)
        assert future.done() and child.returncode is not None  # terminated, not left to sleep 120 s
        assert time.time() - t0 < 15


def test_intensity_augmentation_needs_the_spatial_one_and_a_2d_study():
    with pytest.raises(ConfigError, match=r"data.augment_intensity = true: .*set data.augment: true"):
        load("brain", None, ["data.augment=false", "data.augment_intensity=true"])
    with pytest.raises(ConfigError, match=r"data.augment_intensity = True: study 'stroke' trains without augmentation"):
        load("stroke", None, ["data.augment_intensity=true"])
    assert load("prostate", None, ["data.augment=true", "data.augment_intensity=true"]).data.augment_intensity


def test_refit_is_refused_where_it_would_choose_on_seen_patients_or_leave_nothing_to_show():
    refit = ["data.refit=true"]
    with pytest.raises(ConfigError, match=r"data.refit = true: the run trains on its validation patients, so "
                                          r"train.monitor = 'val_dice' would choose its epoch on patients it has seen"):
        load("brain", None, refit)
    with pytest.raises(ConfigError, match=r"data.refit = true in every run: .*grid: \[\{data.refit: \[false, true\]\}\]"):
        load("brain", None, [*refit, "train.monitor=train_loss", "train.mode=min"])
    with pytest.raises(ConfigError, match=r"data.refit = true: it trains on every patient, with data.split = 'patient' "
                                          r"only \(got 'slice'\)"):
        load("prostate", None, ["data.split=slice", "grid=[{data.refit: [false, true]}]", "train.monitor=train_loss",
                                "train.mode=min"])
    cfg = load("brain", None, ["grid=[{data.refit: [false, true]}]", "train.monitor=train_loss", "train.mode=min"])
    assert cfg.grid == ({"data.refit": [False, True]},)
