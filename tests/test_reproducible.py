"""Runs you can trust: one run trained alone in a fresh process, after another run in the same
process, and after a crash and resume gives the same bits; two processes on one run cache train each
run once; the cache knows its code (both directions)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One process: the prostate smoke study with 3 epochs, grid cells chosen by argv; modes
#   alone  - train cell A
#   after  - train cell B, then cell A, in this process
#   crash  - cell A dies after its first epoch's checkpoint (a real exception from inside fit), then
#            the same process executes it again: it resumes from last.pt
#   grid   - the whole grid (for the two-process test); prints the execution summary
WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from seglib.config import load
    from seglib.report.notebooks import paths
    from seglib.runs import RunCache, RunSpec, execute, expand_grid
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import prepare, study_module, train_cell
    import seglib.train.state as ts
    from functools import partial

    mode, root = sys.argv[1], Path(sys.argv[2])
    cfg = load("prostate", "params/prostate/smoke.yaml", ["train.epochs=3"])
    p = paths(Path.cwd())
    prep = prepare(cfg, p)
    if mode == "grid":
        print(json.dumps(run_grid(cfg, prep, p, progress=False).summary))
        sys.exit(0)
    base = cfg.run_base(); base["train"]["seed"] = 0; base["data"]["data_dir"] = None
    cells = expand_grid(base, [dict(g) for g in cfg.grid], list(cfg.seeds))
    spec = lambda i: RunSpec("prostate", cells[i], prep.fingerprint)
    fn = partial(train_cell, module=study_module("prostate"), prepared=prep, progress=False)
    cache = RunCache(root)
    if mode == "after":
        execute([spec(3)], fn, cache, progress=False)
    if mode == "crash":
        real, calls = ts.save_checkpoints, []
        def dying(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("power cut")
            return real(*a, **k)
        ts.save_checkpoints = dying
        import seglib.train.loop as tr; tr.save_checkpoints = dying
        try:
            execute([spec(2)], fn, cache, progress=False)
        except RuntimeError as e:
            assert "power cut" in str(e)
        else:
            raise SystemExit("the crash did not happen")
        assert (cache.run_dir(spec(2)) / "checkpoints" / "last.pt").is_file()
        assert cache.status(spec(2)) == "partial"
        tr.save_checkpoints = ts.save_checkpoints = real
    execute([spec(2)], fn, cache, progress=False)
    print(cache.run_dir(spec(2)))
""")


def _env(build: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(SEGLIB_BUILD=str(build), PYTHONPATH=str(REPO), SEGLIB_ROOT=str(REPO))
    return env


def _worker(mode: str, build: Path, runs: Path, timeout=300) -> str:
    proc = subprocess.run([sys.executable, "-c", WORKER, mode, str(runs)], cwd=REPO, env=_env(build),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def _fingerprint(run_dir: Path) -> dict:
    """The run's bits: best weights, per-epoch losses and metrics, per-case metrics, predictions."""
    import pandas as pd
    import torch

    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    weights = hashlib.sha256(b"".join(v.numpy().tobytes() for _, v in sorted(best["model"].items()))).hexdigest()
    hist = pd.read_csv(run_dir / "history.csv")
    hist = hist.drop(columns=[c for c in ("train_time_s", "epoch_time_s", "peak_mem_mb") if c in hist])
    return {"weights": weights, "best_epoch": best["epoch"], "history": hist.to_csv(index=False),
            "metrics": (run_dir / "metrics.csv").read_text(),
            "predictions": hashlib.sha256((run_dir / "predictions.npz").read_bytes()).hexdigest()}


@pytest.mark.slow
def test_a_run_is_the_same_bits_alone_after_another_run_and_after_a_crash(tmp_path):
    build = tmp_path / "build"
    alone = _fingerprint(Path(_worker("alone", build, tmp_path / "alone")))
    after = _fingerprint(Path(_worker("after", build, tmp_path / "after")))
    crash = _fingerprint(Path(_worker("crash", build, tmp_path / "crash")))
    assert alone["history"].count("\n") == 4  # header + 3 epochs
    for name, other in (("after another run", after), ("after a crash and resume", crash)):
        for part in alone:
            assert alone[part] == other[part], f"{name}: {part} differs"


@pytest.mark.slow
def test_two_processes_on_one_cache_train_each_run_once(tmp_path):
    """Two real processes started together on the same grid and run cache: every run is trained by
    exactly one of them, the other reads it; the results equal a single process's."""
    build = tmp_path / "build"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, "grid", "-"], cwd=REPO, env=_env(build),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    runs = summaries[0]["runs"]
    assert runs == summaries[1]["runs"] == 8
    assert summaries[0]["trained"] + summaries[1]["trained"] == runs  # each run trained exactly once
    assert all(s["hits"] + s["trained"] == runs for s in summaries)
    single = tmp_path / "single"
    assert json.loads(_worker("grid", single, tmp_path / "-"))["trained"] == runs
    keys = sorted(d.name for d in (build / "runs" / "prostate").iterdir() if d.is_dir())
    assert keys == sorted(d.name for d in (single / "runs" / "prostate").iterdir() if d.is_dir())
    assert not list((build / "runs" / "prostate").glob("*.lock")), "a lock was left behind"
    for key in keys:
        assert _fingerprint(build / "runs" / "prostate" / key) == _fingerprint(single / "runs" / "prostate" / key)


# --------------------------------------------------------------------------- the cache knows its code
CHECK = textwrap.dedent("""
    import json
    from pathlib import Path
    from seglib.config import load
    from seglib.report.notebooks import paths, stamp
    from seglib.fingerprint import code_fingerprint
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import prepare
    cfg = load("prostate", "params/prostate/smoke.yaml", ["seeds=[0]", "grid=[]", "train.epochs=1"])
    p = paths(Path.cwd())
    s = run_grid(cfg, prepare(cfg, p), p, progress=False).summary
    print(json.dumps({"trained": s["trained"], "train": code_fingerprint("train"),
                      "stamp": stamp(cfg, p.notebook("prostate"))}))
""")


@pytest.mark.slow
def test_code_changes_retrain_or_re_execute_as_they_should(tmp_path):
    """On a copy of the project: a comment or docstring changes nothing; a table function changes the
    notebook's stamp only (re-executed, nothing retrained); a loss's code retrains."""
    root = tmp_path / "project"
    for d in ("seglib", "params", "notebooks"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**_env(tmp_path / "build"), "PYTHONPATH": str(root), "SEGLIB_ROOT": str(root)}

    def check() -> dict:
        proc = subprocess.run([sys.executable, "-c", CHECK], cwd=root, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def edit(rel: str, old: str, new: str) -> None:
        f = root / "seglib" / rel
        text = f.read_text()
        assert old in text, (rel, old)
        f.write_text(text.replace(old, new, 1))

    first = check()
    assert first["trained"] == 1
    # a comment and a docstring in the training code: same fingerprints, nothing to do
    edit("nn/losses.py", '"""', '"""A docstring, reworded. ', )
    edit("nn/losses.py", "\nimport", "\n# a comment\nimport")
    again = check()
    assert again == {**first, "trained": 0}
    # a table function: the notebook's stamp changes, the runs stay cached
    edit("eval/tables.py", "def summary(", "_NEW = 1\n\n\ndef summary(")
    table = check()
    assert table["trained"] == 0 and table["train"] == first["train"]
    assert table["stamp"]["library_fingerprint"] != first["stamp"]["library_fingerprint"]
    # the code of a loss: a new training fingerprint, the run is trained again
    edit("nn/losses.py", "\nimport", "\n_CHANGED = 2\nimport")
    loss = check()
    assert loss["trained"] == 1 and loss["train"] != first["train"]
    assert loss["stamp"]["library_fingerprint"] != table["stamp"]["library_fingerprint"]


def test_moving_the_dataset_keeps_every_cached_run(tmp_path, monkeypatch):
    """The data is identified by its content: the same cases under another folder name hit the cache."""
    from seglib.config import load
    from seglib.report.notebooks import paths
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import prepare

    monkeypatch.setenv("SEGLIB_BUILD", str(tmp_path / "build"))
    p = paths(REPO)
    cfg = load("prostate", REPO / "params" / "prostate" / "smoke.yaml", ["seeds=[0]", "grid=[]", "train.epochs=1"])
    phantoms = prepare(cfg, p).root
    first = shutil.copytree(phantoms, tmp_path / "data-here")
    moved = tmp_path / "elsewhere" / "renamed"
    cfg1 = load("prostate", REPO / "params" / "prostate" / "smoke.yaml",
                ["seeds=[0]", "grid=[]", "train.epochs=1"], data_dir=str(first))
    assert run_grid(cfg1, prepare(cfg1, p), p, progress=False).summary["trained"] == 1
    shutil.move(first, moved)
    cfg2 = load("prostate", REPO / "params" / "prostate" / "smoke.yaml",
                ["seeds=[0]", "grid=[]", "train.epochs=1"], data_dir=str(moved))
    s = run_grid(cfg2, prepare(cfg2, p), p, progress=False).summary
    assert s["trained"] == 0 and s["hits"] == 1
