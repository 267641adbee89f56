"""Study parameters: frozen dataclasses, one per concern, validated before anything runs.

A study's configuration is resolved in three layers, each merged key by key over
the one before::

    dataclass defaults  <-  params/<study>/<profile>.yaml  <-  the user's file / notebook / -p key=value

Every key is checked: an unknown key is an error with a "did you mean"
suggestion, a wrong type or an out-of-range value is an error naming the key,
the value and what is allowed. ``config_hash`` is a stable content hash of the
resolved configuration (same config, same hash, in any process on any machine).

Only the standard library and PyYAML are imported here, so validation is fast
and happens before papermill starts a kernel.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
from pathlib import Path
from typing import Literal

import yaml

from seglib.config.schema import *  # noqa: F401,F403
from seglib.config.schema import _rng  # noqa: F401
from seglib.config.validate import (  # noqa: F401 - re-exported: the config's public API
    ConfigError,
    _check_range,
    _coerce,
    as_dict,
    build_section,
    deep_merge,
    load_yaml,
    parse_assignment,
)
from seglib.registry import suggest

# --------------------------------------------------------------------------- locating and loading

def project_root(start: Path | None = None) -> Path | None:
    """The folder holding ``params/`` and ``notebooks/``: $SEGLIB_ROOT, else searched upwards."""
    env = os.environ.get("SEGLIB_ROOT")
    if env:
        return Path(env).resolve()
    candidates = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent]
    for c in candidates:
        for p in (c, *c.parents):
            if (p / "params").is_dir() and (p / "notebooks").is_dir():
                return p
    return None


def profile_path(study: str, profile: str) -> Path | None:
    root = project_root()
    if root is None:
        return None
    p = root / "params" / study / f"{profile}.yaml"
    return p if p.is_file() else None


def read_yaml(path) -> dict:
    """``yaml.safe_load`` of a parameter file, with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist.")
    try:
        data = load_yaml(path.read_text(), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (or holds only comments): expected a mapping of parameters, "
                          f"e.g. 'profile: quick' or 'train: {{epochs: 3}}'.")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level, got {type(data).__name__}.")
    return data


def resolve(study: str, params: dict | None = None, *, source: str = "parameters") -> StudyConfig:
    """Validate ``params`` (a nested dict) over the study's profile and return the frozen config.

    ``params["profile"]`` names the profile (default ``quick``) whose file
    ``params/<study>/<profile>.yaml`` is merged first. ``source`` names where
    ``params`` came from, for the error messages.
    """
    if study not in STUDIES:
        raise ConfigError(f"unknown study {study!r}.{suggest(study, STUDIES)} Studies: {', '.join(STUDIES)}.")
    params = dict(params or {})
    try:
        return _resolve(study, params)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _all_keys(study: str | None = None) -> dict[str, str]:
    """Every name a user may mean at the top level -> its dotted key: the top-level keys, every
    section's keys (``epochs`` -> ``train.epochs``) and the dotted keys themselves."""
    out = {k: k for k in TOP_KEYS}
    settings = [STUDY_SETTINGS[study]] if study else list(STUDY_SETTINGS.values())
    for sec, cls in [*SECTIONS.items(), *(("settings", c) for c in settings)]:
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, f"{sec}.{f.name}")
            out[f"{sec}.{f.name}"] = f"{sec}.{f.name}"
    return out


def suggest_key(key: str, study: str | None = None) -> str:
    """' Did you mean "train.epochs"?' for a top-level typo, searching every section's keys."""
    options = _all_keys(study)
    close = difflib.get_close_matches(str(key), list(options), n=1, cutoff=0.6)
    return f' Did you mean "{options[close[0]]}"?' if close else ""


def _check_top_keys(study: str, params: dict) -> None:
    for key in params:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown key '{key}'.{suggest_key(key, study)} Allowed top-level keys: "
                              f"{', '.join(TOP_KEYS)} (a section's key is written inside it, e.g. train: "
                              f"{{epochs: 3}} or -p train.epochs=3).")


SEED_RANGE = (0, 2**32)  # numpy's and torch's seeds: 0 <= s < 2**32


def _check_seeds(value) -> tuple[int, ...]:
    seeds = _coerce(value, tuple[int, ...], "seeds")
    if not seeds:
        raise ConfigError("seeds = []: expected at least one seed.")
    for i, s in enumerate(seeds):
        if not SEED_RANGE[0] <= s < SEED_RANGE[1]:
            raise ConfigError(f"seeds[{i}] = {s}: expected an integer in [0, 2**32) = [0, {SEED_RANGE[1]}).")
    return seeds


def check_partial(study: str, params: dict) -> None:
    """Check the keys and values in ``params`` (part of a configuration: one file, one ``-p``) on their own,
    so that an error names where the bad value was written. Checks across keys wait for :func:`resolve`."""
    _check_top_keys(study, params)
    if "profile" in params:
        _coerce(params["profile"], Literal[PROFILES], "profile")
    for name, cls in [*SECTIONS.items(), ("settings", STUDY_SETTINGS[study])]:
        if params.get(name) is not None:
            build_section(cls, params[name], name)
    if "seeds" in params:
        _check_seeds(params["seeds"])
    if params.get("grid"):
        sections = {name: cls() for name, cls in SECTIONS.items()}
        _check_grid(params["grid"], sections)


def _resolve(study: str, params: dict) -> StudyConfig:
    _check_top_keys(study, params)
    profile = _coerce(params.get("profile", "quick"), Literal[PROFILES], "profile")
    base: dict = {}
    pfile = profile_path(study, profile)
    if pfile is not None:
        base = read_yaml(pfile)
        base.pop("profile", None)
    merged = deep_merge(base, {k: v for k, v in params.items() if k != "profile"})

    sections = {name: build_section(cls, merged.get(name) or {}, name) for name, cls in SECTIONS.items()}
    settings = build_section(STUDY_SETTINGS[study], merged.get("settings") or {}, "settings")
    seeds = _check_seeds(merged.get("seeds", [0]))
    grid = _check_grid(merged.get("grid") or [], sections)
    cfg = StudyConfig(study=study, profile=profile, grid=grid, seeds=seeds, settings=settings, **sections)
    _check_consistency(cfg)
    _check_settings(cfg)
    try:
        _check_cell(cfg.study, {name: getattr(cfg, name) for name in SECTIONS})
        base_error = None
    except ConfigError as e:
        base_error = str(e)
    for where, cell in _grid_cells(cfg):
        try:
            _check_cell(cfg.study, cell)
        except ConfigError as e:  # name the grid cell only when the grid's values make the error
            raise ConfigError(str(e) if str(e) == base_error else f"{where}{e}") from None
    return cfg


def _grid_cells(cfg: StudyConfig):
    """(where, sections) of every configuration the grid makes (the base alone without a grid)."""
    base = {name: getattr(cfg, name) for name in SECTIONS}
    if not cfg.grid:
        yield "", base
        return
    for i, block in enumerate(cfg.grid):
        keys = list(block)
        for combo in itertools.product(*block.values()):
            cell = dict(base)
            for dotted, value in zip(keys, combo):
                sec, _, key = dotted.partition(".")
                cell[sec] = dataclasses.replace(cell[sec], **{key: _coerce(value, _hint(sec, key), dotted)})
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, combo))
            yield f"grid[{i}] ({label}): ", cell


def _hint(sec: str, key: str):
    import typing

    return typing.get_type_hints(SECTIONS[sec])[key]


def monitor_options() -> tuple[str, ...]:
    """What ``fit`` measures each epoch and may monitor: ``train_loss``, ``val_loss`` and ``val_<metric>``
    for each key of the training metric (the default metric, :class:`seglib.train.settings.PooledDice`)."""
    from seglib.train.settings import PooledDice

    metric = PooledDice()
    keys = metric.reduce([{"tp": 1.0, "fp": 0.0, "fn": 0.0}])
    return ("train_loss", "val_loss", *(f"val_{k}" for k in keys))


def check_device(name: str, where: str = "train.device") -> None:
    """``auto`` and ``cpu`` always work; any other device must be well-formed and present on this machine."""
    key = str(name).strip().lower()
    if key in ("auto", "cpu"):
        return
    from seglib.train.device import resolve_device

    try:
        resolve_device(name)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ConfigError(f"{where} = {name!r}: {e}") from None


def _check_cell(study: str, cell: dict) -> None:
    """Checks of one configuration (the base, or one cell of the grid) that need more than one key."""
    d, m, t = cell["data"], cell["model"], cell["train"]
    if d.patch_size is not None and d.patch_size > d.size:
        raise ConfigError(f"data.patch_size = {d.patch_size}: cannot be larger than data.size = {d.size}.")
    if m.name == "unetpp" and len(m.features) != 5:
        raise ConfigError(f"model.features = {list(m.features)}: model 'unetpp' (MONAI BasicUNetPlusPlus) needs "
                          f"exactly 5 widths, one per level.")
    if len(m.features) < 2:
        raise ConfigError(f"model.features = {list(m.features)}: expected at least 2 positive widths (one per "
                          f"level, e.g. [8, 16, 32, 64]).")
    if d.channels is not None:
        from seglib.data import CHANNELS

        offered = CHANNELS[d.dataset]
        if not d.channels:
            raise ConfigError(f"data.channels = []: expected at least one of {d.dataset}'s channels: "
                              f"{', '.join(offered)} (or null for the default).")
        for c in d.channels:
            if c.lower() not in offered:
                raise ConfigError(f"data.channels = {list(d.channels)}: dataset {d.dataset!r} has no channel "
                                  f"{c!r}.{suggest(c.lower(), offered)} Its channels: {', '.join(offered)}.")
        if len({c.lower() for c in d.channels}) != len(d.channels):
            raise ConfigError(f"data.channels = {list(d.channels)}: a channel is listed twice.")
    options = monitor_options()
    if t.monitor not in options:
        raise ConfigError(f"train.monitor = {t.monitor!r}: training does not measure it.{suggest(t.monitor, options)} "
                          f"Measured each epoch: {', '.join(options)}.")
    check_device(t.device)


def _check_settings(cfg: StudyConfig) -> None:
    s = cfg.settings
    if isinstance(s, StrokeSettings):
        if len(s.memory_features) < 2:
            raise ConfigError(f"settings.memory_features = {list(s.memory_features)}: expected at least 2 "
                              f"positive widths (one per level).")
        if not s.memory_sizes:
            raise ConfigError("settings.memory_sizes = []: expected at least one input size.")
        if not s.sampler_thresholds:
            raise ConfigError("settings.sampler_thresholds = []: expected at least one threshold.")


def _check_grid(grid, sections) -> tuple[dict, ...]:
    """Each grid block maps dotted keys to value lists; every value is validated like the key itself."""
    if isinstance(grid, dict):
        grid = [grid]
    if not isinstance(grid, list):
        raise ConfigError(f"grid = {grid!r}: expected a list of mappings from 'section.key' to a list of values.")
    out = []
    for i, block in enumerate(grid):
        if not isinstance(block, dict):
            raise ConfigError(f"grid[{i}] = {block!r}: expected a mapping from 'section.key' to a list of values.")
        clean = {}
        for dotted, values in block.items():
            where = f"grid[{i}].{dotted}"
            sec, _, key = str(dotted).partition(".")
            if sec not in SECTIONS:
                raise ConfigError(f"{where}: unknown section {sec!r}.{suggest(sec, SECTIONS)} "
                                  f"Grid keys look like 'loss.name'; sections: {', '.join(SECTIONS)}.")
            cls = SECTIONS[sec]
            names = [f.name for f in dataclasses.fields(cls)]
            if key not in names:
                raise ConfigError(f"{where}: unknown key '{sec}.{key}'.{suggest(key, names)} "
                                  f"Allowed keys in '{sec}': {', '.join(sorted(names))}.")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where} = {values!r}: expected a non-empty list of values.")
            checked = []
            for v in values:
                section = build_section(cls, {key: v}, where.rsplit(".", 1)[0])
                checked.append(as_dict(getattr(section, key)))
            clean[str(dotted)] = checked
        out.append(clean)
    return tuple(out)


def _check_consistency(cfg: StudyConfig) -> None:
    d = cfg.data
    if cfg.profile == "full" and not d.data_dir:
        raise ConfigError(
            f"profile 'full' of study '{cfg.study}' needs data.data_dir, the root of the real dataset, and none was "
            f"given. {DOWNLOAD_HELP[d.dataset]}. Then run: seglib run {cfg.study} --params params/{cfg.study}/full.yaml "
            f"--data-dir /path/to/it")
    if d.data_dir and not Path(d.data_dir).expanduser().exists():
        raise ConfigError(f"data.data_dir = {d.data_dir!r}: no such folder. {DOWNLOAD_HELP[d.dataset]}.")
    expected = {"stroke": ("isles22", "atlas2"), "prostate": ("prostatex",), "brain": ("lgg",)}[cfg.study]
    if d.dataset not in expected:
        raise ConfigError(f"data.dataset = {d.dataset!r}: study '{cfg.study}' reads {' or '.join(expected)}.")
    dims = 3 if cfg.study == "stroke" else 2
    if cfg.model.spatial_dims != dims:
        raise ConfigError(f"model.spatial_dims = {cfg.model.spatial_dims}: study '{cfg.study}' is {dims}D.")
    if cfg.loss.alpha is not None and cfg.loss.beta is not None and cfg.loss.alpha + cfg.loss.beta <= 0:
        raise ConfigError("loss.alpha + loss.beta must be positive.")


def load(study: str, params_file=None, overrides: list[str] | dict | None = None,
         data_dir: str | None = None) -> StudyConfig:
    """Load a parameter file (and ``-p key=value`` overrides, and ``--data-dir``) into a validated config."""
    if study not in STUDIES:
        raise ConfigError(f"unknown study {study!r}.{suggest(study, STUDIES)} Studies: {', '.join(STUDIES)}.")
    params: dict = read_yaml(params_file) if params_file else {}
    source = str(params_file) if params_file else "parameters"
    try:
        check_partial(study, params)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    assigned: list[tuple[str, dict]] = []
    if isinstance(overrides, dict):
        params = deep_merge(params, overrides)
    else:
        for text in overrides or []:
            try:
                one = parse_assignment(text)
                check_partial(study, one)
            except yaml.YAMLError as e:
                raise ConfigError(f"-p {text}: the value is not valid YAML: {e}") from None
            except ConfigError as e:
                msg = str(e)
                raise ConfigError(msg if msg.startswith("-p ") else f"-p {text}: {msg}") from None
            assigned.append((text, one))
            params = deep_merge(params, one)
    if data_dir is not None:
        params = deep_merge(params, {"data": {"data_dir": str(data_dir)}})
    try:
        cfg = resolve(study, params, source=source)
    except ConfigError as e:
        raise _blame_override(study, params_file, assigned, data_dir, e) from None
    _check_swept_overrides(cfg, assigned)
    return cfg


def _blame_override(study, params_file, assigned, data_dir, error: ConfigError) -> ConfigError:
    """``error`` named after the ``-p`` that causes it: the one without which the error goes away."""
    prefix = f"{params_file}: " if params_file else "parameters: "
    message = str(error)[len(prefix):] if str(error).startswith(prefix) else str(error)
    for i, (text, _) in enumerate(assigned):
        params: dict = read_yaml(params_file) if params_file else {}
        for j, (_, one) in enumerate(assigned):
            if j != i:
                params = deep_merge(params, one)
        if data_dir is not None:
            params = deep_merge(params, {"data": {"data_dir": str(data_dir)}})
        try:
            resolve(study, params, source="")
        except ConfigError as e:
            if str(e).endswith(message):
                continue
        return ConfigError(f"-p {text}: {message}")
    return error


def _dotted(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and k in (*SECTIONS, "settings"):
            out.extend(_dotted(v, f"{k}."))
        elif prefix:
            out.append(prefix + str(k))
    return out


def _yaml_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


def _check_swept_overrides(cfg: StudyConfig, assigned: list[tuple[str, dict]]) -> None:
    """A ``-p section.key=value`` for a key every block of the grid sweeps would be replaced in every run
    (it would change nothing): an error saying how to change the grid instead."""
    for text, one in assigned:
        for dotted in _dotted(one):
            blocks = [i for i, b in enumerate(cfg.grid) if dotted in b]
            if not blocks or len(blocks) < len(cfg.grid):  # a block that does not sweep it uses the value
                continue
            sec, _, key = dotted.partition(".")
            value = as_dict(getattr(getattr(cfg, sec), key))
            new = []
            for b in cfg.grid:
                b = {k: ([value] if k == dotted else v) for k, v in b.items()}
                new.append("{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in b.items()) + "}")
            swept = _yaml_value(cfg.grid[blocks[0]][dotted])
            raise ConfigError(
                f"-p {text}: the grid of study '{cfg.study}' sweeps {dotted} (grid[{blocks[0]}]: {swept}), so this "
                f"value would be replaced in every run; change the grid instead, e.g. "
                f"-p \"grid=[{', '.join(new)}]\"")




def from_dict(study: str, d: dict) -> StudyConfig:
    """Inverse of ``StudyConfig.to_dict`` (validates again)."""
    d = {k: v for k, v in d.items() if k in TOP_KEYS}
    return resolve(study, d)
