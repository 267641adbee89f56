"""Plain-dict registries with a "did you mean" error (as MONAI's ``look_up_option``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def suggest(name: str, options: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""


def look_up(name: str, registry: Mapping[str, T], what: str) -> T:
    """Return ``registry[name]`` or raise ``ValueError`` listing the options.

    >>> look_up("dice", {"dice": 1}, "loss")
    1
    """
    if name in registry:
        return registry[name]
    options = ", ".join(sorted(registry))
    raise ValueError(f"Unknown {what} {name!r}.{suggest(name, registry)} Options: {options}.")


def check_kwargs(kwargs: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    """Raise ``TypeError`` naming any keyword not in ``allowed``, with a suggestion."""
    allowed = list(allowed)
    for key in kwargs:
        if key not in allowed:
            raise TypeError(
                f"Unknown parameter {key!r} for {what}.{suggest(key, allowed)} "
                f"Allowed: {', '.join(sorted(allowed)) or '(none)'}."
            )


def parameters(cls) -> list[str]:
    """Names of the keyword parameters of ``cls.__init__`` (what a registry entry accepts)."""
    import inspect

    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def build(registry: Mapping[str, Any], name: str, params: Mapping[str, Any], what: str):
    """``registry[name](**params)`` after checking the name and every parameter (did-you-mean errors)."""
    cls = look_up(name, registry, what)
    check_kwargs(params, parameters(cls), f"{what} {name!r}")
    return cls(**params)
