"""Execute a study notebook with papermill, after validating its parameters.

papermill only warns on an unknown parameter and runs anyway; here every
parameter is validated by :mod:`seglib.config` first, and the notebook receives
the fully resolved sections, so nothing of the notebook's own defaults leaks
into another profile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from seglib import __version__
from seglib.config import STUDIES, StudyConfig, as_dict, project_root

log = logging.getLogger(__name__)

KERNEL_NAME = "seglib"
KERNEL_DISPLAY = "Python (seglib)"


class NotebookFailed(RuntimeError):
    """A cell raised. The executed notebook is kept; the message names the cell and the error."""


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def build(self) -> Path:
        """``$SEGLIB_BUILD`` or ``<root>/build``: every generated file (runs, caches, executed notebooks)."""
        env = os.environ.get("SEGLIB_BUILD")
        return Path(env).resolve() if env else self.root / "build"

    @property
    def executed(self) -> Path:
        return self.build / "executed"

    @property
    def runs(self) -> Path:
        return self.build / "runs"

    @property
    def phantoms(self) -> Path:
        return self.build / "phantoms"

    @property
    def cache(self) -> Path:
        return self.build / "cache"

    def notebook(self, study: str) -> Path:
        return self.root / "notebooks" / f"{study}.ipynb"

    def executed_notebook(self, study: str) -> Path:
        return self.executed / f"{study}.ipynb"

    def results(self, study: str) -> Path:
        return self.executed / study


def paths(root: Path | None = None) -> Paths:
    root = root or project_root()
    if root is None:
        raise FileNotFoundError(
            "Cannot find the seglib project folder (the one holding params/ and notebooks/): run from inside "
            "the project or set SEGLIB_ROOT.")
    return Paths(Path(root))


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


def notebook_parameters(cfg: StudyConfig, output_dir: Path | None = None) -> dict:
    """The parameters papermill injects: every section of the resolved config."""
    d = as_dict(cfg)
    params = {k: d[k] for k in ("profile", "data", "model", "loss", "optim", "train", "settings", "grid", "seeds")}
    if output_dir is not None:
        params["output_dir"] = str(output_dir)
    return params


def stamp(cfg: StudyConfig, notebook: Path) -> dict:
    """What makes an executed notebook up to date: the config, the notebook's source, seglib's version."""
    src = hashlib.sha256(notebook.read_bytes()).hexdigest()[:16] if notebook.exists() else None
    return {"config_hash": cfg.hash, "notebook_sha": src, "seglib_version": __version__}


def is_up_to_date(cfg: StudyConfig, p: Paths) -> bool:
    stamp_file = p.executed / f"{cfg.study}.stamp.json"
    if not stamp_file.is_file() or not p.executed_notebook(cfg.study).is_file():
        return False
    try:
        old = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        return False
    return old == stamp(cfg, p.notebook(cfg.study)) and (p.results(cfg.study) / "results.json").is_file()


def run_notebook(cfg: StudyConfig, p: Paths | None = None, *, log_output: bool = True,
                 progress_bar: bool = True) -> Path:
    """Execute ``notebooks/<study>.ipynb`` into ``build/executed/<study>.ipynb``.

    On a failing cell the executed notebook stays in place (papermill saves it
    after every cell) and :class:`NotebookFailed` names the cell and the error.
    """
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
    stamp_file = p.executed / f"{cfg.study}.stamp.json"
    stamp_file.unlink(missing_ok=True)
    log.info("executing %s -> %s (kernel %s, profile %s)", src, out, kernel, cfg.profile)
    try:
        pm.execute_notebook(
            str(src), str(out), parameters=notebook_parameters(cfg, p.results(cfg.study)), kernel_name=kernel,
            language="python",
            log_output=log_output, progress_bar=progress_bar, cwd=str(p.root),
        )
    except PapermillExecutionError as e:
        raise NotebookFailed(
            f"{cfg.study}: cell {e.cell_index} (execution count {e.exec_count}) raised {e.ename}: {e.evalue}. "
            f"The executed notebook is kept at {out}.") from None
    stamp_file.write_text(json.dumps(stamp(cfg, src), indent=1))
    return out


def default_jobs(n_notebooks: int) -> int:
    """Notebooks to execute at once: one per CPU core, at most one per notebook.

    Small U-Nets scale poorly past one thread (measured here: 2 threads gave 1.1-1.3x per step), so on
    2 cores two notebooks with one thread each finish sooner than one after the other with two.
    """
    return max(1, min(n_notebooks, os.cpu_count() or 1))


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
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {cfg.study: pool.submit(one, cfg) for cfg in configs}
            return {study: f.result() for study, f in futures.items()}
    finally:
        if not user_set:
            os.environ.pop("OMP_NUM_THREADS", None)
