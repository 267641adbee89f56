"""Grids beyond one process, with real processes: a Dask LocalCluster of two workers pinned to (fake) GPU ids,
a worker killed mid-run, the driver killed mid-grid, a Dask and a local driver on one run cache, SLURM's
batch script and submitit's local executor end to end. The prostate smoke study, one seed: a 4-run grid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_reproducible import _fingerprint

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("distributed")
pytest.importorskip("submitit")

# argv: executor section as JSON, epochs; prints the execution summary as its last line
DRIVER = textwrap.dedent("""
    import json, logging, sys
    from pathlib import Path
    from seglib.config import load
    from seglib.report.notebooks import paths
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import prepare

    if __name__ == "__main__":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        cfg = load("prostate", "params/prostate/smoke.yaml",
                   ["seeds=[0]", "train.patience=null", f"train.epochs={sys.argv[2]}",
                    f"executor={sys.argv[1]}"])
        p = paths(Path.cwd())
        print(json.dumps(run_grid(cfg, prepare(cfg, p), p, progress=False).summary), flush=True)
""")


def _env(build: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SEGLIB_EXECUTOR")}
    env.update(SEGLIB_BUILD=str(build), PYTHONPATH=str(REPO), SEGLIB_ROOT=str(REPO))
    return env


def _start(build: Path, executor: dict, epochs: int = 2) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(executor), str(epochs)], cwd=REPO,
                            env=_env(build), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1]), err


def _grid(build: Path, executor: dict, epochs: int = 2) -> tuple[dict, str]:
    return _finish(_start(build, executor, epochs))


def _runs(build: Path) -> list[Path]:
    return sorted(d for d in (build / "runs" / "prostate").iterdir() if d.is_dir())


def _provenance(run: Path) -> dict:
    return json.loads((run / "provenance.json").read_text())


def _wait_for(cond, timeout: float, what: str, poll: float = 0.2):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _running_child(build: Path, min_epoch: int = 1):
    """A run being trained with at least ``min_epoch`` epochs checkpointed: (run dir, lock holder pid)."""
    from seglib.runs.jobs import read_json

    root = build / "runs" / "prostate"
    if not root.is_dir():
        return None
    for lock in root.glob("*.lock"):
        holder = read_json(lock)
        progress = read_json(root / lock.stem / "progress.json")
        if holder and progress and progress.get("epoch", 0) >= min_epoch and not (root / lock.stem / "DONE").exists():
            return root / lock.stem, int(holder["pid"])
    return None


def _assert_clean(build: Path, n: int = 4) -> None:
    from seglib.runs.cache import RunCache  # noqa: F401 - the cache's own check below

    runs = _runs(build)
    assert len(runs) == n, [r.name for r in runs]
    assert all((r / "DONE").is_file() for r in runs), "a partial folder was left"
    assert not list((build / "runs" / "prostate").glob("*.lock")), "a lock was left behind"


@pytest.mark.slow
def test_dask_two_gpu_workers_are_pinned_and_give_the_local_bits(tmp_path):
    """Two worker processes, fake GPU ids "0" and "1": both used, never two runs at once on one id, and every
    run's bits (best weights, history without timings, per-case metrics, predictions) equal to ``local``."""
    local, _ = _grid(tmp_path / "local", {"name": "local"})
    dask, err = _grid(tmp_path / "dask", {"name": "dask", "gpus": ["0", "1"]})
    assert local["trained"] == dask["trained"] == 4
    assert "epoch 2/2 train_loss=" in err  # the children's per-epoch lines reach the driver's output
    runs = _runs(tmp_path / "dask")
    assert [r.name for r in runs] == [r.name for r in _runs(tmp_path / "local")]  # same keys
    by_gpu: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        ex = _provenance(run)["executed"]
        assert _provenance(run)["cuda_visible_devices"] == ex["cuda_visible_devices"]
        by_gpu.setdefault(ex["cuda_visible_devices"], []).append((ex["t_start"], ex["t_end"]))
        assert _fingerprint(run) == _fingerprint(tmp_path / "local" / "runs" / "prostate" / run.name), run.name
    assert sorted(by_gpu) == ["0", "1"]
    for spans in by_gpu.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    _assert_clean(tmp_path / "dask")


@pytest.mark.slow
def test_a_worker_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    import psutil

    build = tmp_path / "b"
    proc = _start(build, {"name": "dask", "workers": 2}, epochs=12)
    run_dir, child = _wait_for(lambda: _running_child(build, 2), 300, "a run past its second epoch")
    worker = psutil.Process(child).parent()
    assert "seglib.runs.worker" not in " ".join(worker.cmdline())  # the Dask worker, not the child
    os.kill(worker.pid, signal.SIGKILL)
    summary, err = _finish(proc)
    assert summary["runs"] == 4 and summary["hits"] + summary["trained"] == 4
    _assert_clean(build)
    key = run_dir.name[:8]
    lines = [ln for ln in err.splitlines() if f" {key} seglib.train.loop: epoch " in ln]
    firsts = [ln for ln in lines if " epoch 1/12 " in ln]
    assert len(firsts) == 1, "the killed run started again from epoch 1"
    assert any(" epoch 12/12 " in ln for ln in lines)
    assert (run_dir / "history.csv").read_text().count("\n") == 13  # header + 12 epochs, each once


@pytest.mark.slow
def test_a_killed_driver_leaves_no_process_and_a_rerun_trains_only_the_rest(tmp_path):
    import psutil

    build = tmp_path / "b"
    proc = _start(build, {"name": "dask", "workers": 2}, epochs=12)
    _wait_for(lambda: any((r / "DONE").is_file() for r in _runs(build)) if (build / "runs" / "prostate").is_dir()
              else None, 300, "a finished run")
    _wait_for(lambda: _running_child(build, 1), 120, "a run in training")
    family = psutil.Process(proc.pid).children(recursive=True)
    assert any("seglib.runs.worker" in " ".join(p.cmdline()) for p in family)
    done_before = {r.name: _provenance(r)["ended"] for r in _runs(build) if (r / "DONE").is_file()}
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    status = subprocess.run([sys.executable, "-m", "seglib.cli", "status", "prostate", "--params",
                             "params/prostate/smoke.yaml", "-p", "seeds=[0]", "-p", "train.patience=null",
                             "-p", "train.epochs=12"], cwd=REPO,
                            env=_env(build), capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    (tmp_path / "status.txt").write_text(status.stdout)
    print(status.stdout)
    assert "done" in status.stdout and ("partial" in status.stdout or "not started" in status.stdout)
    summary, _ = _grid(build, {"name": "dask", "workers": 2}, epochs=12)
    assert summary["hits"] >= len(done_before) and summary["hits"] + summary["trained"] == 4
    for name, ended in done_before.items():
        assert _provenance(build / "runs" / "prostate" / name)["ended"] == ended  # not trained again
    _assert_clean(build)


@pytest.mark.slow
def test_a_dask_and_a_local_driver_on_one_cache_train_each_run_once(tmp_path):
    build = tmp_path / "b"
    procs = [_start(build, {"name": "dask", "workers": 1}, epochs=4), _start(build, {"name": "local"}, epochs=4)]
    summaries = [_finish(p)[0] for p in procs]
    assert all(s["runs"] == 4 and s["hits"] + s["trained"] == 4 for s in summaries)
    assert summaries[0]["trained"] + summaries[1]["trained"] == 4, summaries
    _assert_clean(build)


def test_the_slurm_batch_script(tmp_path):
    from seglib.runs.slurm import SlurmExecutor

    ex = SlurmExecutor({}, tmp_path / "slurm", partition="gpu", time_min=90, gpus_per_job=1, cpus_per_job=8,
                       mem_gb=32, parallelism=3, setup=["module load cuda/12.4", "source /opt/venv/bin/activate"])
    text = ex.batch_script(n_jobs=8)
    for line in ("#SBATCH --array=0-7%3", "#SBATCH --gpus=1", "#SBATCH --time=90", "#SBATCH --partition=gpu",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "module load cuda/12.4",
                 "source /opt/venv/bin/activate"):
        assert line in text, f"{line!r} not in:\n{text}"
    assert text.index("module load") < text.index("submitit.core._submit")


@pytest.mark.slow
def test_slurm_code_path_through_submitit_local_jobs(tmp_path):
    """submitit's local executor runs the SLURM path's jobs as local processes: each run gets its job id in
    ``jobs.json``; a driver run again finds the runs done and submits nothing."""
    build = tmp_path / "b"
    summary, _ = _grid(build, {"name": "slurm", "cluster": "local", "gpus_per_job": 0})
    assert summary["trained"] == 4
    for run in _runs(build):
        jobs = json.loads((run / "jobs.json").read_text())
        assert len(jobs) == 1 and jobs[0]["cluster"] == "local" and jobs[0]["job_id"].isdigit()
    again, _ = _grid(build, {"name": "slurm", "cluster": "local", "gpus_per_job": 0})
    assert again["hits"] == 4
    assert all(len(json.loads((r / "jobs.json").read_text())) == 1 for r in _runs(build))
    _assert_clean(build)


def _slurm_up() -> str | None:
    """Why a real SLURM cluster cannot be used here, or None when ``sinfo`` answers."""
    import shutil

    if shutil.which("sbatch") is None:
        return "no sbatch on this machine (.ci/run starts a one-node cluster with slurm-wlm and munge)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or "idle" not in proc.stdout and "mix" not in proc.stdout:
        return f"sinfo finds no idle node: {(proc.stderr or proc.stdout).strip()[:200]}"
    return None


@pytest.mark.slow
def test_a_grid_through_real_sbatch(tmp_path):
    why = _slurm_up()
    if why:
        pytest.skip(why)
    build = tmp_path / "b"
    ex = {"name": "slurm", "gpus_per_job": 0, "cpus_per_job": 1, "mem_gb": 1, "time_min": 10, "parallelism": 2,
          "setup": [f"export PYTHONPATH={REPO}"]}
    summary, _ = _grid(build, ex)
    assert summary["trained"] == 4
    for run in _runs(build):
        jobs = json.loads((run / "jobs.json").read_text())
        assert jobs[0]["cluster"] == "slurm" and "_" in jobs[0]["job_id"]  # an array task: <array>_<index>
        assert _provenance(run)["executed"]["slurm_job_id"]
    _assert_clean(build)


def test_a_training_child_of_a_dask_worker_keeps_the_default_allocator(tmp_path):
    """A Dask nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` for its worker; a training child that inherits it
    spends a third of its time in page faults. The child's environment drops it (and keeps the rest)."""
    code = textwrap.dedent("""
        import json, os
        if __name__ == "__main__":
            from distributed import Client, LocalCluster
            from seglib.runs.jobs import child_environment
            with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c, \\
                    Client(c) as client:
                worker = client.submit(lambda: dict(os.environ)).result()
                child = client.submit(child_environment, {"EXTRA": "1"}).result()
            print(json.dumps({"worker": worker.get("MALLOC_TRIM_THRESHOLD_"),
                              "child": child.get("MALLOC_TRIM_THRESHOLD_"), "extra": child.get("EXTRA"),
                              "path": child.get("PATH") == worker.get("PATH")}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"worker": "65536", "child": None, "extra": "1", "path": True}
