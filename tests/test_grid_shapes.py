"""Any grid a user writes gets every table and figure: those that compare what the grid lacks say so in
one line instead of failing a cell after the training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from seglib.eval.tables import results_table

REPO = Path(__file__).resolve().parents[1]


def test_results_table_without_its_baseline_says_so():
    cases = pd.DataFrame({"config": ["a"] * 4 + ["b"] * 4, "seed": 0, "case_id": [f"c{i}" for i in range(4)] * 2,
                          "dice": [0.5, 0.6, 0.7, 0.8, 0.4, 0.5, 0.6, 0.7]})
    t = results_table(cases, ["dice"], baseline="BCE")
    assert list(t["configuration"]) == ["a", "b"]
    assert set(t["differs from baseline"]) == {"no baseline (BCE) in this grid"}
    assert t["p (Holm)"].isna().all() and t["dice (per case)"].iloc[0] == pytest.approx(0.65)


@pytest.mark.slow
@pytest.mark.parametrize("study, grid", [
    ("stroke", "grid=[]"),                          # one configuration: no axis, no claim can be tested (in bf16:
                                                    # its evaluation runs under autocast)
    ("prostate", "grid=[{loss.name: [tversky], loss.alpha: [0.3]}]"),  # no BCE baseline, one α
    ("brain", "grid=[{model.name: [unetpp]}]"),     # no U-Net at all: no C1 row, no baseline
])
def test_a_study_notebook_runs_any_grid(tmp_path, monkeypatch, study, grid):
    from seglib.config import load
    from seglib.paths import paths
    from seglib.report.notebooks import run_notebook

    monkeypatch.setenv("SEGLIB_BUILD", str(tmp_path / "build"))
    extra = ["train.precision=bf16"] if study == "stroke" else []
    cfg = load(study, REPO / "params" / study / "smoke.yaml", [grid, "seeds=[0]", "train.epochs=1", *extra])
    p = paths(REPO)
    run_notebook(cfg, p, log_output=False, progress_bar=False)
    results = json.loads((p.results(study) / "results.json").read_text())
    for name in results["tables"]:
        assert len(pd.read_csv(p.results(study) / "tables" / f"{name}.csv")) >= 1, name
    assert list((p.results(study) / "figures").glob("*.png"))


@pytest.mark.slow
def test_a_run_refit_on_every_patient_is_kept_out_of_the_tables(tmp_path, monkeypatch):
    """``grid: [{data.refit: [false, true]}]``: the refit run trains on all patients and is the one the
    ``seglib predict`` line names; every table and figure is of the validated run alone, and the notebook says so."""
    from seglib.cli import predict_hints
    from seglib.config import load
    from seglib.paths import paths
    from seglib.report.notebooks import run_notebook

    monkeypatch.setenv("SEGLIB_BUILD", str(tmp_path / "build"))
    cfg = load("brain", REPO / "params" / "brain" / "smoke.yaml",
               ["grid=[{data.refit: [false, true]}]", "seeds=[0]", "train.epochs=1", "train.monitor=train_loss",
                "train.mode=min"])
    p = paths(REPO)
    run_notebook(cfg, p, log_output=False, progress_bar=False)
    results = json.loads((p.results("brain") / "results.json").read_text())
    runs = results["provenance"]["runs"]
    assert [bool(r.get("refit")) for r in runs] == [False, True]
    (line,) = predict_hints("brain", p)
    assert f"--run {p.runs / 'brain' / runs[1]['run']} --data-dir DIR" in line and runs[0]["run"] not in line
    table = pd.read_csv(p.results("brain") / "tables" / "c-results.csv")
    assert list(table["runs (seeds)"]) == [1] and list(table["cases"]) == [2]  # the validated run, its 2 patients
    notebook = (p.executed / "brain.ipynb").read_text()
    assert "trained on every patient, the validation patients too" in notebook
    validated, refit = (json.loads((p.runs / "brain" / r["run"] / "provenance.json").read_text()) for r in runs)
    assert refit["monitor"] == "train_loss" and refit["n_train"] > validated["n_train"]  # 6 patients' slices, not 4
