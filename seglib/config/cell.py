"""One grid cell, typed: the five sections of a training run as the config dataclasses, and its seed.

:func:`seglib.studies.collect.grid_specs` expands a study's grid into plain nested dicts, one per run; a run's
cache key is computed from that dict (:attr:`seglib.runs.cache.RunSpec.config`), which stays as it is. The
code that trains, evaluates and predicts a run reads it once through :meth:`RunConfig.from_dict` (every
section validated by :func:`~seglib.config.validate.build_section`, the profile not resolved again) and then
reads attributes (``cell.data.size``, ``cell.train.threshold``, ``cell.seed``); :meth:`RunConfig.to_dict`
gives back the plain dict of a validated cell, key for key and number for number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seglib.config.schema import (
    SECTIONS,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from seglib.config.validate import (
    ConfigError,
    _check_range,
    _coerce,
    as_dict,
    build_section,
)

__all__ = ["RunConfig"]

SEED_RANGE = (0, 2**32 - 1, False, False)  # numpy's and torch's seeds: 0 <= s < 2**32


@dataclass(frozen=True)
class RunConfig:
    """One training run: ``data``, ``model``, ``loss``, ``optim``, ``train`` and the run's ``seed``.

    In the plain dict (the grid's cell, the run's ``config.json``) the seed is ``train.seed``; here it is
    a field of its own, since :class:`~seglib.config.TrainConfig` is the profile's section, which has none
    (the seeds are the study's ``seeds``)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    @classmethod
    def from_dict(cls, cell: Mapping[str, Any]) -> RunConfig:
        """The typed cell of a plain one (``{"data": {...}, ..., "train": {..., "seed": s}}``).

        Every key is validated as in a parameter file (unknown keys, types, ranges: a
        :class:`~seglib.config.ConfigError` naming it); a section or key left out takes its default, so
        the ``config.json`` of a run written before a key existed still reads."""
        if isinstance(cell, RunConfig):
            return cell
        if not isinstance(cell, Mapping):
            raise ConfigError(f"a run's configuration must be a mapping of sections, got {type(cell).__name__}")
        unknown = [k for k in cell if k not in SECTIONS]
        if unknown:
            raise ConfigError(f"unknown section(s) {', '.join(map(repr, unknown))} in a run's configuration; "
                              f"a run has {', '.join(SECTIONS)}.")
        train = dict(cell.get("train") or {})
        seed = train.pop("seed", 0)
        seed = _coerce(seed, int, "train.seed")
        _check_range(seed, {"range": SEED_RANGE}, "train.seed")
        sections = {name: build_section(sec, train if name == "train" else dict(cell.get(name) or {}), name)
                    for name, sec in SECTIONS.items()}
        return cls(**sections, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The plain nested dict (tuples as lists, ``train.seed`` last in ``train``): for a cell read from a
        validated grid, the very dict its run's key is computed from."""
        out = {name: as_dict(getattr(self, name)) for name in SECTIONS}
        out["train"]["seed"] = self.seed
        return out
