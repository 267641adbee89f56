"""Study A's measurements outside the training grid: memory and time per step (A2) and the patch
samplers (A5).

:func:`memory_and_time` is the function the benchmark script calls as well. Peak memory on CUDA is
``torch.cuda.max_memory_allocated`` after a reset; on CPU each configuration runs in a **fresh**
process (forked from one new interpreter, glibc told to return freed blocks at once) whose resident set is
sampled every 0.5 ms during the steps; the peak minus the size before the model was built is
reported, so configurations do not inherit each other's peak. Results are cached as CSV, keyed by
every parameter, the torch version and the code that measures (:func:`measuring_code`), so re-rendering
the report does not measure again and a change to the models or the step measures anew.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seglib.hashing import stable_hash
from seglib.io import atomic_write_bytes
from seglib.studies.stroke.step import MALLOC_ENV, measure_step

log = logging.getLogger(__name__)

MEMORY_COLUMNS = ["conv", "size", "peak_mem_mb", "time_per_step_s", "params", "precision", "memory_format",
                  "device", "batch", "features", "steps", "peak_source"]


#: The measuring interpreter: it imports torch and the step once, then forks a child per configuration
#: (one JSON line of arguments each on stdin) that measures and sends its row back through a pipe. The
#: parent never runs a torch operation (no thread pool exists to be copied), so every child starts with
#: nothing of another configuration, without paying the 2-3 s of imports each time (the modules the
#: steps import lazily too: :func:`~seglib.studies.stroke.step.preload`). The child's first
#: step (a 8³ model of the first two widths) pages in the code and starts the thread pool: without it the
#: peak of a 16³ step was 108 MiB of which about 95 were that first use, the same for every configuration.
_FORKING_MEASURER = r"""
import json, os, sys
import torch
from seglib.studies.stroke.step import CPU_PEAK_SOURCE, FRESH_PEAK_SOURCE, measure_step, preload
preload()
for line in sys.stdin:
    if not line.strip():
        continue
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            args = json.loads(line)
            # a small step first pages in the code and starts the thread pool, so the peak is the step's own
            measure_step(**{**args, "size": 8, "batch": 1, "steps": 1, "features": args["features"][:2]})
            row = measure_step(**args)
            if row["peak_source"] == CPU_PEAK_SOURCE:
                row["peak_source"] = FRESH_PEAK_SOURCE
            out = {"row": row}
        except BaseException as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        data = json.dumps({"error": f"the measuring child ended with status {status} and no result"}).encode()
    print("RESULT " + data.decode(), flush=True)
"""


def measuring_code() -> str:
    """Fingerprint of the code a measurement runs: the training-side library (models, blocks, losses,
    precision rules) and this study's step and measurement modules (outside that scope)."""
    from seglib.fingerprint import code_fingerprint, file_digest

    here = Path(__file__).resolve()
    return stable_hash([code_fingerprint("train"), file_digest(here), file_digest(here.with_name("step.py"))],
                       length=16)


def _measure_fresh_many(configs: Sequence[dict]) -> list[dict]:
    """:func:`~seglib.studies.stroke.step.measure_step` of every configuration, each in a process of its
    own (forked from one new interpreter with glibc's :data:`MALLOC_ENV`), in order. Forking a process that
    has imported torch is safe on Linux only (macOS's frameworks are not fork-safe): elsewhere each
    configuration gets a new interpreter of its own."""
    if not configs:
        return []
    if not sys.platform.startswith("linux") and len(configs) > 1:
        return [row for c in configs for row in _measure_fresh_many([c])]
    stdin = "".join(json.dumps(c) + "\n" for c in configs)
    proc = subprocess.run([sys.executable, "-c", _FORKING_MEASURER], input=stdin, capture_output=True, text=True,
                          check=False, env={**os.environ, **MALLOC_ENV})
    results = [json.loads(ln[len("RESULT "):]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    rows = []
    for args, res in zip(configs, results):
        if "error" in res:
            raise RuntimeError(f"memory measurement of {args} failed: {res['error']}")
        rows.append(res["row"])
    if proc.returncode != 0 or len(rows) != len(configs):
        raise RuntimeError(f"memory measurement of {configs[len(rows)]} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return rows


def _measure_fresh(args: dict) -> dict:
    """One configuration in a process of its own (:func:`_measure_fresh_many`)."""
    return _measure_fresh_many([args])[0]


def memory_and_time(sizes: Sequence[int], conv_modes: Sequence[str] = ("3d", "2+1d"), batch: int = 2,
                    features: Sequence[int] = (16, 32, 64, 128), steps: int = 2, device: str = "auto",
                    precision: str = "auto", in_channels: int = 2, cache_dir: str | Path | None = None,
                    fresh_process: bool | None = None) -> pd.DataFrame:
    """Peak memory and time per training step (forward + backward + SGD step) of the 3D U-Net.

    For every ``conv`` in ``conv_modes`` and input ``size``³: a U-Net with ``features``, trilinear
    up-sampling, ``channels_last_3d`` memory format (the faster format for both modes), DiceBCE,
    batch ``batch`` of random inputs; one warm-up step then ``steps`` timed steps.
    ``fresh_process`` (default: on for CPU) measures each configuration in its own interpreter.
    Returns one row per configuration with :data:`MEMORY_COLUMNS`; cached as CSV in ``cache_dir``.
    """
    from seglib.train.device import resolve_device, resolve_precision

    import torch

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    params = {"what": "stroke memory_and_time", "sizes": [int(s) for s in sizes], "conv": list(conv_modes),
              "batch": int(batch), "features": [int(f) for f in features], "steps": int(steps), "device": str(dev),
              "precision": prec, "in_channels": int(in_channels), "torch": torch.__version__,
              "code": measuring_code(), "version": 4}
    path = Path(cache_dir) / f"memory-{stable_hash(params, length=16)}.csv" if cache_dir else None
    if path is not None and path.is_file():
        log.info("memory/time measurement read from %s", path)
        return pd.read_csv(path)
    fresh = (dev.type == "cpu") if fresh_process is None else bool(fresh_process)
    configs = [{"conv": conv, "size": size, "batch": int(batch), "features": params["features"],
                "steps": int(steps), "in_channels": int(in_channels), "device": str(dev), "precision": prec}
               for size in params["sizes"] for conv in conv_modes]
    rows = _measure_fresh_many(configs) if fresh else [measure_step(**args) for args in configs]
    for r in rows:
        log.info("A2 %s %d³: %.0f MiB, %.3f s/step", r["conv"], r["size"], r["peak_mem_mb"], r["time_per_step_s"])
    df = pd.DataFrame(rows, columns=MEMORY_COLUMNS)
    if path is not None:
        atomic_write_bytes(path, df.to_csv(index=False).encode("utf-8"))
    return df


def memory_benchmark(cfg, cache_dir: str | Path | None) -> pd.DataFrame:
    """:func:`memory_and_time` with the study's settings (``cfg.settings.memory_*``), the training
    device and precision, and the number of input channels of the data; cached in ``cache_dir``."""
    from seglib.data.channels import channels_of

    s = cfg.settings
    return memory_and_time(s.memory_sizes, ("3d", "2+1d"), s.memory_batch, s.memory_features, s.memory_steps,
                           device=cfg.train.device, precision=cfg.train.precision,
                           in_channels=len(channels_of(cfg.data.dataset, cfg.data.channels, cfg.data.data_dir)), cache_dir=cache_dir)


# ----------------------------------------------------------------------------------------- A5
def sampler_study(prepared, thresholds: Sequence[float], patch_size: int, n_patches: int, max_draws: int,
                  seed: int | np.random.Generator = 0, return_patches: bool = False):
    """Naive rejection sampling (as published, bounded) against lesion-aware sampling.

    For every training case's native mask, threshold and sampler, ``n_patches`` patches of
    ``patch_size``³ are requested (draws capped at ``max_draws``, lesion-centred fallback).
    Returns one row per (sampler, threshold): ``acceptance_rate`` (accepted without fallback /
    requested), ``draws_per_accepted``, ``lesion_fraction_mean`` (lesion voxels in the patch /
    lesion voxels in the volume), ``lesion_fraction_sd``, ``fallbacks`` (count) and their reasons,
    ``p_exact`` (rejection only: the exact per-draw acceptance probability from
    :class:`~seglib.data.sampling.PatchIndex`, mean over cases) and ``draws_expected`` (mean of
    1/p over cases where p > 0). ``return_patches=True`` returns ``(summary, patches)`` with one row
    per requested patch (sampler, threshold, case_id, lesion_fraction, draws, accepted).
    """
    from seglib.data.sampling import PatchIndex, acceptance_stats, lesion_aware_sample, rejection_sample

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    masks = [(cid, prepared.case(cid).mask) for cid in prepared.train_ids]
    masks = [(cid, m) for cid, m in masks if m is not None]
    if not masks:
        raise ValueError("sampler_study: no training case with a mask.")
    patch = min(int(patch_size), *(min(m.shape) for _, m in masks))
    indices = [(cid, PatchIndex(m, patch)) for cid, m in masks]
    rows, patches = [], []
    for sampler in ("rejection", "lesion_aware"):
        for t in thresholds:
            draws, p_exact = [], []
            for cid, index in indices:
                for _ in range(int(n_patches)):
                    if sampler == "rejection":
                        d = rejection_sample(index, patch, float(t), rng, max_draws=int(max_draws))
                    else:
                        d = lesion_aware_sample(index, patch, rng, threshold=float(t), max_draws=int(max_draws))
                    draws.append(d)
                    patches.append({"sampler": sampler, "threshold": float(t), "case_id": cid,
                                    "lesion_fraction": d.lesion_fraction, "draws": d.draws, "accepted": d.accepted})
                if sampler == "rejection":
                    p_exact.append(index.acceptance_probability(float(t)))
            st = acceptance_stats(draws)
            fr = np.array([d.lesion_fraction for d in draws], float)
            p = np.array(p_exact, float)
            rows.append({"sampler": sampler, "threshold": float(t), "patch_size": patch, "cases": len(indices),
                         "n_patches": st["n_patches"], "acceptance_rate": st["acceptance_rate"],
                         "draws_per_accepted": st["draws_per_accepted"], "mean_draws": st["mean_draws"],
                         "lesion_fraction_mean": st["mean_lesion_fraction"],
                         "lesion_fraction_sd": float(np.nanstd(fr)) if np.isfinite(fr).any() else np.nan,
                         "fallbacks": st["fallback_count"],
                         "fallback_reasons": ", ".join(f"{k}: {v}" for k, v in sorted(st["fallbacks"].items())),
                         "p_exact": float(np.nanmean(p)) if p.size else np.nan,
                         "draws_expected": float(np.mean(1 / p[p > 0])) if (p > 0).any() else np.nan})
    df = pd.DataFrame(rows)
    return (df, pd.DataFrame(patches)) if return_patches else df


def sampler_benchmark(cfg, prepared) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`sampler_study` with the study's settings (``cfg``) on the training cases of ``prepared``:
    ``(summary, patches)``.

    Patch size: ``data.patch_size`` when set, else half the smallest native dimension (the
    ratio of the seed's 64³ patches in 128³ volumes). The generator is seeded with the first seed.
    """
    s = cfg.settings
    native = min(min(prepared.case(c).mask.shape) for c in prepared.train_ids)
    patch = cfg.data.patch_size or max(4, native // 2)
    return sampler_study(prepared, s.sampler_thresholds, patch, s.sampler_patches, s.sampler_max_draws,
                         np.random.default_rng(cfg.seeds[0]), return_patches=True)
