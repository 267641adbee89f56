"""One run, trained in a process of its own: ``python -m seglib.runs.worker <run dir>/job.json [--force]``.

The process rebuilds the run from its job file (the study, the cell's configuration, the data folder, the
build paths), takes the run's lock, trains it (resuming from ``checkpoints/last.pt``) and writes it to the
run cache; see :mod:`seglib.runs.jobs` for its exit codes. A SLURM job calls :func:`run_job` in the job's
own process. :func:`dask_setup` is the Dask worker preload that pins a LocalCluster's worker to its GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("seglib.runs.worker")


def _spec_and_train_fn(job: dict):
    """The run's :class:`RunSpec` and an in-process ``train_fn``, rebuilt from the job file."""
    from functools import partial

    from seglib.config import SECTIONS, STUDY_SETTINGS, RunConfig, StudyConfig
    from seglib.paths import Paths
    from seglib.runs.cache import RunSpec
    from seglib.studies.pipeline import prepare, study_module, train_cell

    os.environ["SEGLIB_BUILD"] = job["build"]
    config = job["config"]  # the run's plain dict: its key is computed from it
    cell = RunConfig.from_dict(config)  # validated, so an edited job file fails here with the key it names
    sections = {name: cls() for name, cls in SECTIONS.items()}  # prepare() reads the data section alone
    sections["data"] = dataclasses.replace(cell.data, data_dir=str(job["data_dir"]))
    cfg = StudyConfig(study=job["study"], profile="job", settings=STUDY_SETTINGS[job["study"]](), **sections)
    spec = RunSpec(job["study"], config, job["data_fingerprint"], job["code_fingerprint"])
    if spec.key != job["key"]:
        raise ValueError(f"job file of run {job['key']}: its contents give the key {spec.key}; the file was edited")
    prepared = prepare(cfg, Paths(Path(job["project"])))
    if prepared.fingerprint != job["data_fingerprint"]:
        raise ValueError(f"the data under {job['data_dir']} has the fingerprint {prepared.fingerprint}, expected "
                         f"{job['data_fingerprint']}: the data changed, or the folder is not shared with this node")
    train_fn = partial(train_cell, module=study_module(job["study"]), prepared=prepared, progress=False)

    def train_here(spec, run_dir):
        from seglib.runs.jobs import ERROR

        t0 = time.time()
        outputs = train_fn(spec, run_dir)
        outputs.extra["executed"] = {"host": os.uname().nodename, "pid": os.getpid(),
                                     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                     "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                                     "t_start": t0, "t_end": time.time()}
        (Path(run_dir) / ERROR).unlink(missing_ok=True)
        return outputs

    return spec, train_here


def run_job(job_file: str, force: bool = False, wait: bool = False) -> str:
    """Train the run of ``job_file`` in this process: ``"done"`` (trained), ``"hit"`` (found done) or ``"locked"``
    (another process holds its lock; with ``wait``, wait for it, then train what it left)."""
    from seglib.runs.cache import RunCache
    from seglib.runs.execute import LOCKED, run_one
    from seglib.runs.jobs import ProgressFile, read_json

    job_file = Path(job_file)
    job = read_json(job_file)
    if not isinstance(job, dict):
        raise ValueError(f"job file {job_file} is missing or unreadable: expected the JSON written by write_job")
    spec, train_fn = _spec_and_train_fn(job)
    cache = RunCache(Path(job["runs"]))
    handler = ProgressFile(job_file.parent)
    logging.getLogger("seglib.train.loop").addHandler(handler)
    try:
        while True:
            outcome = run_one(cache, train_fn, force, spec)
            if outcome is not LOCKED:
                return "hit" if outcome[1] else "done"
            if not wait:
                return "locked"
            time.sleep(2.0)
    finally:
        logging.getLogger("seglib.train.loop").removeHandler(handler)


def _watch_parent(interval_s: float = 0.5) -> None:
    """Exit at once when the process that started this one dies (its children die with it, see
    :func:`seglib.runs.jobs.run_child`): a killed driver leaves no worker behind."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="seglib parent watch", daemon=True).start()


def dask_setup(worker) -> None:
    """Dask preload (``--preload seglib.runs.worker``): a LocalCluster worker named ``i`` sees only the GPU
    ``SEGLIB_WORKER_GPUS[i]`` (set before anything starts CUDA), and exits when its parent does."""
    gpus = json.loads(os.environ.get("SEGLIB_WORKER_GPUS") or "null")
    if gpus:
        try:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[int(worker.name) % len(gpus)])
        except (TypeError, ValueError):
            log.warning("worker %r: no GPU index in its name; CUDA_VISIBLE_DEVICES left as it is", worker.name)
    if os.environ.get("SEGLIB_WATCH_PARENT"):
        _watch_parent()


def main(argv: list[str] | None = None) -> int:
    from seglib.config import ConfigError
    from seglib.runs.jobs import EXIT_DONE, EXIT_FAILED, EXIT_HIT, EXIT_LOCKED, EXIT_RETRY, record_error, retryable

    ap = argparse.ArgumentParser(prog="python -m seglib.runs.worker", description=__doc__.splitlines()[0])
    ap.add_argument("job_file")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    key = Path(args.job_file).parent.name[:8]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {key} %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return {"done": EXIT_DONE, "hit": EXIT_HIT, "locked": EXIT_LOCKED}[run_job(args.job_file, args.force)]
    except (ConfigError, ValueError, TypeError, KeyError, FloatingPointError) as e:
        log.error("run %s failed: %s", key, e)
        record_error(Path(args.job_file).parent, e, retryable=False)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - recorded in the run folder, said by the exit code
        again = retryable(e)
        log.exception("run %s failed%s", key, " (a retry can succeed)" if again else "")
        record_error(Path(args.job_file).parent, e, retryable=again)
        return EXIT_RETRY if again else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
