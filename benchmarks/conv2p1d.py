"""3D vs (2+1)D convolution in study A's U-Net: time per training step and memory by input size.

Measured through the code of the report's table A2 (``seglib.studies.stroke.step.measure_step``: U-Net
with trilinear up-sampling, DiceBCE, SGD, batch 2 of random 2-channel volumes, one warm-up step then
timed steps, each configuration in a fresh process whose resident set is sampled) for three modes: 3D,
(2+1)D storing its inner maps for the backward pass, and (2+1)D recomputing them
(``model.recompute: on``), each in both layouts (``channels_last_3d``, contiguous). Two memories per
configuration: the peak (sampled resident set, what a user's machine must hold) and the MiB autograd
keeps for the backward pass (exact, load-independent: the activations the seed's hypothesis is about).
Each mode is compared with 3D at its own best layout, at equal precision. Goal: (2+1)D at least 1.5x
faster per step than 3D and lower peak memory. Where the goal is missed, ``torch.profiler`` splits one
step of each mode into convolution, batch norm + ReLU, layout copies, sampling / concat, optimiser and
the rest, and lists the top operators: where the time goes.

    .venv/bin/python benchmarks/conv2p1d.py [--quick] [--sizes 32 64 128] [--precisions fp32 bf16]
"""

from __future__ import annotations

from collections.abc import Sequence

import bench_common as bc
import torch

GOAL_SPEEDUP = 1.5
ISSUE_WIDTHS = (16, 32, 64, 128)
STUDY_WIDTHS = (32, 64, 128, 256, 512)

#: the modes compared: (conv, recompute) with the label of the tables
MODES = (("3d", "-", "3d"), ("2+1d", "off", "2+1d stored"), ("2+1d", "on", "2+1d recomputed"))
LAYOUTS = ("channels_last_3d", "contiguous")


def measure_one(args: dict, fresh: bool) -> dict:
    """One configuration of ``stroke.step.measure_step`` (table A2's code): in a new interpreter with the
    allocator settings of A2's measurement (``fresh``), or in this process."""
    from seglib.studies.stroke.measure import _measure_fresh
    from seglib.studies.stroke.step import measure_step

    return _measure_fresh(args) if fresh else measure_step(**args)


def measure(sizes: Sequence[int], features: Sequence[int], precision: str, steps: int, batch: int,
            fresh: bool, layouts: Sequence[str] = LAYOUTS, modes=MODES) -> list[dict]:
    """Rows of every mode (:data:`MODES`) × layout at every size."""
    rows = []
    for size in sizes:
        for conv, recompute, label in modes:
            for layout in layouts:
                args = {"conv": conv, "size": int(size), "batch": int(batch), "features": [int(f) for f in features],
                        "steps": int(steps), "in_channels": 2, "device": "cpu", "precision": precision,
                        "memory_format": layout, **({"recompute": recompute} if conv == "2+1d" else {})}
                r = {**measure_one(args, fresh), "mode": label}
                rows.append(r)
                print(f"  {label:>15} {size}^3 {r['features']} {r['precision']} {layout:<16} "
                      f"{r['time_per_step_s']:.3f} s/step, peak {r['peak_mem_mb']:.0f} MiB, "
                      f"saved {r['saved_mb']:.0f} MiB", flush=True)
    return rows


def layouts_for(spec: Sequence[str] | None, precision: str) -> tuple[str, ...]:
    """The layouts to measure at ``precision`` from ``--layouts`` (names, or ``PREC=LAYOUT`` pairs)."""
    if not spec:
        return LAYOUTS
    plain = [x for x in spec if "=" not in x]
    paired = [x.split("=", 1)[1] for x in spec if "=" in x and x.split("=", 1)[0] == precision]
    chosen = tuple(dict.fromkeys(plain + paired)) or LAYOUTS
    bad = [x for x in chosen if x not in LAYOUTS]
    if bad:
        raise SystemExit(f"conv2p1d: --layouts {' '.join(bad)}: expected {' or '.join(LAYOUTS)} (or PREC=LAYOUT)")
    return chosen


def compare(rows: Sequence[dict]) -> list[dict]:
    """Per (size, widths, precision) and (2+1)D mode (stored, recomputed): each mode at its fastest layout
    against 3D at its fastest; speed-up, peak-memory ratio and saved-for-backward ratio."""
    out = []
    keys = list(dict.fromkeys((r["size"], r["features"], r["precision"]) for r in rows))
    for size, feats, prec in keys:
        best = {}
        for _, _, label in MODES:
            cand = [r for r in rows if (r["size"], r["features"], r["precision"], r["mode"]) == (size, feats, prec, label)]
            if cand:
                best[label] = min(cand, key=lambda r: r["time_per_step_s"])
        if "3d" not in best:
            continue
        a = best["3d"]
        for label, b in best.items():
            if label == "3d":
                continue
            speedup = bc.ratio(a["time_per_step_s"], b["time_per_step_s"])
            out.append({"size": size, "widths": feats, "precision": prec, "2+1d mode": label.split()[1],
                        "3d_s": a["time_per_step_s"], "3d_layout": a["memory_format"], "3d_mb": a["peak_mem_mb"],
                        "3d_saved_mb": a["saved_mb"],
                        "2+1d_s": b["time_per_step_s"], "2+1d_layout": b["memory_format"], "2+1d_mb": b["peak_mem_mb"],
                        "2+1d_saved_mb": b["saved_mb"], "speedup": speedup,
                        "mem_ratio": bc.ratio(b["peak_mem_mb"], a["peak_mem_mb"]),
                        "saved_ratio": bc.ratio(b["saved_mb"], a["saved_mb"]),
                        "goal_met": bool(speedup >= GOAL_SPEEDUP and b["peak_mem_mb"] < a["peak_mem_mb"])})
    return out


def profile_step(conv: str, size: int, features: Sequence[int], precision: str, layout: str, batch: int,
                 top: int = 8, recompute: str = "off") -> list[dict]:
    """Top operators (self CPU time) of one training step after a warm-up step: the step of
    ``stroke.step.measure_step`` (U-Net, trilinear up-sampling, DiceBCE, SGD) in ``layout``."""
    from torch.profiler import ProfilerActivity, profile

    from seglib.nn.unet import build_model
    from seglib.studies.stroke.step import dice_bce
    from seglib.train.steps import fixed_batch_step

    dev = torch.device("cpu")
    fmt = torch.contiguous_format if layout == "contiguous" else torch.channels_last_3d
    kwargs = {"recompute": recompute} if conv == "2+1d" else {}
    model = build_model("unet", spatial_dims=3, in_channels=2, out_channels=1, features=tuple(features),
                        upsample="linear", conv=conv, **kwargs).to(memory_format=fmt).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, size, size, size, generator=gen).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, size, size, size, generator=gen) > 0.9).float()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    step = fixed_batch_step(model, x, y, dice_bce, opt, dev, precision)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = [{"conv": conv, "layout": layout, "op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share_pct": 100 * e.self_cpu_time_total / total} for e in events]
    return rows[:top] if top else rows


#: operator-name fragments → the part of a training step they belong to (first match wins)
CATEGORIES = (("convolution", ("convolution", "conv2d", "conv3d")),
              ("batch norm + ReLU", ("batch_norm", "threshold", "relu", "clamp_min")),
              ("layout copies", ("copy_", "clone", "contiguous")),
              ("up/down-sampling, concat", ("upsample", "max_pool", "cat")),
              ("optimiser", ("optimizer", "sgd", "foreach", "add_", "mul_")))


def breakdown(profile_rows: Sequence[dict]) -> list[dict]:
    """Self CPU time of one step per category (:data:`CATEGORIES`, the rest "other"), per conv mode,
    with the (2+1)D / 3D ratio per category: where the time of each mode goes."""
    per: dict[str, dict[str, float]] = {}
    for r in profile_rows:
        name = r["op"].lower()
        cat = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        per.setdefault(cat, {}).setdefault(r["conv"], 0.0)
        per[cat][r["conv"]] += r["self_ms"]
    order = [c for c, _ in CATEGORIES] + ["other"]
    rows = [{"part": c, "3d_ms": per[c].get("3d", 0.0), "2+1d_ms": per[c].get("2+1d", 0.0),
             "speedup": bc.ratio(per[c].get("3d", 0.0), per[c].get("2+1d", 0.0))} for c in order if c in per]
    t3, t21 = sum(r["3d_ms"] for r in rows), sum(r["2+1d_ms"] for r in rows)
    rows.append({"part": "whole step", "3d_ms": t3, "2+1d_ms": t21, "speedup": bc.ratio(t3, t21)})
    return rows


def main(argv=None) -> int:
    from seglib.train.device import cpu_has_native_bf16

    p = bc.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="cube sizes (default 32 64 128)")
    p.add_argument("--precisions", nargs="+", default=None, choices=("fp32", "bf16"),
                   help="default fp32 (and bf16 where the CPU has native bf16)")
    p.add_argument("--study-sizes", type=int, nargs="*", default=None,
                   help="sizes for the study's widths 32-512 (default 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 2; 1 from 128^3 up)")
    p.add_argument("--layouts", nargs="+", default=None,
                   help="memory layouts measured (default both); per precision as PREC=LAYOUT, e.g. "
                        "bf16=channels_last_3d fp32=contiguous, to measure only each precision's best")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args(argv)

    with bc.Bench("conv2p1d", args) as bench:
        native = cpu_has_native_bf16()
        if args.quick:
            sizes, study_sizes, widths, study_widths = args.sizes or [16], args.study_sizes or [], (4, 8, 16), None
            plan = [(sizes, widths, "fp32")]
            fresh, batch = False, 1
        else:
            sizes = args.sizes or [32, 64, 128]
            study_sizes = [32] if args.study_sizes is None else args.study_sizes
            widths, study_widths, fresh, batch = ISSUE_WIDTHS, STUDY_WIDTHS, True, args.batch
            precs = args.precisions or (["fp32", "bf16"] if native else ["fp32"])
            plan = []
            for prec in precs:
                plan.append((sizes, widths, prec))
                if study_sizes:
                    plan.append((study_sizes, study_widths, prec))
        if not native:
            bench.note("no native bf16 on this CPU: bf16 is emulated (many times slower than fp32), so it is "
                       "measured only when asked for (--precisions fp32 bf16)")
        rows = []
        for ss, ws, prec in plan:
            for s in ss:
                steps = args.steps or (1 if s >= 128 else 2)
                rows += measure([s], ws, prec, steps, batch, fresh, layouts=layouts_for(args.layouts, prec))
                bench.tables["measurements"] = rows
                bc.write_json(bench.out, {"benchmark": bench.name, "partial": True, "tables": bench.tables,
                                          "load_average": {"start": bench.load["start"], "now": bc.load_average()}})
        bench.add_table("measurements", rows, ["mode", "size", "features", "precision", "memory_format",
                                               "time_per_step_s", "peak_mem_mb", "saved_mb", "params", "steps"],
                        title="every configuration (stroke.step.measure_step; peak = sampled RSS peak minus RSS "
                              "before the model; saved = MiB autograd keeps for the backward pass)")
        comp = compare(rows)
        bench.add_table("comparison", comp, title=f"each mode at its best layout (goal: speedup >= {GOAL_SPEEDUP} "
                                                  f"and 2+1d_mb < 3d_mb)")
        if args.quick:
            bench.note("--quick measures in this process: peak memory is not meaningful (the process peak is "
                       "not reset between configurations)")
        missed = [c for c in comp if not c["goal_met"]] or (comp if args.quick else [])  # quick: exercise it
        if missed and not args.no_profile:
            # where the time goes, at each size whose goal is missed (issue widths, up to 64^3)
            for c in sorted(missed, key=lambda c: (c["size"], c["2+1d mode"])):
                if c["widths"] != "-".join(map(str, widths)) or c["size"] > 64:
                    continue
                feats = [int(f) for f in str(c["widths"]).split("-")]
                rc = "on" if c["2+1d mode"] == "recomputed" else "off"
                prof = profile_step("3d", int(c["size"]), feats, c["precision"], c["3d_layout"], batch, top=None)
                prof += profile_step("2+1d", int(c["size"]), feats, c["precision"], c["2+1d_layout"], batch,
                                     top=None, recompute=rc)
                tag = f"{c['size']}^3 widths {c['widths']} {c['precision']}, (2+1)D {c['2+1d mode']}"
                key = f"{c['size']}_{c['precision']}_{c['2+1d mode']}"
                bench.add_table(f"breakdown_{key}", breakdown(prof),
                                title=f"where the time of one step goes at {tag} (self CPU ms, torch.profiler)")
                top = [r for conv in ("3d", "2+1d") for r in [x for x in prof if x["conv"] == conv][:8]]
                bench.add_table(f"profile_{key}", top, title=f"top operators of one step at {tag}")
        for c in comp:
            bench.note(f"{c['size']}^3 {c['widths']} {c['precision']}: (2+1)D {c['2+1d mode']} {c['speedup']:.2f}x the "
                       f"speed of 3D, peak memory {c['mem_ratio']:.2f}x, kept for backward {c['saved_ratio']:.2f}x "
                       f"-> goal {'met' if c['goal_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
