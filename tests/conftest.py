"""Shared fixtures: the three notebooks executed once per test session with their smoke profile.

They run into ``build/test`` (``SEGLIB_BUILD``), apart from the report's own ``build/``, so
``make test`` never overwrites what ``make report`` built. The run cache there makes a second
session fast; CI starts from a fresh clone, so there everything is trained.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests of resuming (a crash, a kill, Ctrl-C after epoch n) need a checkpoint after every epoch, in this process and
# in the processes it starts; a user's runs write one at most every 30 s (tests/test_train.py tests that policy).
os.environ.setdefault("SEGLIB_CHECKPOINT_EVERY_S", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_BUILD = REPO / "build" / "test"


@pytest.fixture(scope="session")
def smoke_build():
    """Execute every notebook with ``params/<study>/smoke.yaml``; returns (paths, {study: error or None})."""
    from seglib.config import STUDIES, load
    from seglib.report.notebooks import paths, run_notebooks

    old = os.environ.get("SEGLIB_BUILD")
    os.environ["SEGLIB_BUILD"] = str(TEST_BUILD)
    try:
        p = paths(REPO)
        errors = {s: FileNotFoundError(f"notebooks/{s}.ipynb does not exist")
                  for s in STUDIES if not p.notebook(s).is_file()}
        configs = [load(s, REPO / "params" / s / "smoke.yaml") for s in STUDIES if s not in errors]
        for study, result in run_notebooks(configs, p, log_output=False, progress_bar=False).items():
            errors[study] = result if isinstance(result, Exception) else None  # reported by that study's test
        yield p, errors
    finally:
        if old is None:
            os.environ.pop("SEGLIB_BUILD", None)
        else:
            os.environ["SEGLIB_BUILD"] = old
