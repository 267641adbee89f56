"""Runs on SLURM through submitit: one job per run, submitted as one job array with a cap on the jobs that
run at once; the job ids go to each run's ``jobs.json``.

A job runs :class:`RunJob` in its own process (the job is the child process): it takes the run's lock,
trains (resuming from ``checkpoints/last.pt``) and writes the result to the run cache on the shared file
system. A preempted or timed-out job is requeued by submitit (``checkpoint``) and resumes. A driver that
finds a run's job still queued or running (a notebook executed again after it died) waits for that job
instead of submitting another. submitit's ``local`` cluster runs the same jobs as local processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import submitit

from seglib.runs.cache import RunCache, RunSpec
from seglib.runs.jobs import ERROR, RunFailed, last_job, read_json, record_job_id, write_job
from seglib.runs.locks import _pid_alive

log = logging.getLogger(__name__)
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


class RunJob(submitit.helpers.Checkpointable):
    """The function a job runs: :func:`seglib.runs.worker.run_job`, waiting for the run's lock if a
    requeued job's predecessor still holds it. Preemption requeues it with the same arguments."""

    def __call__(self, job_file: str, force: bool = False) -> str:
        import sys

        from seglib.runs.worker import run_job

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
        try:
            return run_job(job_file, force, wait=True)
        except Exception as e:
            from seglib.runs.jobs import record_error, retryable

            record_error(Path(job_file).parent, e, retryable=retryable(e))
            raise


def job_state(record: dict) -> str:
    """``"active"`` (queued or running), ``"ended"`` or ``"unknown"`` for a ``jobs.json`` entry."""
    if record.get("cluster") in ("local", "debug"):
        try:
            return "active" if _pid_alive(int(record["job_id"])) else "ended"
        except (KeyError, ValueError):
            return "unknown"
    if shutil.which("squeue") is None:
        return "unknown"
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(record["job_id"]), "-o", "%T"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    states = {s.strip() for s in out.split()}
    return "active" if states & ACTIVE_STATES else "ended"


class SlurmExecutor:
    """One SLURM job per run through submitit (see the module docstring)."""

    def __init__(self, job_args: dict, folder: Path, *, partition: str | None = None, time_min: int = 60,
                 gpus_per_job: int = 1, cpus_per_job: int = 4, mem_gb: int = 16, parallelism: int = 16,
                 setup: Sequence[str] = (), retries: int = 2, cluster: str = "slurm", poll_s: float = 5.0) -> None:
        self.job_args, self.folder = job_args, Path(folder)
        self.cluster, self.retries, self.poll_s = cluster, int(retries), float(poll_s)
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        params = {"timeout_min": int(time_min), "cpus_per_task": int(cpus_per_job), "mem_gb": int(mem_gb),
                  "name": "seglib"}
        if cluster == "slurm":
            params.update(slurm_array_parallelism=int(parallelism), slurm_setup=list(setup),
                          slurm_additional_parameters={"gpus": int(gpus_per_job)} if gpus_per_job else {})
            if partition:
                params["slurm_partition"] = partition
        else:
            params["gpus_per_node"] = int(gpus_per_job) if cluster == "local" and _has_gpu() else 0
        self.executor.update_parameters(**params)

    def __enter__(self) -> SlurmExecutor:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def batch_script(self, n_jobs: int = 2) -> str:
        """The sbatch file an array of ``n_jobs`` runs is submitted with (for reading and for tests)."""
        ex = self.executor._executor
        saved = dict(ex.parameters)
        ex.parameters["map_count"] = n_jobs
        try:
            return ex._make_submission_file_text(ex._submitit_command_str, "UID")
        finally:
            ex.parameters.clear()
            ex.parameters.update(saved)

    def _submit(self, items: list[tuple[int, RunSpec, bool]], cache: RunCache) -> dict:
        jobs = {}
        with self.executor.batch():
            pending = [(i, spec, self.executor.submit(RunJob(), str(write_job(cache.run_dir(spec), spec,
                                                                              **self.job_args)), f))
                       for i, spec, f in items]
        for i, spec, job in pending:
            record_job_id(cache.run_dir(spec), job.job_id, self.cluster, self.folder)
            log.info("run %s/%s: job %s", spec.study, spec.key, job.job_id)
            jobs[i] = job
        return jobs

    def map_specs(self, specs: Sequence[RunSpec], force: Sequence[bool], cache: RunCache,
                  on_done: Callable[[], None]) -> list:
        outcomes: list = [None] * len(specs)
        waiting: dict[int, dict] = {}  # jobs of an earlier driver, still queued or running
        todo = []
        for i, (spec, f) in enumerate(zip(specs, force)):
            if not f and cache.status(spec) == "done":
                outcomes[i] = (cache.load(spec), True)
                on_done()
                continue
            record = last_job(cache.run_dir(spec))
            if record is not None and not f and job_state(record) == "active":
                log.info("run %s/%s: job %s is queued or running: waiting for it", spec.study, spec.key,
                         record["job_id"])
                waiting[i] = record
            else:
                todo.append((i, spec, bool(f)))
        jobs = self._submit(todo, cache) if todo else {}
        tries = {i: 0 for i in jobs}
        failures: list[str] = []
        while jobs or waiting:
            time.sleep(self.poll_s)
            for i, record in list(waiting.items()):
                if job_state(record) != "active":
                    del waiting[i]
                    if cache.status(specs[i]) == "done":
                        outcomes[i] = (cache.load(specs[i]), False)
                        on_done()
                    else:  # the earlier job ended without the run: submit it now
                        jobs.update(self._submit([(i, specs[i], False)], cache))
                        tries[i] = 0
            for i, job in list(jobs.items()):
                if not job.done():
                    continue
                del jobs[i]
                spec = specs[i]
                try:
                    word = job.result()
                except Exception as e:  # noqa: BLE001 - submitit's FailedJobError, UncompletedJobError
                    err = read_json(cache.run_dir(spec) / ERROR) or {}
                    again = err.get("retryable", "error" not in err)  # no record: killed, lost node
                    if again and tries[i] < self.retries:
                        log.warning("run %s/%s: job %s failed (%s): submitting it again", spec.study, spec.key,
                                    job.job_id, err.get("error", type(e).__name__))
                        jobs.update(self._submit([(i, spec, False)], cache))
                        tries[i] += 1
                    else:
                        failures.append(f"run {spec.study}/{spec.key} (job {job.job_id}) failed: "
                                        f"{err.get('error') or str(e).strip().splitlines()[-1]}")
                    continue
                outcomes[i] = (cache.load(spec), word == "hit")
                on_done()
        if failures:
            raise RunFailed("; ".join(failures))
        return outcomes


def _has_gpu() -> bool:
    return bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or shutil.which("nvidia-smi") is not None
