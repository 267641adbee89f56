"""Validation of parameter values against frozen-dataclass annotations (used by :mod:`seglib.config`).

Supports the annotations the config uses: ``int``, ``float``, ``str``, ``bool``,
``Optional[...]``, ``Literal[...]`` and ``tuple[X, ...]``; ranges come from a
field's ``metadata["range"] = (lo, hi, lo_open, hi_open)``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Literal, Union

import yaml

from seglib.dotted import nested
from seglib.registry import suggest


class ConfigError(ValueError):
    """A parameter is unknown, of the wrong type or out of range. The message names it."""


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


class ParamLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for parameter files and ``-p`` values, with two changes.

    * A duplicate key in a mapping is an error naming the key and its line (PyYAML keeps the last one
      silently).
    * Only ``true``/``false`` are booleans (YAML 1.2); ``on``/``off``/``yes``/``no`` stay the strings
      written, so ``channels_last: off`` means ``"off"``. A boolean field accepts them (see ``_coerce``).
    """

    source = "parameters"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue
                if key in seen:
                    raise ConfigError(
                        f"{self.source}: duplicate key {key!r} on line {key_node.start_mark.line + 1} (first on line "
                        f"{seen[key] + 1}); a key may appear once in a mapping.")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


ParamLoader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:bool"]
                                       for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ParamLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str, source: str = "parameters"):
    """Parse ``text`` with :class:`ParamLoader`; duplicate keys raise ConfigError naming ``source``."""
    loader = type("Loader", (ParamLoader,), {"source": source})
    return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, getattr(types, "UnionType", Union)):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value, tp, where: str):
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (Union, getattr(types, "UnionType", Union)):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{where} = {value!r}: expected {_type_name(tp)}.")
    if origin is Literal:
        allowed = typing.get_args(tp)
        for a in allowed:
            if value == a and type(value) is type(a):
                return a
            if isinstance(a, str) and str(value) == a and not isinstance(value, (bool, float)):
                return a
        if isinstance(value, bool):  # YAML 1.1 (or a notebook) turned on/off, yes/no into a boolean
            words = [a for a in allowed if isinstance(a, str) and _BOOL_WORDS.get(a.lower()) is value]
            if len(words) == 1:
                return words[0]
        raise ConfigError(f"{where} = {value!r}: expected {_type_name(tp)}.{suggest(str(value), map(str, allowed))}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: expected {_type_name(tp)} (a YAML list).")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise ConfigError(f"{where} = {value!r} ({type(value).__name__}): expected true or false.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} = {value!r} ({type(value).__name__}): expected an integer.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} = {value!r} ({type(value).__name__}): expected a number.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r} ({type(value).__name__}): expected a string.")
    raise TypeError(f"internal: unsupported annotation {tp!r} for {where}")


def _check_range(value, meta, where):
    if "range" not in meta or value is None:
        return
    lo, hi, lo_open, hi_open = meta["range"]
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        bad = (lo is not None and (v < lo or (lo_open and v == lo))) or (
            hi is not None and (v > hi or (hi_open and v == hi)))
        if bad:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            lo_s = "-inf" if lo is None else lo
            hi_s = "inf" if hi is None else hi
            shown = list(value) if isinstance(value, tuple) else value
            raise ConfigError(f"{where} = {shown!r}: expected a value in {left}{lo_s}, {hi_s}{right}.")


def build_section(cls, values: dict, where: str):
    """Build the frozen dataclass ``cls`` from ``values`` (a dict), validating every key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} = {values!r}: expected a mapping of keys to values.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    from seglib.config.schema import REMOVED_KEYS

    for key in values:
        if f"{where}.{key}" in REMOVED_KEYS:
            raise ConfigError(f"'{where}.{key}' was removed: {REMOVED_KEYS[f'{where}.{key}']}. Delete it from "
                              f"the parameters.")
        if key not in fields:
            raise ConfigError(
                f"unknown key '{where}.{key}'.{suggest(key, fields)} Allowed keys in '{where}': "
                f"{', '.join(sorted(fields))}.")
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            continue
        v = _coerce(values[name], hints[name], f"{where}.{name}")
        _check_range(v, f.metadata, f"{where}.{name}")
        kwargs[name] = v
    return cls(**kwargs)


def as_dict(obj) -> dict:
    """Nested plain dict (tuples kept as lists) of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``, recursively for nested mappings."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_assignment(text: str) -> dict:
    """``"train.epochs=3"`` -> ``{"train": {"epochs": 3}}`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"-p {text!r}: expected key=value, e.g. -p train.epochs=3")
    key, raw = text.split("=", 1)
    value = load_yaml(raw, f"-p {text}") if raw.strip() else None
    return nested(key, value)
