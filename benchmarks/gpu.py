"""The GPU check: each study's full-profile models on CUDA, the projected grid times, and the smoke notebooks.

On a machine with CUDA, for every distinct model of each study's full grid (``params/<study>/full.yaml``:
study A's {3D, (2+1)D} × {64³, 128³}, study B's U-Net at 384², study C's U-Net and U-Net++ at 256²) at the
profile's batch size, with the engine's defaults (``precision: auto``, ``channels_last: auto``, (2+1)D
``recompute: auto``): a few training steps (forward, loss, backward, optimiser), items/s and the peak
memory (``torch.cuda.max_memory_allocated``). From them, each full grid's projected training time on one
GPU and on N GPUs (one run per GPU at a time, longest first): epochs × training items per epoch /
items/s per run, the training items of each public dataset's split (validation passes not counted).
Then ``seglib run all --profile smoke -p train.device=cuda`` executes the three notebooks on the GPU.

Without CUDA it says so and exits 0. On one H100/H200 it takes a few minutes (target: under 8).

    .venv/bin/python benchmarks/gpu.py [--steps 5] [--gpus 1 4 8] [--skip-notebooks]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc
import yaml

STUDIES = ("stroke", "prostate", "brain")
IN_CHANNELS = {"stroke": 2, "prostate": 1, "brain": 3}
#: training items per epoch of each public dataset at the full profile's split (STUDIES.md): ISLES'22 250
#: public cases (80 % trained), PROSTATEx 4,166 slices (80 %), Kaggle LGG about 3,900 slices of 110 patients
#: with 10 held out
TRAIN_ITEMS = {"isles22": int(250 * 0.8), "atlas2": 525, "prostatex": int(4166 * 0.8), "lgg": int(3900 * 100 / 110)}


def full_cells(study: str) -> list[dict]:
    """Every run of ``study``'s full grid as a plain nested dict (the profile's sections, each cell's values)."""
    from seglib.config import SECTIONS, as_dict
    from seglib.runs.grid import expand_grid

    p = yaml.safe_load((bc.REPO / "params" / study / "full.yaml").read_text())
    base = {k: {**as_dict(cls()), **(p.get(k) or {})} for k, cls in SECTIONS.items()}
    return expand_grid(base, [dict(g) for g in p.get("grid") or []], list(p.get("seeds") or [0]))


def model_key(cell: dict) -> tuple:
    m, d = cell["model"], cell["data"]
    return (m["name"], m.get("conv", "3d"), int(d["size"]))


def measure(study: str, cell: dict, steps: int) -> dict:
    """Training steps of ``cell``'s model on CUDA at the engine's defaults: items/s and peak memory."""
    import torch

    from seglib.nn.losses import build_loss
    from seglib.nn.unet import build_model
    from seglib.train.device import resolve_channels_last, resolve_precision
    from seglib.train.steps import fixed_batch_step

    dev = torch.device("cuda")
    m, d, t = cell["model"], cell["data"], cell["train"]
    dims, size, batch = int(m["spatial_dims"]), int(d["size"]), int(t["batch_size"])
    kw = {"conv": m.get("conv", "3d")} if m["name"] == "unet" and dims == 3 else {}
    torch.manual_seed(0)
    model = build_model(m["name"], spatial_dims=dims, in_channels=IN_CHANNELS[study], out_channels=1,
                        features=tuple(m["features"]), upsample=m.get("upsample", "transpose"), **kw).to(dev)
    precision = resolve_precision(t.get("precision", "auto"), dev)
    cl = resolve_channels_last(t.get("channels_last", "auto"), model, dev, precision)
    fmt = (torch.channels_last_3d if dims == 3 else torch.channels_last) if cl else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    x = torch.randn(batch, IN_CHANNELS[study], *([size] * dims), device=dev).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, *([size] * dims), device=dev) > 0.9).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = fixed_batch_step(model, x, y, build_loss("dice_bce"), opt, dev, precision)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(2):  # warm-up: cuDNN's kernel choice, the allocator
        step()
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(dev)
    s = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated(dev) / 2**20
    del model, opt, x, y
    torch.cuda.empty_cache()
    return {"precision": precision, "channels_last": cl, "s_per_step": s, "items_per_s": batch / s,
            "peak_mib": peak, "batch": batch}


def schedule(hours: list[float], gpus: int) -> float:
    """Wall time of runs of ``hours`` on ``gpus`` GPUs, one run per GPU at a time, longest first."""
    load = [0.0] * gpus
    for h in sorted(hours, reverse=True):
        load[load.index(min(load))] += h
    return max(load)


def smoke_notebooks() -> dict:
    """``seglib run all --profile smoke -p train.device=cuda`` in a fresh build folder: seconds and exit code."""
    with tempfile.TemporaryDirectory() as build:
        env = {**os.environ, "SEGLIB_BUILD": build}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "seglib.cli", "run", "all", "--profile", "smoke", "--quiet",
                               "-p", "train.device=cuda"], cwd=bc.REPO, env=env, capture_output=True, text=True)
        return {"seconds": time.perf_counter() - t0, "exit code": proc.returncode,
                "output": (proc.stdout + proc.stderr).strip().splitlines()[-6:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per model (after 2 warm-up)")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 4, 8], help="GPU counts to project the grids on")
    ap.add_argument("--skip-notebooks", action="store_true")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device on this machine (torch.cuda.is_available() is False): "
              "nothing to measure; run it on a machine with an NVIDIA GPU.")
        return 0
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    t_start = time.perf_counter()
    rows, grids = [], []
    for study in STUDIES:
        cells = full_cells(study)
        measured: dict[tuple, dict] = {}
        for cell in cells:
            key = model_key(cell)
            if key not in measured:
                measured[key] = measure(study, cell, args.steps)
                rows.append({"study": study, "model": key[0], "conv": key[1] if study == "stroke" else "",
                             "size": key[2], **{k: measured[key][k] for k in
                                                ("batch", "precision", "channels_last", "items_per_s",
                                                 "s_per_step", "peak_mib")}})
        items = TRAIN_ITEMS[cells[0]["data"]["dataset"]]
        hours = [int(c["train"]["epochs"]) * int(c["data"].get("samples_per_epoch") or items)
                 / measured[model_key(c)]["items_per_s"] / 3600 for c in cells]
        grids.append({"study": study, "runs": len(cells), "GPU-hours": sum(hours),
                      **{f"wall h on {g} GPU{'s' if g > 1 else ''}": schedule(hours, g) for g in args.gpus}})
    print(bc.format_table(rows, title="one training step at the full profile's size, engine defaults"))
    print()
    print(bc.format_table(grids, title="projected training time of each full grid (epochs at the profile's "
                                       "maximum, validation not counted)"))
    if not args.skip_notebooks:
        nb = smoke_notebooks()
        print(f"\nsmoke notebooks on CUDA: exit code {nb['exit code']} in {nb['seconds']:.0f} s")
        print("\n".join(nb["output"]))
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    bc.write_json(bc.OUT_DIR / "gpu.json", {"steps": rows, "grids": grids})
    return 0


if __name__ == "__main__":
    sys.exit(main())
