"""Stable content hashes: same content, same hash, across processes and machines."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from enum import Enum
from pathlib import PurePath
from typing import Any


def canonical(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON types with a deterministic order.

    Dataclasses become dicts, tuples and lists become lists, sets become sorted
    lists, paths become POSIX strings, floats are kept exactly (``repr`` round
    trips) and non-finite floats become strings. Dict keys are sorted on dump.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(canonical(v) for v in obj)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, Enum):
        return canonical(obj.value)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return canonical(obj.item())
    raise TypeError(f"Cannot hash a value of type {type(obj).__name__}: {obj!r}")


def canonical_json(obj: Any) -> str:
    return json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON of ``obj``, first ``length`` hex digits."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()[:length]

