"""seglib.config: every error message, merging, the profiles, and the hash's stability."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seglib import cli
from seglib.config import (
    PROFILES, STUDIES, ConfigError, as_dict, config_hash, load, parse_assignment, resolve,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="params.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_typo_key_suggests_the_right_one(tmp_path):
    f = write(tmp_path, "train:\n  epohcs: 3\n")
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key 'train.epohcs'. Did you mean \"epochs\"\?"):
        load("prostate", f)


def test_typo_top_level_key(tmp_path):
    f = write(tmp_path, "trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trian'. Did you mean \"train\"\?"):
        load("prostate", f)


def test_string_where_a_number_belongs(tmp_path):
    f = write(tmp_path, "optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"optim.lr = 'fast' \(str\): expected a number"):
        load("brain", f)


def test_integer_key_rejects_fraction():
    with pytest.raises(ConfigError, match=r"train.epochs = 2.5 \(float\): expected an integer"):
        resolve("brain", {"train": {"epochs": 2.5}})


def test_alpha_outside_unit_interval(tmp_path):
    f = write(tmp_path, "loss:\n  name: tversky\n  alpha: 1.5\n")
    with pytest.raises(ConfigError, match=r"loss.alpha = 1.5: expected a value in \[0, 1\]"):
        load("prostate", f)


def test_alpha_outside_unit_interval_inside_grid():
    with pytest.raises(ConfigError, match=r"grid\[0\].loss.alpha = -0.1: expected a value in \[0, 1\]"):
        resolve("prostate", {"grid": [{"loss.alpha": [0.25, -0.1]}]})


def test_unknown_choice_suggests():
    with pytest.raises(ConfigError, match=r"loss.name = 'tverski': expected one of .*Did you mean \"tversky\"\?"):
        resolve("prostate", {"loss": {"name": "tverski"}})


def test_unknown_grid_key_suggests():
    with pytest.raises(ConfigError, match=r"grid\[1\].model.cnov: unknown key 'model.cnov'. Did you mean \"conv\"\?"):
        resolve("stroke", {"grid": [{"loss.name": ["dice"]}, {"model.cnov": ["3d"]}]})


@pytest.mark.parametrize("study,dataset,hint", [
    ("stroke", "isles22", "isles22.grand-challenge.org"),
    ("prostate", "prostatex", "PROSTATEx_masks"),
    ("brain", "lgg", "lgg-mri-segmentation"),
])
def test_full_profile_requires_data_dir(study, dataset, hint):
    with pytest.raises(ConfigError, match=r"profile 'full' of study .* needs data.data_dir") as e:
        load(study, ROOT / "params" / study / "full.yaml")
    assert hint in str(e.value)
    assert f"Then run: seglib run {study} --params {ROOT / 'params' / study / 'full.yaml'} --data-dir" in str(e.value)


def test_the_data_dir_advice_names_the_parameter_file_given(tmp_path):
    own = tmp_path / "my-profile.yaml"
    own.write_text("profile: full\ntrain: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"needs data.data_dir") as e:
        load("brain", own)
    assert f"Then run: seglib run brain --params {own} --data-dir /path/to/it" in str(e.value)
    with pytest.raises(ConfigError, match=r"needs data.data_dir") as e:
        resolve("brain", {"profile": "full"})  # no file: the profile's own
    assert "--params params/brain/full.yaml --data-dir" in str(e.value)


def test_missing_data_dir_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"data.data_dir = '.*nowhere': no such folder"):
        resolve("brain", {"data": {"data_dir": str(tmp_path / "nowhere")}})


def test_wrong_dataset_for_study():
    with pytest.raises(ConfigError, match=r"study 'brain' reads lgg"):
        resolve("brain", {"data": {"dataset": "prostatex"}})


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load("brain", write(tmp_path, "train: [1, 2\n", "bad.yaml"))
    with pytest.raises(ConfigError, match=r"missing.yaml does not exist"):
        load("brain", tmp_path / "missing.yaml")


def test_override_merges_over_profile():
    base = resolve("prostate", {"profile": "quick"})
    cfg = load("prostate", None, ["train.epochs=2", "loss.alpha=0.75"])
    assert cfg.train.epochs == 2 and cfg.loss.alpha == 0.75
    assert cfg.train.batch_size == base.train.batch_size  # untouched keys keep the profile's value
    assert parse_assignment("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("profile", PROFILES)
def test_profile_files_are_complete_and_valid(study, profile, tmp_path):
    path = ROOT / "params" / study / f"{profile}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["profile"] == profile
    # complete: every section is written out, so a profile never inherits another's values
    for section in ("data", "model", "loss", "optim", "train", "grid", "seeds"):
        assert section in raw, f"{path} lacks {section}"
    if profile == "full":
        raw["data"]["data_dir"] = str(tmp_path)
    cfg = resolve(study, raw, source=str(path))
    assert cfg.profile == profile
    assert len(cfg.seeds) >= (3 if profile != "smoke" else 1)


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("profile", PROFILES)
def test_typed_cell_gives_back_the_plain_dict_of_every_run(study, profile, tmp_path):
    """Every run of every profile: the typed cell's ``to_dict`` is the very dict its key is computed from
    (same keys, same numbers, same JSON), and its fields are those of the study's sections."""
    from types import SimpleNamespace

    from seglib.config import RunConfig
    from seglib.hashing import canonical_json
    from seglib.studies.collect import grid_specs

    over = [f"data.data_dir={tmp_path}"] if profile == "full" else []
    cfg = load(study, ROOT / "params" / study / f"{profile}.yaml", over)
    specs, _ = grid_specs(cfg, SimpleNamespace(fingerprint="f"))
    for spec in specs:
        cell = RunConfig.from_dict(spec.config)
        assert cell.to_dict() == spec.config
        assert canonical_json(cell.to_dict()) == canonical_json(spec.config)
        assert cell.seed == spec.config["train"]["seed"] and cell.data.size == spec.config["data"]["size"]
        assert type(cell.data) is type(cfg.data) and type(cell.train) is type(cfg.train)
    assert RunConfig.from_dict(cfg.run_base()).train == cfg.train


def test_typed_cell_validates_like_a_parameter_file():
    from seglib.config import RunConfig

    with pytest.raises(ConfigError, match=r"unknown key 'data.szie'. Did you mean \"size\"\?"):
        RunConfig.from_dict({"data": {"szie": 8}})
    with pytest.raises(ConfigError, match=r"train.seed = -1: expected a value in \[0, "):
        RunConfig.from_dict({"train": {"seed": -1}})
    with pytest.raises(ConfigError, match="unknown section"):
        RunConfig.from_dict({"settings": {}})
    cell = RunConfig.from_dict({"data": {"size": 8, "channels": ["dwi"]}, "train": {"seed": 3}})
    assert cell.data.channels == ("dwi",) and cell.seed == 3 and cell.model.name == "unet"

def test_hash_is_stable_and_sensitive():
    a = resolve("brain", {"profile": "quick"})
    b = resolve("brain", {"profile": "quick", "train": {}})
    assert a.hash == b.hash == config_hash(as_dict(a))
    c = resolve("brain", {"profile": "quick", "optim": {"lr": a.optim.lr * 2}})
    assert c.hash != a.hash
    # key order does not matter
    d = as_dict(a)
    assert config_hash(dict(reversed(list(d.items())))) == a.hash


def test_hash_is_the_same_in_another_process():
    code = "from seglib.config import resolve; print(resolve('stroke', {'profile': 'quick'}).hash)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == resolve("stroke", {"profile": "quick"}).hash


def test_resolved_config_round_trips_through_json():
    cfg = resolve("stroke", {"profile": "smoke"})
    again = resolve("stroke", json.loads(json.dumps({k: v for k, v in as_dict(cfg).items()
                                                     if k not in ("study",)})))
    assert again == cfg and again.hash == cfg.hash


def test_cli_run_validates_before_any_notebook_starts(tmp_path, monkeypatch, capsys):
    import seglib.report.notebooks

    started = []
    monkeypatch.setattr(seglib.report.notebooks, "run_notebook", lambda *a, **k: started.append(a))
    f = write(tmp_path, "loss:\n  alpha: 2\n")
    assert cli.main(["run", "prostate", "--params", str(f)]) == 2
    err = capsys.readouterr().err
    assert "loss.alpha = 2" in err and "expected a value in [0, 1]" in err
    assert started == []
    # 'all' validates the three studies before the first one runs
    assert cli.main(["run", "all", "-p", "train.epochs=zero"]) == 2
    assert started == []


def test_cli_check_prints_hash(capsys):
    assert cli.main(["check", "brain", "--profile", "smoke"]) == 0
    assert resolve("brain", {"profile": "smoke"}).hash in capsys.readouterr().out


def test_monitor_options_are_what_the_training_metric_reports_and_validation_imports_no_torch():
    import subprocess
    import sys

    from seglib.config.checks import monitor_options
    from seglib.eval.metrics import PooledDice

    keys = PooledDice().reduce([{"tp": 1.0, "fp": 0.0, "fn": 0.0}])
    assert monitor_options() == ("train_loss", "val_loss", *(f"val_{k}" for k in keys))
    code = ("import sys; from seglib.config import load; load('brain', None, ['profile=smoke']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_a_warm_up_as_long_as_the_training_is_refused_before_any_run():
    """``optim.warmup_epochs`` must end before the last epoch for a decaying schedule: refused when the
    parameters are read (it used to fail inside each run, after the data was prepared), also in a grid cell."""
    with pytest.raises(ConfigError, match=r"optim.warmup_epochs = 2: must be fewer than train.epochs = 2 for "
                                          r"optim.schedule = 'cosine'"):
        resolve("brain", {"optim": {"schedule": "cosine", "warmup_epochs": 2}, "train": {"epochs": 2}})
    with pytest.raises(ConfigError, match="optim.warmup_epochs = 3"):
        resolve("brain", {"optim": {"schedule": "poly", "warmup_epochs": 3},
                          "grid": [{"train.epochs": [10, 3]}]})
    resolve("brain", {"optim": {"schedule": "constant", "warmup_epochs": 5}, "train": {"epochs": 2}})
    resolve("brain", {"optim": {"schedule": "cosine", "warmup_epochs": 2}, "train": {"epochs": 3}})
