"""The same 8-run CPU grid (prostate smoke, two seeds) with ``local`` (one process, 2 torch threads) and
``dask`` (a LocalCluster of 2 workers x 1 thread, each run in a child process): wall time and speed-up; and
what a worker costs to start (the LocalCluster, and one child process that finds its run done).

    .venv/bin/python benchmarks/executors.py [--epochs 4]

Each grid runs in a fresh process on an empty run cache under build/bench_executors/ (phantoms included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER = """
import json, sys, time
from pathlib import Path
if __name__ == "__main__":
    from seglib.config import load
    from seglib.report.notebooks import paths
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import prepare
    cfg = load("prostate", "params/prostate/smoke.yaml", ["train.patience=null", f"train.epochs={sys.argv[2]}",
               f"train.cpu_threads={sys.argv[3]}", f"executor={sys.argv[1]}"])
    p = paths(Path.cwd())
    prep = prepare(cfg, p)
    t0 = time.perf_counter()
    s = run_grid(cfg, prep, p, progress=False).summary
    print(json.dumps({**s, "grid_s": time.perf_counter() - t0}))
"""
STARTUP = """
import json, time
if __name__ == "__main__":
    t0 = time.perf_counter()
    from seglib.runs.cluster import DaskExecutor
    with DaskExecutor({}, workers=2) as ex:
        ex.client.wait_for_workers(2)
        print(json.dumps({"cluster_s": time.perf_counter() - t0}))
"""


def _run(code: str, build: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SEGLIB_EXECUTOR")}
    env.update(SEGLIB_BUILD=str(build), PYTHONPATH=str(REPO), SEGLIB_ROOT=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    out = REPO / "build" / "bench_executors" if "SEGLIB_BUILD" not in os.environ else \
        Path(os.environ["SEGLIB_BUILD"]) / "bench_executors"
    shutil.rmtree(out, ignore_errors=True)
    load0 = os.getloadavg()[0]
    rows = {"local (1 process x 2 threads)": _run(DRIVER, out / "local", json.dumps({"name": "local"}),
                                                  str(args.epochs), "2"),
            "dask (2 workers x 1 thread)": _run(DRIVER, out / "dask", json.dumps({"name": "dask", "workers": 2}),
                                                str(args.epochs), "1")}
    # a child that finds its run done: interpreter, imports, reading the data, the cache check
    from seglib.runs.jobs import run_child

    job = next((out / "dask" / "runs" / "prostate").glob("*/job.json"))
    env = {"SEGLIB_BUILD": str(out / "dask"), "PYTHONPATH": str(REPO), "SEGLIB_ROOT": str(REPO)}
    t0 = time.perf_counter()
    rc = run_child(job, env=env)
    child_s = time.perf_counter() - t0
    cluster = _run(STARTUP, out / "startup")
    base = rows["local (1 process x 2 threads)"]["grid_s"]
    bf16 = "native bf16 (avx512_bf16)" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "no native bf16"
    print(f"8-run grid, prostate smoke, {args.epochs} epochs; {os.cpu_count()} cores, {bf16}; "
          f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"| executor | runs trained | grid wall time (s) | speed-up |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['trained']} | {r['grid_s']:.1f} | {base / r['grid_s']:.2f}x |")
    print(f"\n| start-up | seconds |\n|---|---|\n| LocalCluster of 2 workers, ready | {cluster['cluster_s']:.1f} |\n"
          f"| one run's child process (finds its run done; exit {rc}) | {child_s:.1f} |")


if __name__ == "__main__":
    main()
