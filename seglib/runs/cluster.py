"""Runs on Dask: a ``LocalCluster`` started for the grid (one worker process per GPU, each pinned to its GPU,
or N CPU workers splitting the cores) or an existing cluster at ``tcp://host:port``.

A Dask task never trains: it starts ``python -m seglib.runs.worker`` for its run (:func:`seglib.runs.jobs.
train_in_child`), which takes the run's lock, trains and writes the result to the run cache on the shared
file system; the task returns one word. A lost worker's task is run again by the scheduler (``retries``
times); the next child takes over the dead one's lock and resumes from the checkpoint.
Dask does the scheduling (``distributed``'s own API); the GPU pinning is ours (:func:`seglib.runs.worker.
dask_setup`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence

from seglib.runs.cache import RunCache, RunSpec
from seglib.runs.execute import LOCKED
from seglib.runs.jobs import RunFailed, write_job

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else those ``nvidia-smi`` lists
    (never CUDA itself, which would pin this process to the first GPU)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def cluster_layout(workers: int | None, gpus: Sequence[str] | None, cores: int | None = None):
    """``(n_workers, gpu ids or None, threads per worker)``: one worker per GPU when there are GPUs, else
    ``workers`` (default: one per core) CPU workers with the cores split between them."""
    cores = cores or os.cpu_count() or 1
    gpu_ids = list(gpus) if gpus else visible_gpus()
    if gpu_ids:
        return len(gpu_ids), gpu_ids, max(1, cores // len(gpu_ids))
    n = workers or cores
    return n, None, max(1, cores // n)


class DaskExecutor:
    """Trains runs on a Dask cluster (see the module docstring); a context manager that starts (and closes)
    a LocalCluster when no ``scheduler`` is given."""

    def __init__(self, job_args: dict, *, scheduler: str | None = None, workers: int | None = None,
                 gpus: Sequence[str] | None = None, retries: int = 2) -> None:
        self.job_args = job_args  # data_dir, project, build, runs: for write_job
        self.scheduler, self.workers, self.gpus, self.retries = scheduler, workers, gpus, int(retries)
        self.cluster = self.client = None

    def __enter__(self) -> DaskExecutor:
        import dask
        from distributed import Client, LocalCluster

        dask.config.set({"distributed.scheduler.allowed-failures": self.retries,
                         "distributed.worker.daemon": False})
        if self.scheduler:
            self.client = Client(self.scheduler, timeout="30s")
            log.info("dask: using the cluster at %s (%d workers)", self.scheduler,
                     len(self.client.scheduler_info()["workers"]))
            return self
        n, gpu_ids, threads = cluster_layout(self.workers, self.gpus)
        env = {"SEGLIB_WATCH_PARENT": "1", "OMP_NUM_THREADS": str(threads),
               "SEGLIB_WORKER_GPUS": json.dumps(gpu_ids)}
        self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                    preload=["seglib.runs.worker"], env=env, silence_logs=logging.WARNING)
        self.client = Client(self.cluster)
        log.info("dask: a LocalCluster of %d workers (%s, %d threads each)", n,
                 f"GPUs {', '.join(gpu_ids)}" if gpu_ids else "CPU", threads)
        return self

    def __exit__(self, *exc) -> None:
        for thing in (self.client, self.cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception as e:  # noqa: BLE001 - closing must not hide the grid's own error
                    log.warning("dask: closing %s: %s", type(thing).__name__, e)
        self.client = self.cluster = None

    def map_specs(self, specs: Sequence[RunSpec], force: Sequence[bool], cache: RunCache,
                  on_done: Callable[[], None]) -> list:
        from distributed import as_completed

        from seglib.runs.jobs import train_in_child

        if self.client is None:
            raise RuntimeError("DaskExecutor.map_specs outside 'with DaskExecutor(...)'")
        outcomes: list = [None] * len(specs)
        futures = {}
        for i, (spec, f) in enumerate(zip(specs, force)):
            if not f and cache.status(spec) == "done":
                outcomes[i] = (cache.load(spec), True)
                on_done()
                continue
            job = write_job(cache.run_dir(spec), spec, **self.job_args)
            fut = self.client.submit(train_in_child, str(job), bool(f), self.retries, key=f"run-{spec.key}-{i}",
                                     pure=False)
            futures[fut] = i
        failures = []
        for fut in as_completed(list(futures)):
            i = futures[fut]
            try:
                word = fut.result()
            except RunFailed as e:
                failures.append(str(e))
                continue
            except Exception as e:  # noqa: BLE001 - e.g. KilledWorker after too many lost workers
                failures.append(f"run {specs[i].study}/{specs[i].key}: {type(e).__name__}: {e}")
                continue
            if word == "locked":
                outcomes[i] = LOCKED
            else:
                outcomes[i] = (cache.load(specs[i]), word == "hit")
                on_done()
        if failures:
            raise RunFailed("; ".join(failures))
        return outcomes
