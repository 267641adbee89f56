"""On-disk cache of preprocessed arrays, so an epoch never re-reads NIfTI or TIFF.

``cached_arrays(key, build_fn, cache_dir)`` returns the arrays stored under
``cache_dir/<stable_hash(key)>.npz``, building and storing them on a miss; the key is completed
with the fingerprint of the library's training code, so changed preprocessing builds new arrays.
The key should hold everything the arrays depend on: the preprocessing
parameters and ``data_fingerprint`` of the source files (names, sizes and
content hashes; not modification times, so a copy of the data hits the same
cache). Writes are atomic (temporary file + ``os.replace``); an unreadable
cache file is rebuilt with a warning. NumPy's ``.npz`` does the storage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from seglib.data.case import Case
from seglib.hashing import stable_hash
from seglib.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

MiB = 1024 * 1024


def file_digest(path: Path, full_limit: int = 64 * MiB, chunk: int = 8 * MiB) -> str:
    """SHA-256 of the file's content, or for files over ``full_limit`` bytes of
    its first and last ``chunk`` bytes plus its size (fast on huge files)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= full_limit:
            for block in iter(lambda: f.read(MiB), b""):
                h.update(block)
        else:
            h.update(f.read(chunk))
            f.seek(size - chunk)
            h.update(f.read(chunk))
            h.update(str(size).encode())
    return h.hexdigest()


def data_fingerprint(paths: Iterable[Path], root: Path, full_limit: int = 64 * MiB, chunk: int = 8 * MiB) -> str:
    """Hash of (path relative to ``root``, size, content digest) of every file.

    Independent of where ``root`` lies and of file times; changes when a file
    is added, removed, renamed or changed. Files over ``full_limit`` bytes are
    hashed by their first and last ``chunk`` bytes and size.
    """
    root_abs, root_real = Path(os.path.abspath(root)), Path(root).resolve()
    rows = []
    for p in sorted({Path(os.path.abspath(p)) for p in paths}):
        # as named under the root (a dataset may be a folder of links to the files or cases), else as resolved
        for base, q in ((root_abs, p), (root_real, p.resolve())):
            if q.is_relative_to(base):
                rel = q.relative_to(base).as_posix()
                break
        else:
            raise ValueError(f"{p} is not under the data root {root_abs}.")
        rows.append([rel, p.stat().st_size, file_digest(p, full_limit, chunk)])
    return stable_hash(rows, length=32)


def case_files(cases: Iterable[Case]) -> list[Path]:
    """Every source file a list of cases was read from (NIfTI files, TIFF slices)."""
    files: set[Path] = set()
    for c in cases:
        for p in c.paths.values():
            if p is not None and Path(p).is_file():
                files.add(Path(p))
        for key in ("image_files", "mask_files"):
            files.update(Path(p) for p in c.meta.get(key, []))
    return sorted(files)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def cached_arrays(
    key: dict,
    build_fn: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | Path,
    *,
    compress: bool = False,
) -> dict[str, np.ndarray]:
    """Arrays for ``key`` from ``cache_dir``, built by ``build_fn()`` on a miss.

    ``build_fn`` returns a dict of name → array (no object arrays). The file is
    ``<stable_hash(key)>.npz`` with the key's canonical JSON beside it
    (``.json``) for provenance. A corrupt or truncated file is rebuilt with a
    warning. ``compress=True`` uses ``np.savez_compressed`` (smaller, slower).
    """
    from seglib.fingerprint import code_fingerprint

    cache_dir = Path(cache_dir)
    key = {**key, "code_fingerprint": code_fingerprint("train")}  # new preprocessing code, new arrays
    digest = stable_hash(key)
    path = cache_dir / f"{digest}.npz"
    if path.exists():
        try:
            arrays = _load(path)
            log.debug("cache hit %s", path)
            return arrays
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            log.warning("Cache file %s is unreadable (%s: %s); rebuilding it.", path, type(err).__name__, err)
    arrays = build_fn()
    if not isinstance(arrays, dict) or not all(isinstance(v, np.ndarray) for v in arrays.values()):
        raise TypeError(f"build_fn must return a dict of numpy arrays, got {type(arrays).__name__}.")
    for name, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"Array {name!r} has dtype object; the cache stores plain arrays only.")
    atomic_write(path, lambda f: (np.savez_compressed if compress else np.savez)(f, **arrays))
    atomic_write_json(cache_dir / f"{digest}.json", key, indent=1, sort_keys=True, nonfinite="repr")
    log.info("cached %s (%s)", path, ", ".join(f"{k}{tuple(v.shape)}" for k, v in arrays.items()))
    return arrays
