"""Runs: grid expansion (``grid``), the content-keyed run cache (``cache``), one lock per run (``locks``)
and the execution of a grid through the cache (``execute``)."""

from seglib.runs.cache import (RunCache, RunNotDone, RunOutputs, RunResult, RunResults, ExecutionSummary, RunSpec,
                               environment)
from seglib.runs.execute import Executor, LocalExecutor, execute, run_one
from seglib.runs.grid import axis_name, cell_label, expand_grid, grid_axes

__all__ = [
    "RunSpec", "RunOutputs", "RunResult", "RunResults", "ExecutionSummary", "RunCache", "RunNotDone",
    "Executor", "LocalExecutor", "execute", "run_one", "environment", "expand_grid", "grid_axes", "cell_label",
    "axis_name",
]
