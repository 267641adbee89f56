"""Execute a grid through the run cache: one process trains a run at a time (its lock), the others
work on other runs first and then wait for it and read its result."""


from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from seglib.runs.cache import (
    ExecutionSummary,
    RunCache,
    RunOutputs,
    RunResult,
    RunResults,
    RunSpec,
    _now,
)
from seglib.runs.locks import describe

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- execution
class Executor(Protocol):
    """Runs ``fn`` over ``items`` and yields the results in the order of ``items``.
    A distributed engine implements this to run grid cells elsewhere."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]: ...


class LocalExecutor:
    """Sequential, in this process (the default)."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        for item in items:
            yield fn(item)


TrainFn = Callable[[RunSpec, Path], RunOutputs]
#: what :func:`run_one` returns for a run that another process is training now
LOCKED = None


def _train_locked(cache: RunCache, train_fn: TrainFn, force: bool, spec: RunSpec) -> tuple[RunResult, bool]:
    """Train ``spec`` (the caller holds its lock): rebuild a corrupt folder, resume a partial one."""
    status, why = cache._diagnose(spec)
    where = f"{spec.study}/{spec.key}"
    if status == "done" and not force:
        logger.info("cache hit: %s", where)
        return cache.load(spec), True
    if status == "corrupt":
        msg = f"run {where} is corrupt ({why}): rebuilding it"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        cache.remove(spec)
    elif status == "done":
        logger.info("force: retraining %s", where)
        cache.remove(spec)
    elif status == "partial":
        msg = f"run {where} is partial ({why}): training again, resuming from its checkpoint if any"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    run_dir = cache.begin(spec)
    started, t0 = _now(), time.perf_counter()
    logger.info("training %s", where)
    outputs = train_fn(spec, run_dir)
    if not isinstance(outputs, RunOutputs):
        raise TypeError(f"train_fn must return RunOutputs, got {type(outputs).__name__}")
    cache.write(spec, outputs, started=started, wall_time_s=time.perf_counter() - t0)
    return cache.load(spec), False


def run_one(cache: RunCache, train_fn: TrainFn, force: bool, spec: RunSpec) -> tuple[RunResult, bool] | None:
    """Execute one spec: ``(result, True)`` on a cache hit, ``(result, False)`` after training it, or
    :data:`LOCKED` (None) when another process holds the run's lock (it is training it now)."""
    if not force and cache.status(spec) == "done":
        logger.info("cache hit: %s/%s", spec.study, spec.key)
        return cache.load(spec), True
    lock = cache.lock(spec)
    if not lock.try_acquire():
        return LOCKED
    try:
        return _train_locked(cache, train_fn, force, spec)
    finally:
        lock.release()


def execute(
    specs: Iterable[RunSpec],
    train_fn: TrainFn,
    cache: RunCache,
    force: bool = False,
    executor: Executor | None = None,
    *,
    progress: bool = True,
    poll_s: float = 1.0,
) -> RunResults:
    """Run every spec not already done (all of them with ``force``) and return their results.

    ``train_fn(spec, run_dir)`` trains one cell and returns :class:`RunOutputs`; it
    should checkpoint under ``run_dir / "checkpoints"`` so that an interrupted run
    resumes. Duplicate specs run once. A run whose lock another process holds is left for
    later: the other runs go first, then this process waits for it and reads its result (or
    trains it, if the other process gave up without finishing it). The result list has a
    ``summary`` (:class:`ExecutionSummary`: runs, cache hits, trained, seconds).
    """
    specs = list(specs)
    unique = list({(s.study, s.key): s for s in specs}.values())
    executor = executor or LocalExecutor()
    t0 = time.perf_counter()
    by_id: dict[tuple[str, str], RunResult] = {}
    hits = 0
    pending = unique
    waited: set[tuple[str, str]] = set()  # trained by another process while we waited: not forced again
    bar = tqdm(total=len(unique), desc="runs", disable=not progress, mininterval=5.0, dynamic_ncols=True)
    try:
        while pending:
            fns = {(s.study, s.key): functools.partial(run_one, cache, train_fn,
                                                       force and (s.study, s.key) not in waited) for s in pending}
            outcomes = executor.map(lambda s: fns[(s.study, s.key)](s), pending)
            deferred = []
            for spec, outcome in zip(pending, outcomes):
                if outcome is LOCKED:
                    deferred.append(spec)
                    continue
                result, hit = outcome
                by_id[(spec.study, spec.key)] = result
                hits += bool(hit)
                bar.update(1)
            if deferred:
                for spec in deferred:
                    if (spec.study, spec.key) not in waited:
                        logger.info("run %s/%s is being trained by %s: waiting for it", spec.study, spec.key,
                                    describe(cache.lock(spec).holder()))
                    waited.add((spec.study, spec.key))
                time.sleep(poll_s)
            pending = deferred
    finally:
        bar.close()
    trained = len(unique) - hits
    summary = ExecutionSummary(runs=len(unique), hits=hits, trained=trained, seconds=time.perf_counter() - t0)
    logger.info("runs: %d, cache hits: %d, trained: %d, %.1f s", summary.runs, summary.hits, summary.trained,
                summary.seconds)
    return RunResults([by_id[(s.study, s.key)] for s in specs], summary)
