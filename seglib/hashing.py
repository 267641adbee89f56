"""Stable content hashes: same content, same hash, across processes and machines."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from enum import Enum
from pathlib import PurePath
from typing import Any


def canonical(obj: Any, nonfinite: str = "repr") -> Any:
    """Turn ``obj`` into plain JSON types with a deterministic order: the one JSON sanitiser.

    Dataclasses become dicts, tuples and lists become lists, sets become sorted
    lists, paths become POSIX strings, numpy/torch scalars and arrays their Python
    values, floats are kept exactly (``repr`` round trips). Non-finite floats become
    strings (``nonfinite="repr"``, for hashing: NaN ≠ None) or ``None``
    (``nonfinite="null"``, for result files read by people and JSON parsers). Dict keys
    are sorted on dump by :func:`canonical_json`.
    """
    if nonfinite not in ("repr", "null"):
        raise ValueError(f"nonfinite must be 'repr' or 'null', got {nonfinite!r}")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name), nonfinite) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): canonical(v, nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v, nonfinite) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(canonical(v, nonfinite) for v in obj)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, Enum):
        return canonical(obj.value, nonfinite)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return repr(obj) if nonfinite == "repr" else None
    if hasattr(obj, "tolist") and callable(obj.tolist) and getattr(obj, "ndim", 0) > 0:  # numpy / torch arrays
        return canonical(obj.tolist(), nonfinite)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return canonical(obj.item(), nonfinite)
    raise TypeError(f"Cannot hash a value of type {type(obj).__name__} (nor write it as JSON): {obj!r}")


def canonical_json(obj: Any) -> str:
    return json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON of ``obj``, first ``length`` hex digits."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()[:length]

