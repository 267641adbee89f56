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
import os
from pathlib import Path
from typing import Literal

import yaml

from seglib.config.checks import (
    _check_cell,
    _check_consistency,
    _check_executor,
    _check_grid,
    _check_seeds,
    _check_settings,
    _check_swept_overrides,
    _grid_cells,
    base_cell,
)
from seglib.config.schema import (
    PROFILES,
    SECTIONS,
    STUDIES,
    STUDY_SETTINGS,
    TOP_KEYS,
    ExecutorConfig,
    StudyConfig,
)
from seglib.config.validate import (
    ConfigError,
    _coerce,
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
        return _resolve(study, params, source)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _all_keys(study: str | None = None) -> dict[str, str]:
    """Every name a user may mean at the top level -> its dotted key: the top-level keys, every
    section's keys (``epochs`` -> ``train.epochs``) and the dotted keys themselves."""
    out = {k: k for k in TOP_KEYS}
    settings = [STUDY_SETTINGS[study]] if study else list(STUDY_SETTINGS.values())
    for sec, cls in [*SECTIONS.items(), ("executor", ExecutorConfig), *(("settings", c) for c in settings)]:
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






def check_partial(study: str, params: dict) -> None:
    """Check the keys and values in ``params`` (part of a configuration: one file, one ``-p``) on their own,
    so that an error names where the bad value was written. Checks across keys wait for :func:`resolve`."""
    _check_top_keys(study, params)
    if "profile" in params:
        _coerce(params["profile"], Literal[PROFILES], "profile")
    for name, cls in [*SECTIONS.items(), ("settings", STUDY_SETTINGS[study]), ("executor", ExecutorConfig)]:
        if params.get(name) is not None:
            build_section(cls, params[name], name)
    if "seeds" in params:
        _check_seeds(params["seeds"])
    if params.get("grid"):
        sections = {name: cls() for name, cls in SECTIONS.items()}
        _check_grid(params["grid"], sections)


def _resolve(study: str, params: dict, source: str = "parameters") -> StudyConfig:
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
    executor = build_section(ExecutorConfig, merged.get("executor") or {}, "executor")
    cfg = StudyConfig(study=study, profile=profile, grid=grid, seeds=seeds, settings=settings, executor=executor,
                      **sections)
    _check_consistency(cfg, source)
    _check_executor(cfg.executor)
    _check_settings(cfg)
    try:
        _check_cell(cfg.study, base_cell(cfg))
        base_error = None
    except ConfigError as e:
        base_error = str(e)
    for where, cell in _grid_cells(cfg):
        try:
            _check_cell(cfg.study, cell)
        except ConfigError as e:  # name the grid cell only when the grid's values make the error
            raise ConfigError(str(e) if str(e) == base_error else f"{where}{e}") from None
    if all(cell.data.refit for _, cell in _grid_cells(cfg)):
        raise ConfigError("data.refit = true in every run: no run validates on patients it did not train on, so the "
                          "tables would have nothing to show; sweep it instead (grid: [{data.refit: [false, true]}]).")
    return cfg


















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










def from_dict(study: str, d: dict) -> StudyConfig:
    """Inverse of ``StudyConfig.to_dict`` (validates again)."""
    d = {k: v for k, v in d.items() if k in TOP_KEYS}
    return resolve(study, d)
