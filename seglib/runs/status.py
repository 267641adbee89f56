"""``seglib status``: every run of a study's grid with its state and progress, read from the run cache alone.

States: ``done``; ``running`` (where and since when, from the run's lock holder); ``queued`` (a SLURM job
recorded in ``jobs.json`` is waiting); ``failed`` (the last line of ``error.json``); ``partial`` (a
checkpoint, no one training it); ``not started``. Progress is ``epoch n/N`` from ``progress.json``, else from
``checkpoints/last.pt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from seglib.runs.cache import CHECKPOINTS, RunCache
from seglib.runs.jobs import ERROR, PROGRESS, last_job, read_json

log = logging.getLogger(__name__)


def _epoch(run_dir: Path) -> int | None:
    progress = read_json(run_dir / PROGRESS)
    if isinstance(progress, dict) and "epoch" in progress:
        return int(progress["epoch"])
    last = run_dir / CHECKPOINTS / "last.pt"
    if last.is_file():
        try:
            import torch

            return int(torch.load(last, map_location="cpu", weights_only=False)["epoch"])
        except Exception:  # noqa: BLE001 - being written, or from another version: no progress shown
            return None
    return None


def run_state(cache: RunCache, spec) -> dict:
    """One run's row: key, state, where (host pid / job id), since, epoch n of N, error."""
    run_dir = cache.run_dir(spec)
    epochs = int(spec.config["train"]["epochs"])
    row = {"key": spec.key, "state": "not started", "where": "", "since": "", "epoch": "", "error": ""}
    status = cache.status(spec)
    if status == "done":
        prov = read_json(run_dir / "provenance.json") or {}
        executed = prov.get("executed") or {}
        row.update(state="done", where=executed.get("host") or prov.get("hostname", ""),
                   since=prov.get("ended", ""), epoch=f"{prov.get('n_epochs', epochs)}/{epochs}")
        return row
    lock = cache.lock(spec)
    holder = lock.holder()
    epoch = _epoch(run_dir) if run_dir.is_dir() else None
    if epoch is not None:
        row["epoch"] = f"{epoch}/{epochs}"
    if holder is not None and not lock.is_stale(holder):
        row.update(state="running", where=f"{holder.get('host')} pid {holder.get('pid')}",
                   since=holder.get("started", ""))
        if epoch is None:
            row["epoch"] = f"0/{epochs}"
        return row
    job = last_job(run_dir) if run_dir.is_dir() else None
    if job is not None:
        from seglib.runs.slurm import job_state

        if job_state(job) == "active":
            row.update(state="queued", where=f"job {job['job_id']} ({job['cluster']})", since=job["submitted"])
            return row
    err = read_json(run_dir / ERROR) if run_dir.is_dir() else None
    if isinstance(err, dict):
        row.update(state="failed", where=f"{err.get('host')} pid {err.get('pid')}", since=err.get("time", ""),
                   error=f"{err.get('type')}: {err.get('error')}")
    elif status in ("partial", "corrupt"):
        row["state"] = status
    return row


def grid_status(specs, axes, cache: RunCache) -> pd.DataFrame:
    """Every run of a grid (``specs``, labelled along ``axes``) with its state in ``cache`` (see the module
    docstring). The caller expands the grid (:func:`seglib.studies.collect.grid_specs`)."""
    from seglib.runs.grid import cell_label

    rows = []
    for spec in specs:
        label = cell_label(spec.config, axes) if axes else "baseline"
        rows.append({"run": f"{label} (seed {spec.config['train']['seed']})", **run_state(cache, spec)})
    return pd.DataFrame(rows)


def format_status(rows: pd.DataFrame) -> str:
    """The table, and a count per state."""
    counts = rows["state"].value_counts()
    table = rows.drop(columns=[c for c in ("error",) if not rows[c].astype(bool).any()]).to_string(index=False)
    return table + "\n" + ", ".join(f"{n} {state}" for state, n in counts.items())
