"""What a run folder says about a run that trains elsewhere: the job file a child process rebuilds the run
from, the child's progress and its last error, the scheduler's job id; and the child process itself.

Every record is a small JSON file in ``root/<study>/<key>/`` written atomically, beside the run's results:

* ``job.json``: the study, the cell's configuration, the data folder and fingerprints, the build paths;
* ``progress.json``: epoch n of N, host, pid, time (written by the child after each epoch);
* ``error.json``: the last failure (its type, its last line, whether a retry can succeed);
* ``jobs.json``: the scheduler's job ids of the run (SLURM), newest last.

The shared file system is the one source of truth: a driver reads these files, never a scheduler's memory.
Written by hand; the child is started with :mod:`subprocess`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from seglib.io import atomic_write

log = logging.getLogger(__name__)

JOB = "job.json"
PROGRESS = "progress.json"
ERROR = "error.json"
JOB_IDS = "jobs.json"
#: files that say how a run is going, not what it computed: a folder holding only these is not started
RECORDS = (JOB, PROGRESS, ERROR, JOB_IDS)

#: the child's exit codes (a negative code is the signal that killed it)
EXIT_DONE, EXIT_LOCKED, EXIT_FAILED, EXIT_RETRY, EXIT_HIT = 0, 3, 4, 5, 6


class RunFailed(RuntimeError):
    """A run failed in a way a retry cannot mend (a configuration error, a NaN loss): its message says why."""


def write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (being written, say)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_job(run_dir: Path, spec, *, data_dir: Path, project: Path, build: Path, runs: Path) -> Path:
    """``run_dir/job.json``: everything a child process on any node needs to train ``spec``."""
    path = Path(run_dir) / JOB
    write_json(path, {"study": spec.study, "key": spec.key, "config": spec.config,
                      "data_fingerprint": spec.data_fingerprint, "code_fingerprint": spec.code_fingerprint,
                      "data_dir": str(data_dir), "project": str(project), "build": str(build), "runs": str(runs)})
    return path


def record_error(run_dir: Path, exc: BaseException, retryable: bool) -> None:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
    write_json(Path(run_dir) / ERROR, {"type": type(exc).__name__, "error": lines[-1], "message": str(exc)[-4000:],
                                      "retryable": retryable, "host": socket.gethostname(), "pid": os.getpid(),
                                      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def record_job_id(run_dir: Path, job_id: str, cluster: str, folder: Path) -> None:
    path = Path(run_dir) / JOB_IDS
    ids = read_json(path) or []
    ids.append({"job_id": str(job_id), "cluster": cluster, "folder": str(folder),
                "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_json(path, ids)


def last_job(run_dir: Path) -> dict | None:
    ids = read_json(Path(run_dir) / JOB_IDS)
    return ids[-1] if isinstance(ids, list) and ids else None


def retryable(exc: BaseException) -> bool:
    """Whether training again can succeed: out of memory on the GPU (another run may have held it). A
    configuration error, a NaN loss, a bug fail the same way each time."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return "outofmemoryerror" in text or "cuda out of memory" in text or "cuda error: out of memory" in text


class ProgressFile(logging.Handler):
    """Writes ``progress.json`` from :func:`seglib.train.loop.fit`'s ``epoch n/N`` log line (so the training
    code, part of every run's key, stays as it is)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(logging.INFO)
        self.path = Path(run_dir) / PROGRESS

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "seglib.train.loop" or not str(record.msg).startswith("epoch %d/%d"):
            return
        try:
            epoch, epochs = int(record.args[0]), int(record.args[1])
            write_json(self.path, {"epoch": epoch, "epochs": epochs, "line": record.getMessage(),
                                   "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
        except Exception:  # noqa: BLE001 - progress must never stop a run
            pass


def _die_with_parent() -> None:
    """In the child, before ``exec``: SIGKILL when the process that started it dies (Linux ``prctl``)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_command(job_file: Path, force: bool = False) -> list[str]:
    return [sys.executable, "-m", "seglib.runs.worker", str(job_file), *(["--force"] if force else [])]


def child_environment(env: dict | None = None) -> dict[str, str]:
    """The environment of a training child: this process's, with ``env`` over it, less the allocator settings a
    Dask nanny set for its own worker process (``distributed.nanny.pre-spawn-environ``; its thread counts stay:
    the child sets its own from ``train.cpu_threads``). The nanny's ``MALLOC_TRIM_THRESHOLD_=65536``
    makes glibc hand every freed block back to the kernel: a 2D U-Net epoch on LGG then spent 37 % of its time
    in the kernel on page faults (12 M minor faults in 77 s) and took 22 s instead of 14 s."""
    out = {**os.environ, **(env or {})}
    try:
        from distributed import get_worker

        get_worker()  # raises ValueError outside a Dask worker
        import dask

        nanny = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    except (ImportError, ValueError):
        nanny = {}
    for key, value in nanny.items():
        if key.startswith("MALLOC_") and key not in (env or {}) and out.get(key) == str(value):
            out.pop(key)
    return out


def run_child(job_file: Path, force: bool = False, env: dict | None = None) -> int:
    """Train the run of ``job_file`` in a child process (its output streamed to this one's stderr);
    return its exit code. The child dies with this process."""
    proc = subprocess.Popen(child_command(job_file, force), env=child_environment(env),
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    try:
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def train_in_child(job_file: str, force: bool = False, retries: int = 2) -> str:
    """What a Dask task runs: the child trains the run (``"done"``), finds it done (``"hit"``), or the run's
    lock is held elsewhere (``"locked"``). A child killed by a signal or out of GPU memory is started again, up to ``retries``
    times, and resumes from its checkpoint; any other failure raises :class:`RunFailed` with its message."""
    job_file = Path(job_file)
    run_dir = job_file.parent
    for attempt in range(retries + 1):
        rc = run_child(job_file, force and attempt == 0)
        if rc == EXIT_DONE:
            return "done"
        if rc == EXIT_HIT:
            return "hit"
        if rc == EXIT_LOCKED:
            return "locked"
        err = read_json(run_dir / ERROR) or {}
        if rc == EXIT_FAILED:
            raise RunFailed(f"run {run_dir.parent.name}/{run_dir.name} failed: {err.get('error', 'no error recorded')}")
        why = f"killed by signal {-rc}" if rc < 0 else err.get("error", f"exit code {rc}")
        log.warning("run %s: child %s (attempt %d of %d)%s", run_dir.name, why, attempt + 1, retries + 1,
                    ": resuming from its checkpoint" if attempt < retries else "")
    raise RunFailed(f"run {run_dir.parent.name}/{run_dir.name} failed {retries + 1} times: {why}")
