"""The three study notebooks: conventions, execution with the smoke profile, and their recorded results."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from seglib.config import STUDIES, load
from seglib.report.notebooks import notebook_parameters
from seglib.report.crossref import split_cell_options

REPO = Path(__file__).resolve().parents[1]
METRIC_COLUMNS = ("dice", "iou", "precision", "recall", "f1", "lesion_f1")

pytestmark = pytest.mark.slow


def notebook(study):
    return nbformat.read(REPO / "notebooks" / f"{study}.ipynb", as_version=4)


def labels(nb, prefix):
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            label = split_cell_options(cell.source)[0].get("label")
            if isinstance(label, str) and label.startswith(prefix):
                out.append(label)
    return out


@pytest.mark.parametrize("study", STUDIES)
def test_notebook_conventions(study):
    nb = notebook(study)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    # the parameters cell holds only what papermill injects, as literal assignments: the quick profile
    # as written (the profile file is the one place of its values), no overrides, the default output folder
    values = {}
    for stmt in ast.parse(code[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)[:80]
        values[stmt.targets[0].id] = ast.literal_eval(stmt.value)
    assert values == {"profile": "quick", "overrides": None, "output_dir": None}
    injected = notebook_parameters(load(study, REPO / "params" / study / "quick.yaml"), Path("out"))
    assert set(injected) == set(values), "papermill injects exactly the parameters cell's names"
    # the first cell after the parameters resolves the configuration, once, in open_study
    assert f'open_study("{study}", profile, overrides, output_dir)' in code[1].source
    assert "resolve(" not in "".join(c.source for c in code[1:])
    for cell in code:
        assert not cell.outputs, "outputs are committed"
        tree = ast.parse("\n".join(ln for ln in cell.source.splitlines() if not ln.startswith("%")))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)), \
            "a notebook defines no function or class: that belongs in seglib"
    assert labels(nb, "fig-") and labels(nb, "tbl-")


@pytest.mark.parametrize("study", STUDIES)
def test_notebook_executes_with_smoke_profile(smoke_build, study):
    p, errors = smoke_build
    assert errors[study] is None, f"{study}: {errors[study]}"
    executed = nbformat.read(p.executed_notebook(study), as_version=4)
    assert executed.metadata["papermill"]["parameters"]["profile"] == "smoke"
    for cell in executed.cells:
        if cell.cell_type == "code":
            assert not any(o.get("output_type") == "error" for o in cell.outputs)


@pytest.mark.parametrize("study", STUDIES)
def test_every_table_present_nonempty_and_metrics_in_range(smoke_build, study):
    p, errors = smoke_build
    assert errors[study] is None, f"{study}: {errors[study]}"
    out = p.results(study)
    results = json.loads((out / "results.json").read_text())
    expected = [lbl.removeprefix("tbl-") for lbl in labels(notebook(study), "tbl-")]
    assert sorted(results["tables"]) == sorted(expected)
    for name in expected:
        df = pd.read_csv(out / "tables" / f"{name}.csv")
        assert len(df) > 0 and len(df.columns) > 1, name
    # every per-case metric of every run lies in [0, 1] (NaN allowed: the empty-mask policy)
    runs = [r["run"] for r in results["provenance"]["runs"]]
    assert runs, "no run recorded in results.json"
    for key in runs:
        metrics = pd.read_csv(p.runs / study / key / "metrics.csv")
        for col in METRIC_COLUMNS:
            if col in metrics:
                v = metrics[col].to_numpy(dtype=float)
                assert np.all((v[~np.isnan(v)] >= 0) & (v[~np.isnan(v)] <= 1)), (key, col)
    assert results["profile"] == "smoke" and results["synthetic"] is True
    for claim in results["claims"]:
        assert claim["verdict"] in ("supported", "not supported", "inconclusive"), claim


@pytest.mark.parametrize("study", STUDIES)
def test_every_expected_figure_written(smoke_build, study):
    p, errors = smoke_build
    assert errors[study] is None, f"{study}: {errors[study]}"
    executed = nbformat.read(p.executed_notebook(study), as_version=4)
    for label in labels(notebook(study), "fig-"):
        png = p.results(study) / "figures" / f"{label.removeprefix('fig-')}.png"
        assert png.is_file() and png.stat().st_size > 1000, png
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        cell = next(c for c in executed.cells if c.cell_type == "code" and f"label: {label}" in c.source)
        assert sum("image/png" in o.get("data", {}) for o in cell.outputs) == 1, label


@pytest.mark.parametrize("study", STUDIES)
def test_rerun_of_the_grid_trains_nothing(smoke_build, study, monkeypatch):
    from seglib.config import load
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import prepare

    p, errors = smoke_build
    assert errors[study] is None, f"{study}: {errors[study]}"
    monkeypatch.setenv("SEGLIB_BUILD", str(p.build))
    cfg = load(study, REPO / "params" / study / "smoke.yaml")
    grid = run_grid(cfg, prepare(cfg, p), p, progress=False)
    assert grid.summary["trained"] == 0 and grid.summary["hits"] == grid.summary["runs"] > 0


def test_failing_cell_keeps_the_executed_notebook_and_names_the_cell(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(REPO / "params", root / "params")
    (root / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = 'quick'\noutput_dir = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise RuntimeError('the phantom exploded')"),
    ])
    nbformat.write(nb, root / "notebooks" / "brain.ipynb")
    env = {**os.environ, "SEGLIB_ROOT": str(root), "SEGLIB_BUILD": str(root / "build")}
    proc = subprocess.run([sys.executable, "-m", "seglib.cli", "run", "brain", "--profile", "smoke", "--quiet"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert proc.returncode != 0
    assert "cell 3" in proc.stderr or "cell 2" in proc.stderr, proc.stderr
    assert "RuntimeError: the phantom exploded" in proc.stderr
    kept = root / "build" / "failed" / "brain.ipynb"
    assert kept.is_file() and str(kept) in proc.stderr
    assert not (root / "build" / "executed" / "brain.ipynb").exists()  # nothing half-built in the site's input
    assert any(o.get("output_type") == "error" for c in nbformat.read(kept, 4).cells if c.cell_type == "code"
               for o in c.outputs)


def test_parallel_run_keeps_the_finished_notebooks_when_one_fails(tmp_path):
    """`seglib run all --jobs 2`: a failing notebook is named, the other two run to the end and are kept,
    and each kernel got its share of the cores."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "params", root / "params")
    (root / "notebooks").mkdir()
    for study in ("stroke", "prostate", "brain"):
        body = ("raise RuntimeError('the gland went missing')" if study == "prostate" else
                f"import os, pathlib\npathlib.Path({str(tmp_path)!r}, '{study}.threads')"
                ".write_text(os.environ.get('OMP_NUM_THREADS', 'unset'))")
        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_code_cell("profile = 'quick'\noutput_dir = None", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(body),
        ])
        nbformat.write(nb, root / "notebooks" / f"{study}.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(SEGLIB_ROOT=str(root), SEGLIB_BUILD=str(root / "build"))
    proc = subprocess.run([sys.executable, "-m", "seglib.cli", "run", "all", "--profile", "smoke", "--jobs", "2"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert proc.returncode != 0
    assert "prostate: cell" in proc.stderr and "the gland went missing" in proc.stderr, proc.stderr
    assert "2 at a time" in proc.stdout and "prostate: failed after" in proc.stdout, proc.stdout
    expected = str(max(1, (os.cpu_count() or 1) // 2))
    for study in ("stroke", "brain"):
        assert f"{study}: executed in" in proc.stdout
        assert (root / "build" / "executed" / f"{study}.stamp.json").is_file()
        assert (tmp_path / f"{study}.threads").read_text() == expected
    assert (root / "build" / "failed" / "prostate.ipynb").is_file()
    assert not (root / "build" / "executed" / "prostate.ipynb").exists()
    assert not (root / "build" / "executed" / "prostate.stamp.json").exists()


def test_jobs_must_be_positive(capsys):
    from seglib.cli import main

    assert main(["run", "all", "--profile", "smoke", "--jobs", "-1"]) == 2
    assert "--jobs -1" in capsys.readouterr().err


def test_brain_notebook_runs_a_one_configuration_grid(tmp_path, monkeypatch):
    """A researcher's own grid (here the real-data profile's single U-Net) still gives every table and
    figure; those that compare configurations the grid lacks say so instead of failing."""
    from seglib.config import load
    from seglib.report.notebooks import paths, run_notebook

    monkeypatch.setenv("SEGLIB_BUILD", str(tmp_path / "build"))
    cfg = load("brain", REPO / "params" / "brain" / "smoke.yaml", ["grid=[{loss.name: [dice]}]"])
    p = paths(REPO)
    run_notebook(cfg, p, log_output=False, progress_bar=False)
    out = p.results("brain")
    c2 = pd.read_csv(out / "tables" / "c2.csv")
    assert list(c2.columns) == ["note"] and "U-Net++" in c2["note"].iloc[0]
    assert "note" in pd.read_csv(out / "tables" / "c6-claims.csv").columns
    results = pd.read_csv(out / "tables" / "c-results.csv")
    assert len(results) == 1 and results["configuration"].iloc[0] == "U-Net + Dice + Adam"
    assert (out / "figures" / "c6-adam-sgd.png").stat().st_size > 1000
    # nobody watches a kernel papermill runs: each epoch logs one line, and draws no progress bar
    outputs = "".join("".join(o.get("text", "")) for c in json.loads(p.executed_notebook("brain").read_text())["cells"]
                      for o in c.get("outputs", []))
    assert re.search(r"seglib\.train\.loop: epoch 1/\d+ ", outputs), outputs[:2000]
    assert not re.search(r"epoch 1/\d+: +\d+%\|", outputs), outputs[:2000]
    assert "SEGLIB_BATCH" not in os.environ


def test_smoke_results_are_the_pinned_ones(smoke_build):
    """Every headline number, claim verdict and per-epoch loss of the smoke builds, as pinned for this
    CPU kind (``tests/pins.py``): a change that moves a number shows in review."""
    from pins import PINNED, differences, machine_kind, observed

    p, errors = smoke_build
    assert not any(errors.values()), errors
    pinned = PINNED / f"{machine_kind()}.json"
    assert pinned.is_file(), (f"no pinned smoke results for this CPU kind ({machine_kind()}): record them with "
                              f"`python tests/pins.py --write {p.build}` and commit {pinned.name}")
    expected = json.loads(pinned.read_text())
    got = observed(p.build)
    diffs = {s: differences(expected[s], got[s]) for s in expected}
    assert not any(diffs.values()), "\n".join(d for s in diffs for d in [f"[{s}]", *diffs[s][:20]])


def test_open_study_resolves_the_configuration_seglib_run_validated(tmp_path):
    """The notebook resolves its configuration once, in ``open_study``: from what papermill injects it gets
    the configuration ``seglib run`` validated; run interactively (no injection), the quick profile."""
    from seglib.studies.session import open_study

    cfg = load("prostate", REPO / "params" / "prostate" / "smoke.yaml", ["train.epochs=1"])
    assert open_study("prostate", **notebook_parameters(cfg, tmp_path / "a")).cfg.hash == cfg.hash
    quick = load("prostate", REPO / "params" / "prostate" / "quick.yaml")
    assert open_study("prostate", output_dir=tmp_path / "b").cfg.hash == quick.hash
    with pytest.raises(TypeError, match="overrides must be a dict of sections"):
        open_study("prostate", "quick", ["train.epochs=1"], tmp_path / "c")


def test_a_child_process_output_reaches_the_notebook_once_and_not_the_terminal(tmp_path, capfd, monkeypatch):
    """What a kernel's child process writes to its file descriptors (a Dask worker's log line) is in the executed
    notebook, and ipykernel's second copy goes to the kernel log, not to the terminal of ``seglib run``."""
    import papermill as pm

    from seglib.report.notebooks import ensure_kernel, logged_kernel_manager

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # ipykernel watches no file descriptor under pytest

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import sys; sys.stderr.write(\"FROM-CHILD\\\\n\")'], check=True)\n"
        "import time; time.sleep(1)  # ipykernel reads the pipe in a thread: let it forward before the cell ends")]
    src, out, klog = tmp_path / "in.ipynb", tmp_path / "out.ipynb", tmp_path / "kernel.log"
    nbformat.write(nb, src)
    with open(klog, "wb") as fh:
        pm.execute_notebook(str(src), str(out), kernel_name=ensure_kernel(), log_output=False, progress_bar=False,
                            kernel_manager_class=logged_kernel_manager(fh))
    outputs = "".join("".join(o.get("text", "")) for o in nbformat.read(out, 4).cells[0].outputs)
    assert outputs.count("FROM-CHILD") == 1, outputs
    assert "FROM-CHILD" in klog.read_text()
    assert "FROM-CHILD" not in capfd.readouterr().err
