"""Execute a study notebook with papermill, after validating its parameters.

papermill only warns on an unknown parameter and runs anyway; here every
parameter is validated by :mod:`seglib.config` first, and the notebook receives
the fully resolved sections, so nothing of the notebook's own defaults leaks
into another profile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
from pathlib import Path

from seglib.config import STUDIES, StudyConfig, as_dict
from seglib.io import atomic_write_json
from seglib.paths import Paths, paths  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

KERNEL_NAME = "seglib"
KERNEL_DISPLAY = "Python (seglib)"


class NotebookFailed(RuntimeError):
    """A cell raised. The executed notebook is kept; the message names the cell and the error."""


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Make sure a Jupyter kernel ``name`` runs this interpreter; install it into ``sys.prefix`` if not.

    papermill's most common failure is ``NoSuchKernel``: the set-up installs the
    kernel, and this repairs a missing one (for example after a manual ``pip install``).
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
        exe = Path(spec.argv[0])
        if exe.exists() and exe.resolve() == Path(sys.executable).resolve():
            return name
        log.info("kernel %r runs %s, not %s: reinstalling it for this environment", name, exe, sys.executable)
    except NoSuchKernel:
        log.info("Jupyter kernel %r missing: installing it into %s", name, sys.prefix)
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=KERNEL_DISPLAY, prefix=sys.prefix)
    return name


#: the sections of a resolved configuration that papermill passes in ``overrides``
OVERRIDE_SECTIONS = ("data", "model", "loss", "optim", "train", "settings", "grid", "seeds")


def notebook_parameters(cfg: StudyConfig, output_dir: Path | None = None) -> dict:
    """The parameters papermill injects into the parameters cell: ``profile``, ``overrides`` (every section
    of the resolved config, so the notebook's :func:`~seglib.studies.session.open_study` resolves exactly
    the configuration ``seglib run`` validated) and ``output_dir`` when given."""
    d = as_dict(cfg)
    params = {"profile": d["profile"], "overrides": {k: d[k] for k in OVERRIDE_SECTIONS}}
    if output_dir is not None:
        params["output_dir"] = str(output_dir)
    return params


def stamp(cfg: StudyConfig, notebook: Path) -> dict:
    """What makes an executed notebook up to date: the config, the notebook's source and every file of
    the library (its parsed code; the site templates byte for byte). A change to a table or figure
    function re-executes the notebook; its runs stay cached unless the training code changed."""
    from seglib.fingerprint import code_fingerprint

    src = hashlib.sha256(notebook.read_bytes()).hexdigest()[:16] if notebook.exists() else None
    return {"config_hash": cfg.hash, "notebook_sha": src, "library_fingerprint": code_fingerprint("all")}


def _stamp_file(p: Paths, study: str) -> Path:
    return p.executed / f"{study}.stamp.json"


def is_up_to_date(cfg: StudyConfig, p: Paths) -> bool:
    stamp_file = _stamp_file(p, cfg.study)
    if not stamp_file.is_file() or not p.executed_notebook(cfg.study).is_file():
        return False
    try:
        old = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        return False
    return old == stamp(cfg, p.notebook(cfg.study)) and (p.results(cfg.study) / "results.json").is_file()


def notebook_lock(p: Paths, study: str):
    """The lock that one process at a time holds while it executes ``study``'s notebook."""
    from seglib.runs.locks import FileLock

    return FileLock(p.executed / f".{study}.lock")


def _publish(staged_nb: Path, staged_results: Path, nb: Path, results: Path) -> None:
    """Move a successful execution into place: the results folder by two renames (the old one out,
    the new one in), then the notebook by ``os.replace``; nothing of the earlier build stays mixed in."""
    import shutil

    results.parent.mkdir(parents=True, exist_ok=True)
    old = results.with_name(f".{results.name}.old.{os.getpid()}")
    if results.exists():
        os.replace(results, old)
    os.replace(staged_results, results)
    os.replace(staged_nb, nb)
    shutil.rmtree(old, ignore_errors=True)


def kernel_log(p: Paths, study: str) -> Path:
    """Where the kernel that executes ``study``'s notebook writes its own stdout and stderr."""
    return p.build / "logs" / f"{study}-kernel.log"


def logged_kernel_manager(log_file):
    """jupyter_client's ``AsyncKernelManager`` (nbclient's default) whose kernel writes its own stdout and stderr
    to the open file ``log_file`` instead of this process's.

    ipykernel sends what child processes write to the kernel's file descriptors (a Dask worker's log lines, a
    library's C code) to the notebook **and** to the kernel's own stderr; with the kernel on the terminal every such
    line was printed twice by ``seglib run`` (once more by papermill's ``--log-output``) and ``--quiet`` still showed
    it. The notebook keeps its copy; the second one lands in the log file."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("stdout", log_file)
            kw.setdefault("stderr", log_file)
            return await super().start_kernel(**kw)

    return LoggedKernelManager


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _kernel_env(cfg: StudyConfig):
    """The executor settings, for the kernel, in ``$SEGLIB_EXECUTOR`` (the notebooks' parameters stay as they
    are; :func:`seglib.studies.collect.run_grid` reads it), and :data:`BATCH_ENV`. Kernels started side by
    side by :func:`run_notebooks` share this process's environment, so they must agree on it."""
    from seglib.runs.executors import BATCH_ENV, ENV, to_env

    value = to_env(cfg.executor).get(ENV)
    with _ENV_LOCK:
        os.environ[BATCH_ENV] = "1"
        before = os.environ.get(ENV)
        if before is not None and before != value and _kernel_env.users:
            raise ValueError(f"notebooks executed side by side with different executors ({before} and {value}): "
                             f"run them one at a time (--jobs 1) or with one executor")
        if value is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = value
        _kernel_env.users += 1
    try:
        yield
    finally:
        with _ENV_LOCK:
            _kernel_env.users -= 1
            if not _kernel_env.users:
                os.environ.pop(ENV, None)
                os.environ.pop(BATCH_ENV, None)


_kernel_env.users = 0


def run_notebook(cfg: StudyConfig, p: Paths | None = None, *, log_output: bool = True,
                 progress_bar: bool = True) -> Path:
    """Execute ``notebooks/<study>.ipynb`` into ``build/executed/<study>.ipynb``.

    The notebook executes into a staging folder under ``build/staging/`` while this process holds the
    study's lock (a second process waits for it), and only a successful execution replaces the
    executed notebook and its results folder. On a failing cell the earlier success stays as it was,
    the failed notebook is kept at ``build/failed/<study>.ipynb`` and :class:`NotebookFailed` names
    the cell, the error and that file.
    """
    import shutil

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if cfg.study not in STUDIES:
        raise ValueError(f"unknown study {cfg.study!r}; expected one of {STUDIES}")
    p = p or paths()
    src = p.notebook(cfg.study)
    if not src.is_file():
        raise FileNotFoundError(f"notebook {src} does not exist")
    out = p.executed_notebook(cfg.study)
    out.parent.mkdir(parents=True, exist_ok=True)
    kernel = ensure_kernel()
    with notebook_lock(p, cfg.study):
        stage = p.build / "staging" / f"{cfg.study}-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        staged_nb, staged_results = stage / f"{cfg.study}.ipynb", stage / cfg.study
        log.info("executing %s -> %s (kernel %s, profile %s, executor %s)", src, out, kernel, cfg.profile,
                 cfg.executor.name)
        klog = kernel_log(p, cfg.study)
        klog.parent.mkdir(parents=True, exist_ok=True)
        try:
            with _kernel_env(cfg), open(klog, "wb") as kernel_out:
                pm.execute_notebook(
                    str(src), str(staged_nb), parameters=notebook_parameters(cfg, staged_results),
                    kernel_name=kernel, language="python", log_output=log_output, progress_bar=progress_bar,
                    cwd=str(p.root), kernel_manager_class=logged_kernel_manager(kernel_out),
                )
        except PapermillExecutionError as e:
            failed = p.build / "failed" / f"{cfg.study}.ipynb"
            failed.parent.mkdir(parents=True, exist_ok=True)
            if staged_nb.exists():
                os.replace(staged_nb, failed)
            shutil.rmtree(stage, ignore_errors=True)
            earlier = " The earlier successful build is kept as it was." if out.is_file() else ""
            raise NotebookFailed(
                f"{cfg.study}: cell {e.cell_index} (execution count {e.exec_count}) raised {e.ename}: {e.evalue}. "
                f"The executed notebook is kept at {failed}, the kernel's own output at {klog}.{earlier}") from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            if klog.is_file() and klog.stat().st_size:
                log.warning("%s: the kernel's own output is in %s", cfg.study, klog)
            raise
        staged_results.mkdir(parents=True, exist_ok=True)
        _stamp_file(p, cfg.study).unlink(missing_ok=True)
        _publish(staged_nb, staged_results, out, p.results(cfg.study))
        shutil.rmtree(stage, ignore_errors=True)
        atomic_write_json(_stamp_file(p, cfg.study), stamp(cfg, src))
    return out


def default_jobs(n_notebooks: int) -> int:
    """Notebooks to execute at once: every notebook, up to two per CPU core.

    Every run trains with ``train.cpu_threads`` (default 1) threads, so a kernel uses about one core; on 2 cores
    the three quick notebooks side by side finish in about their summed time over two, where two at a time
    left one core idle while the last ran alone (measured on a 2-core CPU with native bf16: 420 s two at a
    time, prostate and brain 216-218 s then stroke 198 s alone).
    """
    return max(1, min(n_notebooks, 2 * (os.cpu_count() or 1)))


def _children() -> list:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _signal_all(procs: list, how) -> None:
    import psutil

    for c in procs:
        with contextlib.suppress(psutil.Error):
            how(c)


def interrupt_children() -> int:
    """SIGINT to every process this one started (Jupyter kernels and their training processes), as a terminal's
    Ctrl-C would send it; returns how many there were."""
    import signal

    kids = _children()
    _signal_all(kids, lambda c: c.send_signal(signal.SIGINT))
    return len(kids)


def stop_child_processes(running: list, grace: float = 5.0) -> None:
    """After Ctrl-C, make the notebooks in ``running`` (futures) end within about ``grace`` seconds.

    A kernel ignores SIGINT outside a cell (while it starts, between cells), so a single interrupt can be lost
    and its notebook would run on to its end. The kernels and their training processes are interrupted again
    every half second; what still runs after ``grace`` is terminated, then killed. A training process stopped
    this way leaves its last checkpoint, which the next run resumes from; finished runs are in the cache.
    """
    import time
    from concurrent.futures import wait

    import psutil

    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        running = list(wait(running, timeout=0.5).not_done)
        if running:
            interrupt_children()
    if not running:
        return
    procs = _children()
    _signal_all(procs, lambda c: c.terminate())
    _, alive = psutil.wait_procs(procs, timeout=3.0)
    _signal_all(alive, lambda c: c.kill())
    wait(running, timeout=10.0)


def run_notebooks(configs: list[StudyConfig], p: Paths | None = None, *, jobs: int | None = None,
                  log_output: bool = True, progress_bar: bool = True, on_done=None) -> dict[str, Path | Exception]:
    """Execute several notebooks, ``jobs`` at a time; returns ``{study: executed path or the exception}``.

    With ``jobs > 1`` every kernel gets ``cpu_count // jobs`` threads (``OMP_NUM_THREADS``, unless
    the caller set it), cell output is not echoed (it would interleave) and a failing notebook
    does not stop the others: each finished notebook is kept, and the failures are returned.
    ``on_done(study, result, seconds)`` is called as each one ends.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    p = p or paths()
    jobs = max(1, min(int(jobs or default_jobs(len(configs))), len(configs) or 1))
    parallel = jobs > 1

    def one(cfg):
        t0 = time.perf_counter()
        try:
            result = run_notebook(cfg, p, log_output=log_output and not parallel,
                                  progress_bar=progress_bar and not parallel)
        except Exception as e:  # noqa: BLE001 - returned to the caller with the others
            result = e
        if on_done is not None:
            on_done(cfg.study, result, time.perf_counter() - t0)
        return result

    if not parallel:
        return {cfg.study: one(cfg) for cfg in configs}
    ensure_kernel()  # once, before kernels start side by side
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    user_set = "OMP_NUM_THREADS" in os.environ
    if not user_set:
        os.environ["OMP_NUM_THREADS"] = threads
    try:
        pool = ThreadPoolExecutor(max_workers=jobs)
        futures = {cfg.study: pool.submit(one, cfg) for cfg in configs}
        try:
            return {study: f.result() for study, f in futures.items()}
        except KeyboardInterrupt:
            # Ctrl-C: the notebooks not started yet never start; the running ones were interrupted with their
            # kernels (seglib.cli) and end at their current cell, their earlier builds kept
            pool.shutdown(wait=False, cancel_futures=True)
            stop_child_processes([f for f in futures.values() if not f.done()])
            raise
        finally:
            pool.shutdown(wait=True)
    finally:
        if not user_set:
            os.environ.pop("OMP_NUM_THREADS", None)
