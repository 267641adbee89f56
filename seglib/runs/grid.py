"""Grid expansion: a base config times grids of dotted-key overrides times seeds.

Written by hand (the stdlib's ``itertools.product`` does the product; the dotted keys,
validation and labels are ours). Re-exported by :mod:`seglib.runs`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from seglib.hashing import canonical_json
from seglib.dotted import get_dotted, set_dotted

__all__ = ["expand_grid", "grid_axes", "cell_label", "axis_name"]


def expand_grid(base: dict[str, Any], grids: Sequence[dict[str, Sequence[Any]]],
                seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Cells of the union of the grids' cartesian products, times the seeds.

    Each grid maps dotted keys of ``base`` ("loss.name", "optim.lr") to lists of values;
    the product follows the grid's key order, the grids their list order, and seeds
    vary fastest (set at "train.seed"). No grid (``[]``) gives the base alone; no seeds
    (None or ``[]``) keeps the base's seed. Duplicate cells are dropped (first kept).
    Every cell is a deep copy of ``base`` with its overrides; an unknown key raises
    ``ValueError`` with a suggestion.
    """
    if not isinstance(base, dict):
        raise TypeError(f"base must be a nested dict, got {type(base).__name__}")
    cells: list[dict[str, Any]] = []
    seen: set[str] = set()
    for grid in grids or [{}]:
        if not isinstance(grid, dict):
            raise TypeError(f"each grid must be a dict of dotted key -> list of values, got {type(grid).__name__}")
        for key, values in grid.items():
            if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sequence):
                raise TypeError(f"grid values of {key!r} must be a list, got {values!r}")
            if len(values) == 0:
                raise ValueError(f"grid key {key!r} has no values")
            set_dotted(copy.deepcopy(base), key, None, base)  # validate the key before expanding
        for combo in itertools.product(*grid.values()):
            for seed in (seeds or [None]):
                cell = copy.deepcopy(base)
                for key, value in zip(grid, combo):
                    set_dotted(cell, key, value, base)
                if seed is not None:
                    set_dotted(cell, "train.seed", int(seed), base, create=True)
                tag = canonical_json(cell)
                if tag not in seen:
                    seen.add(tag)
                    cells.append(cell)
    return cells


def grid_axes(grids: Sequence[dict[str, Sequence[Any]]]) -> list[str]:
    """The dotted keys varied by ``grids``, in first-appearance order (for :func:`cell_label`)."""
    return list(dict.fromkeys(k for g in grids for k in g))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return canonical_json(v)
    return str(v)


def axis_name(dotted: str) -> str:
    """A grid axis's short name: its last dotted part ("loss.alpha" → "alpha"), or its parent when that part
    is "name" ("loss.name" → "loss")."""
    parts = dotted.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def cell_label(cell: dict[str, Any], axes: Sequence[str]) -> str:
    """A short label of ``cell`` along ``axes``: ``"loss=tversky, alpha=0.75"``.

    Each axis is named by its last dotted part ("loss.alpha" → "alpha"), or its parent
    when that part is "name" ("loss.name" → "loss"); names that would collide keep the
    full dotted key.
    """
    names = [axis_name(k) for k in axes]
    names = [k if names.count(n) > 1 else n for k, n in zip(axes, names)]
    return ", ".join(f"{n}={_fmt(get_dotted(cell, k))}" for n, k in zip(names, axes))
