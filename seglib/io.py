"""Files written so that a reader never sees half of one: a temporary file beside the target, fsync, then
``os.replace`` (atomic on POSIX file systems). The one atomic writer of the library (bytes, JSON, torch).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seglib.hashing import canonical


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (a unique name, so concurrent writers of one
    path never share it), fsync, then ``os.replace`` it into place. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def json_text(obj: Any, *, indent: int | None = 1, sort_keys: bool = False, nonfinite: str = "null") -> str:
    """``obj`` as JSON through :func:`seglib.hashing.canonical` (numpy scalars, paths, dataclasses; NaN as
    ``null`` unless ``nonfinite="repr"``)."""
    return json.dumps(canonical(obj, nonfinite), indent=indent, sort_keys=sort_keys)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      nonfinite: str = "null", newline: bool = False) -> Path:
    """Write ``obj`` as JSON (:func:`json_text`) to ``path`` atomically."""
    text = json_text(obj, indent=indent, sort_keys=sort_keys, nonfinite=nonfinite) + ("\n" if newline else "")
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
