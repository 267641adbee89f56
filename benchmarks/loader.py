"""Data loading vs training: items/s of each study's cached loader against its training step.

Per study at the quick profile's sizes (``--quick``: the smoke profile): phantoms written and
preprocessed through the study's own code (``seglib.studies.pipeline.prepare``, the study module's
``arrays`` (cached) and ``datasets``), then ``seglib.train.make_loader`` as ``train_cell`` builds
it (``num_workers=0``): items/s over whole epochs, with and without augmentation (B, C:
``SliceDataset`` with the study's MONAI augmentation; A: whole volumes and ``PatchDataset`` with
the rejection and the lesion-aware sampler at threshold 0.4). Beside it, the training step's items/s
(the cell's model, loss, optimiser, batch size, precision and memory format as ``fit`` resolves them).
``load_share`` is the part of a training epoch spent loading when both run in one process:
``(1/loader) / (1/loader + 1/step)``. The loader is a bottleneck when it is slower than the step.

Data go to ``build/benchmarks/data`` (``SEGLIB_BUILD`` for this process), not the report's build.

    .venv/bin/python benchmarks/loader.py [--quick]
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import bench_common as bc
import torch

STUDIES = {"A": "stroke", "B": "prostate", "C": "brain"}


def study_cell(study: str, profile: str):
    """The config and the typed base cell (seed 0) of ``study`` at ``profile`` (study A: the grid's largest
    size)."""
    from seglib.config import base_cell, load

    cfg = load(study, None, [f"profile={profile}"])
    cell = base_cell(cfg)
    for grid in cfg.grid:
        if "data.size" in grid:
            cell = _with_data(cell, size=max(int(s) for s in grid["data.size"]))
    return cfg, cell


def _with_data(cell, **changes):
    return replace(cell, data=replace(cell.data, **changes))


def variants(study: str, cell) -> dict:
    """The dataset variants measured for ``study``: name -> typed cell."""
    if study == "stroke":
        return {name: _with_data(cell, sampler=sampler, sampler_threshold=0.4)
                for name, sampler in (("volumes", "none"), ("patches rejection 0.4", "rejection"),
                                      ("patches lesion-aware 0.4", "lesion_aware"))}
    return {name: _with_data(cell, augment=aug) for name, aug in (("augmented", True), ("no augmentation", False))}


def loader_rate(dataset, batch_size: int, min_items: int, min_s: float) -> tuple[float, int, float]:
    """Items/s of ``make_loader(dataset, batch_size, shuffle=True)`` over whole epochs (at least
    ``min_items`` items and ``min_s`` seconds, each epoch reseeded as ``fit`` does)."""
    from seglib.train import make_loader
    from seglib.train.rng import reseed_loader

    loader = make_loader(dataset, batch_size, shuffle=True, seed=0)
    for _ in loader:  # warm-up epoch: first-touch of arrays, transform set-up
        break
    items, epoch, t0 = 0, 0, time.perf_counter()
    while items < min_items or time.perf_counter() - t0 < min_s:
        epoch += 1
        reseed_loader(loader, 0, epoch)
        for batch in loader:
            items += int(batch["image"].shape[0])
    dt = time.perf_counter() - t0
    return items / dt, items, dt


def step_rate(module, arrays: dict, cell, steps: int) -> tuple[float, str, bool]:
    """Items/s of the cell's training step on one batch of its loader (after one warm-up step)."""
    from seglib.studies.pipeline import build_cell_loss, build_cell_model
    from seglib.train import TrainSettings, make_loader
    from seglib.train.settings import build_optimizer
    from seglib.train.device import channels_last_format, resolve_channels_last, resolve_device, resolve_precision
    from seglib.train.steps import fixed_batch_step

    settings = TrainSettings.from_config(cell.train, cell.optim, cell.seed)
    dev = resolve_device(settings.device)
    torch.manual_seed(0)
    model = build_cell_model(cell, module.in_channels(arrays)).to(dev).train()
    precision = resolve_precision(settings.precision, dev)
    cl = resolve_channels_last(settings.channels_last, model, dev, precision)
    fmt = channels_last_format(model)
    if cl:
        model = model.to(memory_format=fmt)
    loss_fn = build_cell_loss(cell)
    opt = build_optimizer(model.parameters(), settings)
    train_ds, _ = module.datasets(arrays, cell)
    batch = next(iter(make_loader(train_ds, cell.train.batch_size, shuffle=True, seed=0)))
    x, y = batch["image"].to(dev), batch["mask"].to(dev)
    if cl:
        x = x.contiguous(memory_format=fmt)

    step = fixed_batch_step(model, x, y, loss_fn, opt, dev, precision)

    times = bc.time_calls(step, repeats=steps, warmup=1)
    return x.shape[0] / (sum(times) / len(times)), precision, cl


def augmentation_cost(study: str, image_shape: tuple[int, ...], n: int) -> dict:
    """Milliseconds per item of ``study``'s augmentation (reseeded per item as ``SliceDataset`` does):
    the same MONAI ``Compose`` called with MONAI's metadata tracking on (its default) and through
    seglib's ``Augmentation``, which turns tracking off around the call."""
    import numpy as np
    from monai.data import get_track_meta, set_track_meta

    from seglib.data.transforms import build_augmentation

    rng = np.random.default_rng(0)
    item = {"image": rng.random(image_shape, dtype=np.float32),
            "mask": (rng.random((1, *image_shape[1:])) > 0.5).astype(np.float32)}
    out = {"study": study, "shape": "x".join(map(str, image_shape))}
    before = get_track_meta()
    try:
        set_track_meta(True)
        aug = build_augmentation(study, seed=0)
        for label, fn in (("ms_per_item", aug.compose), ("ms_per_item_no_meta", aug)):
            def one(i=[0], fn=fn):
                i[0] += 1
                aug.set_random_state(i[0])
                fn(dict(item))

            times = bc.time_calls(one, repeats=n, warmup=2)
            out[label] = 1e3 * sum(times) / len(times)
    finally:
        set_track_meta(before)
    out["meta_overhead"] = bc.ratio(out["ms_per_item"], out["ms_per_item_no_meta"])
    return out


def main(argv=None) -> int:
    p = bc.parser(__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="study profile for the sizes (default quick; smoke with --quick)")
    args = p.parse_args(argv)
    profile = args.profile or ("smoke" if args.quick else "quick")
    os.environ["SEGLIB_BUILD"] = str(bc.OUT_DIR / "data")
    from seglib.report.notebooks import paths
    from seglib.studies.pipeline import prepare, study_module

    min_items, min_s, steps = (8, 0.0, 1) if args.quick else (256, 3.0, 5)
    with bc.Bench("loader", args) as bench:
        bench.note(f"profile {profile}; data and caches under {bc.OUT_DIR / 'data'}")
        rows = []
        for letter, study in STUDIES.items():
            cfg, cell = study_cell(study, profile)
            prepared = prepare(cfg, paths())
            module = study_module(study)
            arrays = module.arrays(prepared, cell.data)
            s_rate, precision, cl = step_rate(module, arrays, cell, steps)
            for name, c in variants(study, cell).items():
                a = arrays
                train_ds, _ = module.datasets(a, c)
                l_rate, items, dt = loader_rate(train_ds, c.train.batch_size, min_items, min_s)
                share = bc.ratio(1 / l_rate, 1 / l_rate + 1 / s_rate)
                rows.append({"study": letter, "dataset": name, "size": c.data.size,
                             "batch": c.train.batch_size, "items": items, "loader_items_s": l_rate,
                             "step_items_s": s_rate, "loader_vs_step": bc.ratio(l_rate, s_rate),
                             "load_share": share, "bottleneck": bool(l_rate < s_rate),
                             "precision": precision, "channels_last": cl})
        bench.add_table("loader", rows, title="loader items/s vs training-step items/s (num_workers=0)")
        for r in rows:
            if r["bottleneck"]:
                bench.note(f"{r['study']} {r['dataset']}: the loader ({r['loader_items_s']:.0f} items/s) is slower "
                           f"than the training step ({r['step_items_s']:.0f} items/s): it is the bottleneck")
        aug_rows = []
        for r in rows:
            if r["dataset"] == "augmented":
                study = STUDIES[r["study"]]
                channels = 1 if study == "prostate" else 3
                aug_rows.append(augmentation_cost(study, (channels, r["size"], r["size"]), 5 if args.quick else 40))
        bench.add_table("augmentation", aug_rows, title="augmentation alone, per item (MONAI Compose with metadata on / seglib Augmentation, metadata off)")
        for letter in STUDIES:
            sel = {r["dataset"]: r for r in rows if r["study"] == letter}
            if "augmented" in sel and "no augmentation" in sel:
                bench.note(f"{letter}: augmentation costs {bc.ratio(sel['no augmentation']['loader_items_s'], sel['augmented']['loader_items_s']):.1f}x "
                           f"in loader throughput; augmented loading takes {100 * sel['augmented']['load_share']:.0f} % "
                           f"of a single-process epoch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
