"""Where everything generated goes: ``build/`` (or ``$SEGLIB_BUILD``) beside the project's ``params/``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from seglib.config import project_root


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def build(self) -> Path:
        """``$SEGLIB_BUILD`` or ``<root>/build``: every generated file (runs, caches, executed notebooks)."""
        env = os.environ.get("SEGLIB_BUILD")
        return Path(env).resolve() if env else self.root / "build"

    @property
    def executed(self) -> Path:
        return self.build / "executed"

    @property
    def runs(self) -> Path:
        return self.build / "runs"

    @property
    def phantoms(self) -> Path:
        return self.build / "phantoms"

    @property
    def cache(self) -> Path:
        return self.build / "cache"

    def notebook(self, study: str) -> Path:
        return self.root / "notebooks" / f"{study}.ipynb"

    def executed_notebook(self, study: str) -> Path:
        return self.executed / f"{study}.ipynb"

    def results(self, study: str) -> Path:
        return self.executed / study


def paths(root: Path | None = None) -> Paths:
    root = root or project_root()
    if root is None:
        raise FileNotFoundError(
            "Cannot find the seglib project folder (the one holding params/ and notebooks/): run from inside "
            "the project or set SEGLIB_ROOT.")
    return Paths(Path(root))
