"""``seglib predict`` writes readable masks in each dataset's own format, and metrics where masks exist."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile

from seglib.cli import main
from seglib.data import load_cases

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATASET = {"stroke": "isles22", "prostate": "prostatex", "brain": "lgg"}

pytestmark = pytest.mark.slow


def a_run(p, study) -> Path:
    runs = sorted(d for d in (p.runs / study).iterdir() if (d / "DONE").is_file())
    assert runs, f"no finished {study} run in {p.runs}"
    return runs[0]


def phantom_folder(p, study) -> Path:
    folders = sorted(p.phantoms.glob(f"{DATASET[study]}-*"))
    assert folders, f"no {DATASET[study]} phantoms in {p.phantoms}"
    return folders[0]


@pytest.mark.parametrize("study", ["stroke", "prostate", "brain"])
def test_predict_writes_readable_masks_and_metrics(smoke_build, study, tmp_path, capsys):
    p, errors = smoke_build
    assert errors[study] is None, f"{study}: {errors[study]}"
    data = phantom_folder(p, study)
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(a_run(p, study)), "--data-dir", str(data), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    cases = load_cases(DATASET[study], data)
    assert summary["cases"] == len(cases)
    labelled = [c for c in cases if c.mask is not None]
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics["case_id"]) == sorted(c.id for c in labelled)
    assert metrics["dice"].dropna().between(0, 1).all()
    # the per-volume DSC is printed, mean and median of the cases with a mask
    printed = capsys.readouterr()
    json.loads(printed.out)  # stdout: the summary, as JSON
    line = printed.err.strip().splitlines()[-1]
    assert line == (f"seglib predict: per-volume DSC over the {len(labelled)} cases with a mask: mean "
                    f"{np.nanmean(metrics['dice']):.3f}, median {np.nanmedian(metrics['dice']):.3f} "
                    f"(per case: {out}/metrics.csv)")
    for case in cases:
        if study == "brain":
            files = sorted((out / case.id).glob("*_mask.tif"))
            assert len(files) == case.image.shape[-1]
            m = tifffile.imread(files[0])
            assert m.shape == case.image.shape[1:3] and set(np.unique(m)) <= {0, 255}
        else:
            f = next(out.rglob(f"{case.id}*.nii.gz"))
            img = nib.load(f)
            assert img.shape == case.image.shape[1:]
            assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1}
            assert np.allclose(img.affine, case.affine, atol=1e-4)


@pytest.mark.realdata
def test_predict_on_the_real_prostatex_sample(smoke_build, tmp_path):
    root = SHARED / "prostatex" / "Files" / "prostate"
    if not root.is_dir():
        pytest.skip("../shared/data is absent")
    p, errors = smoke_build
    assert errors["prostate"] is None
    out = tmp_path / "real"
    assert main(["predict", "--run", str(a_run(p, "prostate")), "--data-dir", str(root), "--out", str(out)]) == 0
    written = sorted(f.name for f in (out / "mask_prostate").glob("*.nii.gz"))
    # every image gets a prediction, including ProstateX-0218 which has no mask (so no metrics row)
    assert written == ["ProstateX-0000.nii.gz", "ProstateX-0001.nii.gz", "ProstateX-0218.nii.gz"]
    assert sorted(pd.read_csv(out / "metrics.csv")["case_id"]) == ["ProstateX-0000", "ProstateX-0001"]
    assert nib.load(out / "mask_prostate" / "ProstateX-0218.nii.gz").shape == (320, 320, 20)


def test_predict_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path), "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "is not a finished run: config.json is missing" in capsys.readouterr().err


def test_predict_names_a_run_config_that_does_not_validate(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"study": "brain", "config": {"data": {"dataset": "lgg", "szie": 8}}}))
    (run / "DONE").write_text("")
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    (tmp_path / "data").mkdir()
    assert main(["predict", "--run", str(run), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'data.szie'" in err and "config.json" in err


def runs_by_config(p, study) -> dict:
    """The smoke build's runs of ``study`` (those its executed notebook used) grouped by their configuration
    without the seed."""
    groups: dict = {}
    runs = json.loads((p.executed / study / "results.json").read_text())["provenance"]["runs"]
    for d in (p.runs / study / r["run"] for r in runs):
        cfg = json.loads((d / "config.json").read_text())["config"]
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "seed"}
        groups.setdefault(json.dumps(cfg, sort_keys=True), []).append(d)
    return groups


def test_ensemble_is_the_mean_probability_of_its_members():
    import torch

    from seglib.nn.ensemble import Ensemble

    torch.manual_seed(0)
    a, b = torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        p = torch.sigmoid(Ensemble([a, b])(x))
        assert torch.allclose(p, (torch.sigmoid(a(x)) + torch.sigmoid(b(x))) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])


def test_predict_averages_the_seeds_of_one_configuration(smoke_build, tmp_path, capsys):
    """``--run`` twice: the two seeds' models are averaged (each case's prediction is the threshold of the mean
    probability, between the two members' own); runs of another configuration are refused, naming the keys."""
    import torch

    from seglib.predict import load_runs, predict_case

    p, errors = smoke_build
    assert errors["prostate"] is None
    groups = [g for g in runs_by_config(p, "prostate").values() if len(g) >= 2]
    assert groups, "the prostate smoke grid has two seeds per configuration"
    pair = groups[0][:2]
    seeds = [json.loads((r / "config.json").read_text())["config"]["train"]["seed"] for r in pair]
    assert seeds[0] != seeds[1]
    data = phantom_folder(p, "prostate")
    out = tmp_path / "ens"
    argv = ["predict", "--run", str(pair[0]), "--run", str(pair[1]), "--data-dir", str(data), "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"] == [str(r) for r in pair] and len(summary["best_epoch"]) == 2
    assert "per-volume DSC" in capsys.readouterr().err
    # the ensemble's prediction of a case lies between what its members predict alone: AND <= mean <= OR
    study, cell, model, _ = load_runs(pair)
    case = load_cases("prostatex", data)[0]
    with torch.no_grad():
        ens = predict_case(study, cell, model, case, torch.device("cpu"), "fp32")
        alone = [predict_case(*load_runs([r])[:3], case, torch.device("cpu"), "fp32") for r in pair]
    assert ((alone[0] & alone[1]) <= ens).all() and (ens <= (alone[0] | alone[1])).all()
    # another configuration cannot join
    other = next(g[0] for g in runs_by_config(p, "prostate").values() if g[0] not in pair)
    assert main(["predict", "--run", str(pair[0]), "--run", str(other), "--data-dir", str(data),
                 "--out", str(tmp_path / "no")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be averaged" in err and "loss." in err and not (tmp_path / "no").exists()
    assert main(["predict", "--run", str(pair[0]), "--run", str(pair[0]), "--data-dir", str(data),
                 "--out", str(tmp_path / "twice")]) == 1
    assert "given twice" in capsys.readouterr().err


def test_seglib_run_prints_the_predict_line_of_a_small_grid(tmp_path):
    """After a notebook of one or two configurations, ``seglib run`` prints the ``seglib predict`` line
    that averages each configuration's seeds; a larger grid gets none (it would be a page of lines)."""
    from types import SimpleNamespace

    from seglib.cli import predict_hints

    p = SimpleNamespace(executed=tmp_path / "executed", runs=tmp_path / "runs")
    (p.executed / "brain").mkdir(parents=True)
    runs = [{"run": "k0", "label": "loss=dice_bce (seed 0)"}, {"run": "k1", "label": "loss=dice_bce (seed 1)"}]
    (p.executed / "brain" / "results.json").write_text(json.dumps({"provenance": {"runs": runs}}))
    (line,) = predict_hints("brain", p)
    assert line == (f"brain: to predict another folder with the 2 seeds of loss=dice_bce averaged: seglib predict "
                    f"--run {p.runs / 'brain' / 'k0'} --run {p.runs / 'brain' / 'k1'} --data-dir DIR")
    folds = [{"run": f"f{i}", "label": f"loss=dice_bce, fold={i} (seed 0)"} for i in range(5)]
    (p.executed / "brain" / "results.json").write_text(json.dumps({"provenance": {"runs": folds}}))
    (line,) = predict_hints("brain", p)  # the folds of one configuration are one ensemble (nnU-Net's)
    assert line.startswith("brain: to predict another folder with the 5 folds of loss=dice_bce averaged: ")
    assert line.count("--run ") == 5 and f"--run {p.runs / 'brain' / 'f4'} --data-dir DIR" in line
    both = [{"run": f"r{i}{j}", "label": f"fold={i}, loss=dice (seed {j})"} for i in range(2) for j in range(2)]
    (p.executed / "brain" / "results.json").write_text(json.dumps({"provenance": {"runs": both}}))
    (line,) = predict_hints("brain", p)
    assert "the 4 runs (2 folds x 2 seeds) of loss=dice averaged" in line
    refit = [*runs, {"run": "r0", "label": "loss=dice_bce (seed 0)", "refit": True}]
    (p.executed / "brain" / "results.json").write_text(json.dumps({"provenance": {"runs": refit}}))
    (line,) = predict_hints("brain", p)  # the run trained on every patient (data.refit) is the one to apply
    assert line == (f"brain: to predict another folder with loss=dice_bce trained on every patient (data.refit): "
                    f"seglib predict --run {p.runs / 'brain' / 'r0'} --data-dir DIR")
    many = [{"run": f"k{i}", "label": f"loss=l{i} (seed 0)"} for i in range(3)]
    (p.executed / "brain" / "results.json").write_text(json.dumps({"provenance": {"runs": many}}))
    assert predict_hints("brain", p) == [] and predict_hints("stroke", p) == []
