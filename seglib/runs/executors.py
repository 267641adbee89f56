"""The executor a grid runs on, chosen by the ``executor`` section (:class:`seglib.config.ExecutorConfig`),
by ``seglib run --executor`` through the environment variable ``SEGLIB_EXECUTOR`` (JSON, set for the
notebook's kernel by :func:`seglib.report.notebooks.run_notebook`), or passed in.

``local`` trains in this process, one run after the other (today's behaviour: no process start-up per run,
and a crash stops the grid, which resumes from the checkpoint when run again). ``dask`` and ``slurm`` train
every run in a child process of its own (:mod:`seglib.runs.cluster`, :mod:`seglib.runs.slurm`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from seglib.config import ConfigError, ExecutorConfig, as_dict, build_section

ENV = "SEGLIB_EXECUTOR"
#: ``1`` in the environment of the kernels that papermill starts (:mod:`seglib.report.notebooks`): nobody
#: watches those notebooks while they run, so :func:`seglib.studies.collect.run_grid` leaves out the
#: per-epoch progress bars (seven stream messages an epoch: study A's quick grid cell held 3,673 outputs,
#: each recorded by papermill); each epoch's log line and the bar of the runs stay
BATCH_ENV = "SEGLIB_BATCH"


def executor_settings(default: ExecutorConfig | None = None) -> ExecutorConfig:
    """``$SEGLIB_EXECUTOR`` (validated) if set, else ``default`` (else ``local``)."""
    text = os.environ.get(ENV)
    if not text:
        return default or ExecutorConfig()
    try:
        values = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{ENV}={text!r}: expected the executor section as JSON ({e}).") from None
    from seglib.config.checks import _check_executor

    ex = build_section(ExecutorConfig, values, "executor")
    _check_executor(ex)
    return ex


def to_env(ex: ExecutorConfig) -> dict[str, str]:
    """The environment that hands ``ex`` to a notebook's kernel (nothing for the default)."""
    return {} if ex == ExecutorConfig() else {ENV: json.dumps(as_dict(ex))}


@contextlib.contextmanager
def open_executor(ex: ExecutorConfig, *, data_dir: Path, project: Path, build: Path, runs: Path, study: str):
    """The executor for :func:`seglib.runs.execute` (None for ``local``), started and closed around the grid."""
    job_args = {"data_dir": Path(data_dir), "project": Path(project), "build": Path(build), "runs": Path(runs)}
    if ex.name == "local":
        yield None
    elif ex.name == "dask":
        from seglib.runs.cluster import DaskExecutor

        with DaskExecutor(job_args, scheduler=ex.scheduler, workers=ex.workers, gpus=ex.gpus,
                          retries=ex.retries) as executor:
            yield executor
    elif ex.name == "slurm":
        from seglib.runs.slurm import SlurmExecutor

        with SlurmExecutor(job_args, Path(build) / "slurm" / study, partition=ex.partition, time_min=ex.time_min,
                           gpus_per_job=ex.gpus_per_job, cpus_per_job=ex.cpus_per_job, mem_gb=ex.mem_gb,
                           parallelism=ex.parallelism, setup=ex.setup, retries=ex.retries,
                           cluster=ex.cluster) as executor:
            yield executor
    else:
        raise ValueError(f"executor.name = {ex.name!r}: expected 'local', 'dask' or 'slurm'")
