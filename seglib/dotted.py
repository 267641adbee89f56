"""Dotted keys (``"loss.name"``) into nested dicts: read, write and list them, for the grid, the ``-p`` overrides
and the tables of a grid's results. Written by hand (a few lines; no library offers just this)."""

from __future__ import annotations

import copy
from typing import Any

from seglib.registry import suggest

__all__ = ["dotted_keys", "get_dotted", "leaves", "nested", "set_dotted"]


def dotted_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key of the nested dict ``d``, dotted, parents before children."""
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out.extend(dotted_keys(v, prefix + k + "."))
    return out


def leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of every value of the nested dict ``d`` that is not itself a dict."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(leaves(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def get_dotted(cell: dict[str, Any], dotted: str) -> Any:
    """``cell["a"]["b"]`` for ``"a.b"``; ``ValueError`` with a suggestion for a key not in ``cell``."""
    node: Any = cell
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"Unknown key {dotted!r} in the cell.{suggest(dotted, dotted_keys(cell))}")
        node = node[part]
    return node


def set_dotted(cfg: dict[str, Any], dotted: str, value: Any, base: dict[str, Any], create: bool = False) -> None:
    """Set ``cfg[...]`` at ``dotted`` to a copy of ``value``; the key must exist in ``base`` unless ``create``."""
    parts = dotted.split(".")
    node = cfg
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if not isinstance(node, dict) or (part not in node and not create):
            raise ValueError(f"Unknown grid key {dotted!r}: not in the base config."
                             f"{suggest(dotted, dotted_keys(base))}")
        if last:
            node[part] = copy.deepcopy(value)
        else:
            node = node.setdefault(part, {})


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """``"train.epochs", 3`` → ``{"train": {"epochs": 3}}``."""
    out: dict[str, Any] = {}
    set_dotted(out, dotted.strip(), value, out, create=True)
    return out
