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
