"""The checks of a resolved configuration that one key alone cannot make: seeds, the grid and each of its
cells (monitored metric, device, widths, channels), the study's settings, consistency across sections and
``-p`` overrides of keys that the grid sweeps."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from seglib.config.cell import RunConfig
from seglib.config.schema import DOWNLOAD_HELP, SECTIONS, STUDY_DATA_OPTIONS, StrokeSettings, StudyConfig
from seglib.config.validate import (
    ConfigError,
    _coerce,
    as_dict,
    build_section,
)
from seglib.registry import suggest

SEED_RANGE = (0, 2**32)  # numpy's and torch's seeds: 0 <= s < 2**32


def _check_seeds(value) -> tuple[int, ...]:
    seeds = _coerce(value, tuple[int, ...], "seeds")
    if not seeds:
        raise ConfigError("seeds = []: expected at least one seed.")
    for i, s in enumerate(seeds):
        if not SEED_RANGE[0] <= s < SEED_RANGE[1]:
            raise ConfigError(f"seeds[{i}] = {s}: expected an integer in [0, 2**32) = [0, {SEED_RANGE[1]}).")
    return seeds


def base_cell(cfg: StudyConfig) -> RunConfig:
    """The typed cell of the configuration without its grid (seed 0)."""
    return RunConfig(**{name: getattr(cfg, name) for name in SECTIONS})


def _grid_cells(cfg: StudyConfig):
    """(where, typed cell) of every configuration the grid makes (the base alone without a grid)."""
    base = base_cell(cfg)
    if not cfg.grid:
        yield "", base
        return
    for i, block in enumerate(cfg.grid):
        keys = list(block)
        for combo in itertools.product(*block.values()):
            cell = base
            for dotted, value in zip(keys, combo):
                sec, _, key = dotted.partition(".")
                section = dataclasses.replace(getattr(cell, sec), **{key: _coerce(value, _hint(sec, key), dotted)})
                cell = dataclasses.replace(cell, **{sec: section})
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, combo))
            yield f"grid[{i}] ({label}): ", cell


def _hint(sec: str, key: str):
    import typing

    return typing.get_type_hints(SECTIONS[sec])[key]


#: the keys of the training metric ``fit`` reports per epoch (the default,
#: :class:`seglib.eval.metrics.PooledDice`; a test keeps the two equal). Written out so that validation
#: imports no torch: ``seglib check`` stays fast.
TRAINING_METRIC_KEYS = ("dice",)


def monitor_options() -> tuple[str, ...]:
    """What ``fit`` measures each epoch and may monitor: ``train_loss``, ``val_loss`` and ``val_<metric>``
    for each key of the training metric."""
    return ("train_loss", "val_loss", *(f"val_{k}" for k in TRAINING_METRIC_KEYS))


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


def _check_cell(study: str, cell: RunConfig) -> None:
    """Checks of one configuration (the base, or one cell of the grid) that need more than one key."""
    d, m, t = cell.data, cell.model, cell.train
    if d.patch_size is not None and d.patch_size > d.size:
        raise ConfigError(f"data.patch_size = {d.patch_size}: cannot be larger than data.size = {d.size}.")
    for key, (offered, why) in STUDY_DATA_OPTIONS[study].items():
        if getattr(d, key) not in offered:
            raise ConfigError(f"data.{key} = {getattr(d, key)!r}: study '{study}' {why}; allowed: "
                              f"{', '.join(repr(v) for v in offered)}.")
    if study == "stroke" and (t.tta != "none" or t.postprocess != "none"):
        raise ConfigError(f"train.tta = {t.tta!r}, train.postprocess = {t.postprocess!r}: study 'stroke' evaluates "
                          f"with its sliding window as published; test-time flips and post-processing are options "
                          f"of the 2D studies (prostate, brain); allowed here: 'none'.")
    if d.refit and d.split != "patient":
        raise ConfigError(f"data.refit = true: it trains on every patient, with data.split = 'patient' only (got "
                          f"{d.split!r}).")
    if d.refit and t.monitor != "train_loss":
        raise ConfigError(f"data.refit = true: the run trains on its validation patients, so train.monitor = "
                          f"{t.monitor!r} would choose its epoch on patients it has seen; use train.monitor: "
                          f"train_loss (train.mode: min).")
    if d.augment_intensity and not d.augment:
        raise ConfigError("data.augment_intensity = true: it adds to the study's augmentation; set data.augment: true "
                          "too.")
    if d.folds is not None and d.fold >= d.folds:
        raise ConfigError(f"data.fold = {d.fold}: expected 0 to {d.folds - 1} for data.folds = {d.folds}.")
    if d.folds is None and d.fold:
        raise ConfigError(f"data.fold = {d.fold}: set data.folds too (the number of cross-validation folds).")
    if m.name == "unetpp" and len(m.features) != 5:
        raise ConfigError(f"model.features = {list(m.features)}: model 'unetpp' (MONAI BasicUNetPlusPlus) needs "
                          f"exactly 5 widths, one per level.")
    if len(m.features) < 2:
        raise ConfigError(f"model.features = {list(m.features)}: expected at least 2 positive widths (one per "
                          f"level, e.g. [8, 16, 32, 64]).")
    _check_foreground(d)
    if d.channels is not None:
        offered = _offered_channels(d)
        if not d.channels:
            raise ConfigError(f"data.channels = []: expected at least one of {d.dataset}'s channels: "
                              f"{', '.join(offered)} (or null for the default).")
        for c in d.channels:
            if c.lower() not in offered:
                raise ConfigError(f"data.channels = {list(d.channels)}: dataset {d.dataset!r} has no channel "
                                  f"{c!r}.{suggest(c.lower(), offered)} Its channels: {', '.join(offered)}.")
        if len({c.lower() for c in d.channels}) != len(d.channels):
            raise ConfigError(f"data.channels = {list(d.channels)}: a channel is listed twice.")
    o = cell.optim
    if o.schedule != "constant" and o.warmup_epochs >= t.epochs:
        raise ConfigError(f"optim.warmup_epochs = {o.warmup_epochs}: must be fewer than train.epochs = {t.epochs} "
                          f"for optim.schedule = {o.schedule!r} (the warm-up ends before the schedule starts).")
    options = monitor_options()
    if t.monitor not in options:
        raise ConfigError(f"train.monitor = {t.monitor!r}: training does not measure it.{suggest(t.monitor, options)} "
                          f"Measured each epoch: {', '.join(options)}.")
    check_device(t.device)


def _offered_channels(d) -> tuple[str, ...]:
    """The channels of ``d.dataset``; nnunet: from the ``dataset.json`` under ``d.data_dir`` (the phantom's without)."""
    from seglib.data.channels import channels_offered

    try:
        return channels_offered(d.dataset, d.data_dir)
    except ValueError as e:
        raise ConfigError(f"data.data_dir = {d.data_dir!r}: {e}") from None


def _check_foreground(d) -> None:
    """``data.foreground`` names a non-zero label of the nnunet dataset (its dataset.json, or the phantom's labels)."""
    if d.foreground is None:
        return
    if d.dataset != "nnunet":
        raise ConfigError(f"data.foreground = {d.foreground!r}: only data.dataset 'nnunet' has labels to choose "
                          f"from, not {d.dataset!r}; leave it out (null).")
    from seglib.data.channels import NNUNET_PHANTOM_LABELS
    from seglib.data.readers.nnunet import NnunetDataset, read_dataset_json

    try:
        ds = (read_dataset_json(d.data_dir) if d.data_dir else
              NnunetDataset(Path("<phantom>"), (), dict(NNUNET_PHANTOM_LABELS), ".nii.gz"))
        ds.foreground_values(d.foreground)
    except ValueError as e:
        raise ConfigError(str(e)) from None


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


def _check_consistency(cfg: StudyConfig, source: str = "parameters") -> None:
    """Checks across sections; ``source`` is the parameter file read (or "parameters"), named in the advice."""
    d = cfg.data
    if cfg.profile == "full" and not d.data_dir:
        params = source if source.endswith((".yaml", ".yml")) else f"params/{cfg.study}/full.yaml"
        raise ConfigError(
            f"profile 'full' of study '{cfg.study}' needs data.data_dir, the root of the real dataset, and none was "
            f"given. {DOWNLOAD_HELP[d.dataset]}. Then run: seglib run {cfg.study} --params {params} "
            f"--data-dir /path/to/it")
    if d.data_dir and not Path(d.data_dir).expanduser().exists():
        raise ConfigError(f"data.data_dir = {d.data_dir!r}: no such folder. {DOWNLOAD_HELP[d.dataset]}.")
    # nnunet: any dataset in the nnU-Net raw layout, for every study (3D for stroke, cut into slices for the others)
    expected = {"stroke": ("isles22", "atlas2", "nnunet"), "prostate": ("prostatex", "nnunet"),
                "brain": ("lgg", "nnunet")}[cfg.study]
    if d.dataset not in expected:
        raise ConfigError(f"data.dataset = {d.dataset!r}: study '{cfg.study}' reads {' or '.join(expected)}.")
    dims = 3 if cfg.study == "stroke" else 2
    if cfg.model.spatial_dims != dims:
        raise ConfigError(f"model.spatial_dims = {cfg.model.spatial_dims}: study '{cfg.study}' is {dims}D.")
    if cfg.loss.alpha is not None and cfg.loss.beta is not None and cfg.loss.alpha + cfg.loss.beta <= 0:
        raise ConfigError("loss.alpha + loss.beta must be positive.")


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


def _check_executor(ex) -> None:
    """The executor's keys that depend on each other: a scheduler address is ``tcp://host:port`` and only
    for ``dask``; ``gpus`` and ``workers`` size a LocalCluster, so they go without a scheduler."""
    import re

    if ex.scheduler is not None:
        if ex.name != "dask":
            raise ConfigError(f"executor.scheduler = {ex.scheduler!r} is for executor.name 'dask', "
                              f"not {ex.name!r}.")
        if not re.fullmatch(r"(tcp|tls|inproc|ws|wss)://[^\s/:]+(:\d+)?/?", ex.scheduler):
            raise ConfigError(f"executor.scheduler = {ex.scheduler!r}: expected a Dask scheduler address "
                              f"such as 'tcp://host:8786'.")
        if ex.workers is not None or ex.gpus is not None:
            raise ConfigError("executor.workers and executor.gpus size a LocalCluster; with executor.scheduler "
                              f"= {ex.scheduler!r} the cluster's own workers are used: leave them out.")
    if ex.gpus is not None:
        if not ex.gpus or any(not str(g).strip() for g in ex.gpus):
            raise ConfigError(f"executor.gpus = {list(ex.gpus)!r}: expected a non-empty list of GPU ids, "
                              f"e.g. ['0', '1'].")
        if ex.workers is not None and ex.workers != len(ex.gpus):
            raise ConfigError(f"executor.workers = {ex.workers} with executor.gpus = {list(ex.gpus)!r}: "
                              f"one worker per GPU, so workers must be {len(ex.gpus)} or left out.")
