"""Grid expansion and the run cache: one grid cell = one run = one folder named by its hash.

``root/<study>/<key>/`` holds ``config.json``, ``history.csv``, ``metrics.csv`` (per case),
``predictions.npz`` (a few predictions for figures), ``provenance.json``, a
``checkpoints/`` folder (``last.pt`` while training, ``best.pt``) and, written last,
``DONE``: a manifest of the result files with their sizes and SHA-256. A run is
*done* only when ``DONE`` is there and every file matches it; a folder without
``DONE`` is *partial* (training again resumes from its checkpoint); a folder whose
files disagree with ``DONE`` is *corrupt* and is rebuilt with a warning, never read.
Every file is written to a temporary name and moved in place with ``os.replace``.

Written by hand: no engine we use (MONAI, papermill) caches training runs by content.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import io
import json
import logging
import platform
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import seglib
from seglib.grid import cell_label, expand_grid, grid_axes
from seglib.hashing import canonical, stable_hash
from seglib.locks import FileLock, describe
from seglib.train_utils import atomic_write

__all__ = [
    "RunSpec", "RunOutputs", "RunResult", "RunResults", "ExecutionSummary", "RunCache", "RunNotDone",
    "Executor", "LocalExecutor", "execute", "run_one", "environment", "expand_grid", "grid_axes", "cell_label",
]

logger = logging.getLogger(__name__)

# exact float round trip of the CSVs (the default from pandas 3 on; the keyword is deprecated there)
_READ_CSV = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
RESULT_FILES = ("config.json", "history.csv", "metrics.csv", "predictions.npz", "provenance.json")
DONE = "DONE"
CHECKPOINTS = "checkpoints"
KEPT_CHECKPOINTS = ("best.pt",)
LOCK_SUFFIX = ".lock"


class RunNotDone(LookupError):
    """``RunCache.load`` of a run that is missing, partial or corrupt."""


# --------------------------------------------------------------------------- specs and outputs
def _train_code() -> str:
    from seglib.fingerprint import code_fingerprint

    return code_fingerprint("train")


@dataclass(frozen=True, eq=True)
class RunSpec:
    """One grid cell: the study, its resolved config (plain JSON types), the data's content
    fingerprint and the fingerprint of the library code that trains and evaluates it
    (:func:`seglib.fingerprint.code_fingerprint`, by default that of the code on disk now).
    ``key`` hashes all four: a change to any of them is another run."""

    study: str
    config: dict[str, Any]
    data_fingerprint: str
    code_fingerprint: str = field(default_factory=_train_code)

    def __post_init__(self) -> None:
        if not self.study or any(c in self.study for c in "/\\") or self.study.startswith("."):
            raise ValueError(f"study must be a plain folder name, got {self.study!r}")
        canonical(self.config)  # raises TypeError on a value that is not plain data

    @functools.cached_property
    def key(self) -> str:
        return stable_hash({"config": self.config, "data_fingerprint": self.data_fingerprint,
                            "code_fingerprint": self.code_fingerprint})

    def __hash__(self) -> int:
        return hash((self.study, self.key))


@dataclass
class RunOutputs:
    """What a ``train_fn`` returns: per-epoch history, per-case metrics, a few named
    predictions (arrays) and ``extra`` JSON-able facts merged into the provenance
    (e.g. ``History.summary()``: device, precision, best epoch)."""

    history: pd.DataFrame
    metrics: pd.DataFrame
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("history", "metrics"):
            value = getattr(self, name)
            if not isinstance(value, pd.DataFrame):
                raise TypeError(f"RunOutputs.{name} must be a pandas DataFrame, got {type(value).__name__}")
        if not isinstance(self.predictions, dict):
            raise TypeError(f"RunOutputs.predictions must be a dict of arrays, got {type(self.predictions).__name__}")
        canonical(self.extra)


@dataclass
class RunResult:
    """A finished run as read back from its folder."""

    spec: RunSpec
    run_dir: Path
    config: dict[str, Any]
    history: pd.DataFrame
    metrics: pd.DataFrame
    predictions: dict[str, np.ndarray]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class ExecutionSummary:
    runs: int
    hits: int
    trained: int
    seconds: float


class RunResults(list):
    """The results of :func:`execute`, in the order of the specs, with a ``summary``."""

    def __init__(self, items: Iterable[RunResult], summary: ExecutionSummary) -> None:
        super().__init__(items)
        self.summary = summary


# --------------------------------------------------------------------------- atomic files
def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(canonical(obj), indent=2, sort_keys=True) + "\n").encode("utf-8")


def _csv_bytes(df: pd.DataFrame) -> bytes:
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    return df.to_csv(index=False).encode("utf-8")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{str(k): np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, host and code commit: the machine half of a run's provenance."""
    return {"seglib": seglib.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "torch": _version("torch"), "monai": _version("monai"), "numpy": np.__version__,
            "pandas": pd.__version__, "hostname": socket.gethostname(), "git_commit": _git_commit()}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the cache
class RunCache:
    """Runs stored under ``root/<study>/<key>/`` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def run_dir(self, spec: RunSpec) -> Path:
        return self.root / spec.study / spec.key

    def lock(self, spec: RunSpec) -> FileLock:
        """The run's lock, ``root/<study>/<key>.lock`` beside its folder (so removing the folder keeps it)."""
        return FileLock(self.root / spec.study / f"{spec.key}{LOCK_SUFFIX}")

    def checkpoint_dir(self, spec: RunSpec) -> Path:
        return self.run_dir(spec) / CHECKPOINTS

    def _diagnose(self, spec: RunSpec) -> tuple[str, str]:
        d = self.run_dir(spec)
        if not d.is_dir():
            return "missing", "no folder"
        if not (d / DONE).is_file():
            return "partial", "no DONE marker"
        try:
            manifest = json.loads((d / DONE).read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return "corrupt", f"unreadable DONE ({exc})"
        if not isinstance(files, dict):
            return "corrupt", "unreadable DONE (no file list)"
        for name in dict.fromkeys([*RESULT_FILES, *files]):
            p = d / name
            entry = files.get(name)
            if not isinstance(entry, dict):
                return "corrupt", f"{name} not listed in DONE"
            if not p.is_file():
                return "corrupt", f"{name} missing"
            if p.stat().st_size != entry.get("size") or _sha256(p) != entry.get("sha256"):
                return "corrupt", f"{name} differs from what DONE recorded"
        try:
            key = json.loads((d / "config.json").read_text()).get("key")
        except (OSError, ValueError, AttributeError) as exc:
            return "corrupt", f"unreadable config.json ({exc})"
        if key != spec.key:
            return "corrupt", f"config.json has key {key!r}, expected {spec.key!r}"
        return "done", ""

    def status(self, spec: RunSpec) -> str:
        """``"done"``, ``"partial"`` (folder without DONE), ``"missing"`` or ``"corrupt"``
        (DONE present but a result file missing, unreadable or changed)."""
        return self._diagnose(spec)[0]

    def load(self, spec: RunSpec) -> RunResult:
        """Read a done run; raise :class:`RunNotDone` for any other status."""
        status, why = self._diagnose(spec)
        if status != "done":
            raise RunNotDone(f"run {spec.study}/{spec.key} is {status} ({why}); execute it first")
        d = self.run_dir(spec)
        with np.load(d / "predictions.npz", allow_pickle=False) as z:
            predictions = {k: z[k] for k in z.files}
        return RunResult(
            spec=spec, run_dir=d,
            config=json.loads((d / "config.json").read_text())["config"],
            history=pd.read_csv(d / "history.csv", **_READ_CSV),
            metrics=pd.read_csv(d / "metrics.csv", **_READ_CSV),
            predictions=predictions,
            provenance=json.loads((d / "provenance.json").read_text()),
        )

    def begin(self, spec: RunSpec) -> Path:
        """Create the run folder (and ``checkpoints/``) and write ``config.json``."""
        d = self.run_dir(spec)
        (d / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        _atomic_write(d / "config.json", _json_bytes({
            "study": spec.study, "key": spec.key, "config": spec.config,
            "data_fingerprint": spec.data_fingerprint, "code_fingerprint": spec.code_fingerprint,
            "seglib_version": seglib.__version__}))
        return d

    def write(self, spec: RunSpec, outputs: RunOutputs, *, started: str, wall_time_s: float) -> None:
        """Write the result files, then ``DONE`` last; drop ``checkpoints/last.pt`` afterwards."""
        outputs.check()
        d = self.begin(spec)
        provenance = {**environment(), **canonical(outputs.extra), "study": spec.study, "key": spec.key,
                      "code_fingerprint": spec.code_fingerprint, "data_fingerprint": spec.data_fingerprint,
                      "started": started, "ended": _now(), "wall_time_s": wall_time_s}
        blobs = {"history.csv": _csv_bytes(outputs.history), "metrics.csv": _csv_bytes(outputs.metrics),
                 "predictions.npz": _npz_bytes(outputs.predictions), "provenance.json": _json_bytes(provenance)}
        for name, data in blobs.items():
            _atomic_write(d / name, data)
        # every file the run is read from afterwards, the best checkpoint (for ``seglib predict``) too
        kept = [*RESULT_FILES, *(f"{CHECKPOINTS}/{c}" for c in KEPT_CHECKPOINTS if (d / CHECKPOINTS / c).is_file())]
        files = {name: {"size": (d / name).stat().st_size, "sha256": _sha256(d / name)} for name in kept}
        _atomic_write(d / DONE, _json_bytes({"files": files, "finished": provenance["ended"]}))
        last = d / CHECKPOINTS / "last.pt"
        if last.exists():
            last.unlink()

    def remove(self, spec: RunSpec) -> None:
        """Delete a run folder (``DONE`` first, so an interruption leaves it partial, not done)."""
        d = self.run_dir(spec)
        if (d / DONE).exists():
            (d / DONE).unlink()
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- execution
class Executor(Protocol):
    """Runs ``fn`` over ``items`` and yields the results in the order of ``items``.
    A distributed engine implements this to run grid cells elsewhere."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]: ...


class LocalExecutor:
    """Sequential, in this process (the default)."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        for item in items:
            yield fn(item)


TrainFn = Callable[[RunSpec, Path], RunOutputs]
#: what :func:`run_one` returns for a run that another process is training now
LOCKED = None


def _train_locked(cache: RunCache, train_fn: TrainFn, force: bool, spec: RunSpec) -> tuple[RunResult, bool]:
    """Train ``spec`` (the caller holds its lock): rebuild a corrupt folder, resume a partial one."""
    status, why = cache._diagnose(spec)
    where = f"{spec.study}/{spec.key}"
    if status == "done" and not force:
        logger.info("cache hit: %s", where)
        return cache.load(spec), True
    if status == "corrupt":
        msg = f"run {where} is corrupt ({why}): rebuilding it"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        cache.remove(spec)
    elif status == "done":
        logger.info("force: retraining %s", where)
        cache.remove(spec)
    elif status == "partial":
        msg = f"run {where} is partial ({why}): training again, resuming from its checkpoint if any"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    run_dir = cache.begin(spec)
    started, t0 = _now(), time.perf_counter()
    logger.info("training %s", where)
    outputs = train_fn(spec, run_dir)
    if not isinstance(outputs, RunOutputs):
        raise TypeError(f"train_fn must return RunOutputs, got {type(outputs).__name__}")
    cache.write(spec, outputs, started=started, wall_time_s=time.perf_counter() - t0)
    return cache.load(spec), False


def run_one(cache: RunCache, train_fn: TrainFn, force: bool, spec: RunSpec) -> tuple[RunResult, bool] | None:
    """Execute one spec: ``(result, True)`` on a cache hit, ``(result, False)`` after training it, or
    :data:`LOCKED` (None) when another process holds the run's lock (it is training it now)."""
    if not force and cache.status(spec) == "done":
        logger.info("cache hit: %s/%s", spec.study, spec.key)
        return cache.load(spec), True
    lock = cache.lock(spec)
    if not lock.try_acquire():
        return LOCKED
    try:
        return _train_locked(cache, train_fn, force, spec)
    finally:
        lock.release()


def execute(
    specs: Iterable[RunSpec],
    train_fn: TrainFn,
    cache: RunCache,
    force: bool = False,
    executor: Executor | None = None,
    *,
    progress: bool = True,
    poll_s: float = 1.0,
) -> RunResults:
    """Run every spec not already done (all of them with ``force``) and return their results.

    ``train_fn(spec, run_dir)`` trains one cell and returns :class:`RunOutputs`; it
    should checkpoint under ``run_dir / "checkpoints"`` so that an interrupted run
    resumes. Duplicate specs run once. A run whose lock another process holds is left for
    later: the other runs go first, then this process waits for it and reads its result (or
    trains it, if the other process gave up without finishing it). The result list has a
    ``summary`` (:class:`ExecutionSummary`: runs, cache hits, trained, seconds).
    """
    specs = list(specs)
    unique = list({(s.study, s.key): s for s in specs}.values())
    executor = executor or LocalExecutor()
    t0 = time.perf_counter()
    by_id: dict[tuple[str, str], RunResult] = {}
    hits = 0
    pending = unique
    waited: set[tuple[str, str]] = set()  # trained by another process while we waited: not forced again
    bar = tqdm(total=len(unique), desc="runs", disable=not progress, mininterval=5.0, dynamic_ncols=True)
    try:
        while pending:
            fns = {(s.study, s.key): functools.partial(run_one, cache, train_fn,
                                                       force and (s.study, s.key) not in waited) for s in pending}
            outcomes = executor.map(lambda s: fns[(s.study, s.key)](s), pending)
            deferred = []
            for spec, outcome in zip(pending, outcomes):
                if outcome is LOCKED:
                    deferred.append(spec)
                    continue
                result, hit = outcome
                by_id[(spec.study, spec.key)] = result
                hits += bool(hit)
                bar.update(1)
            if deferred:
                for spec in deferred:
                    if (spec.study, spec.key) not in waited:
                        logger.info("run %s/%s is being trained by %s: waiting for it", spec.study, spec.key,
                                    describe(cache.lock(spec).holder()))
                    waited.add((spec.study, spec.key))
                time.sleep(poll_s)
            pending = deferred
    finally:
        bar.close()
    trained = len(unique) - hits
    summary = ExecutionSummary(runs=len(unique), hits=hits, trained=trained, seconds=time.perf_counter() - t0)
    logger.info("runs: %d, cache hits: %d, trained: %d, %.1f s", summary.runs, summary.hits, summary.trained,
                summary.seconds)
    return RunResults([by_id[(s.study, s.key)] for s in specs], summary)
