"""The run cache: one grid cell = one run = one folder named by its content key.

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
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import seglib
from seglib.hashing import canonical, stable_hash
from seglib.io import atomic_write_bytes, json_text
from seglib.runs.locks import FileLock

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
    """One grid cell: the study, its resolved config (plain JSON types; the training code reads it as a
    :class:`~seglib.config.RunConfig`, whose ``to_dict`` gives it back), the data's content
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
def _json_bytes(obj: Any) -> bytes:
    return (json_text(obj, indent=2, sort_keys=True, nonfinite="repr") + "\n").encode("utf-8")


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
def git_commit() -> str | None:
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
            "pandas": pd.__version__, "hostname": socket.gethostname(), "git_commit": git_commit(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _not_started(d: Path) -> bool:
    """A run folder holding nothing the run computed: its job records (``seglib.runs.jobs``) and at most
    ``config.json`` and an empty ``checkpoints/``."""
    from seglib.runs.jobs import RECORDS

    for p in d.iterdir():
        if p.name == CHECKPOINTS and p.is_dir():
            if any(p.iterdir()):
                return False
        elif p.name not in (*RECORDS, "config.json"):
            return False
    return True


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
        if not (d / DONE).is_file() and _not_started(d):
            return "missing", "not started (only its job records)"
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
        atomic_write_bytes(d / "config.json", _json_bytes({
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
            atomic_write_bytes(d / name, data)
        # every file the run is read from afterwards, the best checkpoint (for ``seglib predict``) too
        kept = [*RESULT_FILES, *(f"{CHECKPOINTS}/{c}" for c in KEPT_CHECKPOINTS if (d / CHECKPOINTS / c).is_file())]
        files = {name: {"size": (d / name).stat().st_size, "sha256": _sha256(d / name)} for name in kept}
        atomic_write_bytes(d / DONE, _json_bytes({"files": files, "finished": provenance["ended"]}))
        last = d / CHECKPOINTS / "last.pt"
        if last.exists():
            last.unlink()

    def remove(self, spec: RunSpec) -> None:
        """Delete a run folder (``DONE`` first, so an interruption leaves it partial, not done)."""
        d = self.run_dir(spec)
        if (d / DONE).exists():
            (d / DONE).unlink()
        shutil.rmtree(d, ignore_errors=True)


