"""Training throughput on this machine: matmul peak, each study's U-Net step, and fit's overhead.

1. Peak: a large square ``torch.matmul`` in fp32 and bf16 (GFLOP/s = 2n³ / time). Where bf16 is
   emulated (no ``avx512_bf16`` / ``amx_bf16``) the bf16 size is shrunk so one product stays short.
2. One training step (forward, backward, Adam step) of each study's model at its quick size
   (``params/<study>/quick.yaml``) and full size (``params/<study>/full.yaml``, batch 1), plus the
   issue's reference (2D U-Net 32-512 at 128²), in four modes: fp32, fp32 + channels-last,
   bf16 autocast, bf16 + channels-last (``channels_last_3d`` for the 3D model). Items/s and
   achieved GFLOP/s, the FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``
   (convolutions and matrix products; element-wise work is not counted). ``loss_rel_diff``: the
   first step's loss against fp32's (same weights, same batch), a sanity check of each mode.
3. ``seglib.train.fit`` (one epoch, no validation, default settings) beside a bare PyTorch loop
   over the same model, loader, precision and memory format: the engine's overhead.
4. A peer: MONAI's ``BasicUNet`` with the same widths, input and mode beside seglib's U-Net (five-level
   models: study C's and the issue's reference).

The engine's CPU default is ``seglib.train.device.resolve_precision("auto", "cpu")``.

    .venv/bin/python benchmarks/throughput.py [--quick] [--skip-full] [--max-step-s 30]
"""

from __future__ import annotations

import time

import bench_common as bc
import torch

MODES = {  # name: (precision, channels_last)
    "fp32": ("fp32", False),
    "channels_last": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16+channels_last": ("bf16", True),
}
STUDIES = {"A": "stroke", "B": "prostate", "C": "brain"}
IN_CHANNELS = {"stroke": 2, "prostate": 1, "brain": 3}
REFERENCE = {"study": "ref", "size_name": "issue 128²", "spatial_dims": 2, "in_channels": 3,
             "features": (32, 64, 128, 256, 512), "upsample": "transpose", "size": 128, "batch": 4}


# --------------------------------------------------------------------------- configurations
def study_config(study: str, profile: str, full_batch: int = 1) -> dict:
    """Model and input of ``study`` at ``profile`` from ``params/<study>/<profile>.yaml``.

    Study A's quick size is the larger of the quick grid's ``data.size`` values; the full
    profile's batch is replaced by ``full_batch`` (a CPU step at the seeds' batch takes minutes).
    """
    from seglib.config import read_yaml

    p = read_yaml(bc.REPO / "params" / study / f"{profile}.yaml")
    m, d, t = p["model"], p["data"], p["train"]
    size = int(d["size"])
    for grid in p.get("grid") or []:
        if "data.size" in grid:
            size = max(int(s) for s in grid["data.size"])
    return {"study": study, "size_name": profile, "spatial_dims": int(m["spatial_dims"]),
            "in_channels": IN_CHANNELS[study], "features": tuple(int(f) for f in m["features"]),
            "upsample": m.get("upsample", "transpose"), "size": size,
            "batch": int(t["batch_size"]) if profile != "full" else int(full_batch)}


def tiny_config(cfg: dict) -> dict:
    """``--quick``: the same model family at a toy size (a few MFLOPs per step)."""
    out = dict(cfg, size_name=f"{cfg['size_name']} (tiny)", batch=2)
    out["features"] = tuple(max(4, f // 4) for f in cfg["features"])[:3]
    out["size"] = 16 if cfg["spatial_dims"] == 3 else 32
    return out


def build(cfg: dict, seed: int = 0):
    """Model, a batch ``(x, y)`` and the loss of ``cfg`` (weights and data fixed by ``seed``)."""
    from seglib.nn.losses import build_loss
    from seglib.nn.unet import build_model

    torch.manual_seed(seed)
    model = build_model("unet", spatial_dims=cfg["spatial_dims"], in_channels=cfg["in_channels"], out_channels=1,
                        features=cfg["features"], upsample=cfg["upsample"])
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg["batch"], cfg["in_channels"], *([cfg["size"]] * cfg["spatial_dims"]))
    x = torch.randn(shape, generator=gen)
    y = (torch.rand((cfg["batch"], 1, *shape[2:]), generator=gen) > 0.8).float()
    return model, x, y, build_loss("dice_bce")


def step_flops(cfg: dict) -> int:
    """FLOPs of one training step (forward + backward) of ``cfg``, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from seglib.nn.unet import build_model

    with torch.device("meta"):
        model = build_model("unet", spatial_dims=cfg["spatial_dims"], in_channels=cfg["in_channels"], out_channels=1,
                            features=cfg["features"], upsample=cfg["upsample"])
        x = torch.randn(cfg["batch"], cfg["in_channels"], *([cfg["size"]] * cfg["spatial_dims"]))
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return int(counter.get_total_flops())


def memory_format(spatial_dims: int, channels_last: bool):
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def make_step(model, x, y, loss_fn, precision: str, channels_last: bool, spatial_dims: int):
    """A closure running one training step (Adam) in ``precision`` / memory format; returns the loss."""
    from seglib.train.steps import fixed_batch_step

    fmt = memory_format(spatial_dims, channels_last)
    model = model.to(memory_format=fmt).train()
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = fixed_batch_step(model, x, y, loss_fn, opt, torch.device("cpu"), precision)
    return lambda: float(step())


# --------------------------------------------------------------------------- 1. peak
# --------------------------------------------------------------------------- 2. steps
def measure_modes(cfg: dict, steps: int, flops: int, *, max_step_s: float, predict: dict | None = None) -> list[dict]:
    """Every mode of :data:`MODES` on ``cfg``: one warm-up step then ``steps`` timed steps.

    ``predict`` maps a mode to GFLOP/s measured at a smaller size of the same study; a mode whose
    predicted step time (``flops / rate``) exceeds ``max_step_s`` is skipped with a note.
    """
    rows, ref_loss = [], None
    for mode, (precision, cl) in MODES.items():
        row = {"study": cfg["study"], "size": cfg["size_name"], "shape": f"{cfg['batch']}x{cfg['size']}^{cfg['spatial_dims']}",
               "widths": "-".join(map(str, cfg["features"])), "mode": mode, "gflop_per_step": flops / 1e9}
        rate = (predict or {}).get(mode)
        if rate and flops / 1e9 / rate > max_step_s:
            row.update(skipped=f"predicted {flops / 1e9 / rate:.0f} s/step > --max-step-s {max_step_s:g}")
            rows.append(row)
            continue
        model, x, y, loss_fn = build(cfg)
        step = make_step(model, x, y, loss_fn, precision, cl, cfg["spatial_dims"])
        t0 = time.perf_counter()
        first = step()  # warm-up: oneDNN primitive creation; its loss checks the mode against fp32
        warm = time.perf_counter() - t0
        if mode == "fp32":
            ref_loss = first
        times = bc.time_calls(step, repeats=steps, warmup=0, budget_s=max(2 * max_step_s, 4 * warm))
        t = sorted(times)[len(times) // 2]
        row.update(step_s=t, warmup_s=warm, steps=len(times), items_per_s=cfg["batch"] / t,
                   gflops=bc.gflops_per_s(flops, t),
                   loss_rel_diff=abs(first - ref_loss) / abs(ref_loss) if ref_loss else float("nan"))
        rows.append(row)
        del model, step
    fastest = min((r for r in rows if "step_s" in r), key=lambda r: r["step_s"], default=None)
    for r in rows:
        r["vs_fastest"] = bc.ratio(r.get("step_s"), fastest["step_s"]) if fastest else float("nan")
    return rows


# --------------------------------------------------------------------------- 3. fit vs bare loop
def fit_overhead(cfg: dict, steps: int, repeats: int) -> dict:
    """Wall time of ``fit`` (one epoch of ``steps`` batches, no validation, default precision and
    memory format, ``progress=False``) and of a bare loop doing the same work; median of ``repeats``
    alternating runs, each from the same initial weights."""
    from torch.utils.data import TensorDataset

    from seglib.train import TrainSettings, fit, make_loader
    from seglib.train.device import resolve_channels_last, resolve_precision
    from seglib.train.steps import bare_step

    _, x, y, loss_fn = build(dict(cfg, batch=cfg["batch"] * steps))
    loader = make_loader(TensorDataset(x, y), cfg["batch"], shuffle=True, seed=0)
    dev = torch.device("cpu")

    def run_fit(deterministic: bool) -> tuple[float, str, bool]:
        model, *_ = build(dict(cfg, batch=1))
        settings = TrainSettings(epochs=1, optimizer="adam", lr=1e-4, monitor="train_loss", device="cpu",
                                 precision="auto", channels_last="auto", deterministic=deterministic)
        t0 = time.perf_counter()
        h = fit(model, loss_fn, loader, None, settings, progress=False)
        return time.perf_counter() - t0, h.precision, h.channels_last

    def run_bare() -> float:
        model, *_ = build(dict(cfg, batch=1))
        precision = resolve_precision("auto", dev)
        cl = resolve_channels_last("auto", model, dev, precision)
        t0 = time.perf_counter()
        fmt = memory_format(cfg["spatial_dims"], cl)
        model.to(dev, memory_format=fmt).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        for xb, yb in loader:
            bare_step(model, xb.contiguous(memory_format=fmt), yb, loss_fn, opt, dev, precision)
        return time.perf_counter() - t0

    run_bare()  # warm-up of the kernels for this shape
    bare, fit_det, fit_nondet = [], [], []
    precision, cl = "?", False
    for _ in range(repeats):
        bare.append(run_bare())
        t, precision, cl = run_fit(True)
        fit_det.append(t)
        fit_nondet.append(run_fit(False)[0])
    b, f, fn = (bc.summarize(v)["median_s"] for v in (bare, fit_det, fit_nondet))
    return {"study": cfg["study"], "size": cfg["size_name"], "steps": steps, "batch": cfg["batch"],
            "precision": precision, "channels_last": cl, "bare_s": b, "fit_s": f, "fit_nondeterministic_s": fn,
            "overhead_pct": 100 * (bc.ratio(f, b) - 1), "overhead_nondet_pct": 100 * (bc.ratio(fn, b) - 1),
            "repeats": repeats, "within_5pct": bool(bc.ratio(f, b) <= 1.05)}


# --------------------------------------------------------------------------- 4. a peer: MONAI's BasicUNet
def peer_step(cfg: dict, steps: int) -> list[dict]:
    """seglib's U-Net beside MONAI's ``BasicUNet`` with the same widths (five levels; the up-sampling width
    is the first level's), input, precision and memory format (the engine's ``auto``), batch norm, ReLU and
    transposed-convolution up-sampling as seglib's: the median time of a training step (Adam) of each."""
    from monai.networks.nets import BasicUNet

    from seglib.train.device import resolve_channels_last, resolve_precision

    rows = []
    feats = tuple(cfg["features"])
    if len(feats) != 5:
        return rows
    for name in ("seglib UNet", "MONAI BasicUNet"):
        model, x, y, loss_fn = build(cfg)
        if name.startswith("MONAI"):
            torch.manual_seed(0)
            model = BasicUNet(spatial_dims=cfg["spatial_dims"], in_channels=cfg["in_channels"], out_channels=1,
                              features=(*feats, feats[0]), act="relu", norm="batch", bias=False, upsample="deconv")
        precision = resolve_precision("auto", torch.device("cpu"))
        cl = resolve_channels_last("auto", model, torch.device("cpu"), precision)
        step = make_step(model, x, y, loss_fn, precision, cl, cfg["spatial_dims"])
        step()
        t = sorted(bc.time_calls(step, repeats=steps, warmup=0))[steps // 2]
        rows.append({"study": cfg["study"], "size": cfg["size_name"], "model": name, "precision": precision,
                     "channels_last": cl, "step_s": t, "items_per_s": cfg["batch"] / t})
    rows[0]["vs_peer"] = bc.ratio(rows[1]["step_s"], rows[0]["step_s"])  # > 1: seglib faster
    rows[0]["at_least_as_fast"] = "yes" if rows[0]["vs_peer"] >= 0.95 else "no"
    return rows


# --------------------------------------------------------------------------- main
def auto_mode(spatial_dims: int) -> str:
    """The mode (a key of :data:`MODES`) the engine's ``auto`` precision and memory format choose on this
    machine's CPU for a ``spatial_dims`` CNN."""
    from seglib.train.device import resolve_channels_last, resolve_precision

    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu)
    conv = torch.nn.Conv3d(1, 1, 3) if spatial_dims == 3 else torch.nn.Conv2d(1, 1, 3)
    cl = resolve_channels_last("auto", conv, cpu, precision)
    return next(m for m, (p, c) in MODES.items() if p == precision and c == cl)


def recommend(step_rows: list[dict]) -> dict:
    """Which mode is fastest per model, whether ``auto`` chose it (within 5 %: a tie on a loaded machine),
    and how often each mode wins (bf16 modes only count as correct when their first loss is within 5 % of
    fp32's)."""
    wins: dict[str, int] = {m: 0 for m in MODES}
    per_model = []
    keys = list(dict.fromkeys((r["study"], r["size"]) for r in step_rows))
    for key in keys:
        rows = [r for r in step_rows if (r["study"], r["size"]) == key and "step_s" in r
                and not (r["loss_rel_diff"] > 0.05)]
        if not rows:
            continue
        best = min(rows, key=lambda r: r["step_s"])
        wins[best["mode"]] += 1
        fp32 = next((r for r in rows if r["mode"] == "fp32"), None)
        dims = 3 if key[0] == "A" or str(rows[0].get("shape", "")).endswith("^3") else 2
        auto = auto_mode(dims)
        auto_row = next((r for r in rows if r["mode"] == auto), None)
        slower = bc.ratio(auto_row["step_s"], best["step_s"]) if auto_row else float("nan")
        per_model.append({"study": key[0], "size": key[1], "fastest": best["mode"],
                          "speedup_vs_fp32": bc.ratio(fp32["step_s"], best["step_s"]) if fp32 else float("nan"),
                          "auto": auto, "auto_vs_fastest": slower,
                          "auto_is_fastest": ("no: not measured or its loss differs" if auto_row is None else
                                              "yes" if slower <= 1.05 else f"no ({slower:.2f}x slower)")})
    return {"wins": wins, "per_model": per_model}


def main(argv=None) -> int:
    p = bc.parser(__doc__.splitlines()[0])
    p.add_argument("--skip-full", action="store_true", help="skip the full (seed) sizes")
    p.add_argument("--max-step-s", type=float, default=30.0,
                   help="skip a full-size mode whose step is predicted (from the quick size) to take longer")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    args = p.parse_args(argv)
    from seglib.train.device import cpu_has_native_bf16, resolve_precision

    with bc.Bench("throughput", args) as bench:
        native = cpu_has_native_bf16()
        auto = resolve_precision("auto", "cpu")
        bench.note(f"CPU native bf16 (avx512_bf16/amx_bf16): {native}; flags seen: {bc.cpu_info()['flags']}; "
                   f"engine CPU default resolve_precision('auto', cpu) = {auto!r}")

        n_max = 512 if args.quick else 4096
        peak = [bc.matmul_peak(torch.float32, n_max, 1 if args.quick else 3),
                bc.matmul_peak(torch.bfloat16, n_max, 1 if args.quick else 2)]
        bench.add_table("matmul_peak", [{k: v for k, v in r.items() if k != "sizes"} for r in peak],
                        ["dtype", "n", "s", "gflops"], title="1. matmul peak (best size)")
        bench.extra["matmul_peak_sizes"] = peak

        steps = args.steps or (1 if args.quick else 3)
        rows, quick_rates = [], {}
        for letter, study in STUDIES.items():
            cfg = study_config(study, "quick")
            cfg["study"] = letter
            if args.quick:
                cfg = tiny_config(cfg)
            r = measure_modes(cfg, steps, step_flops(cfg), max_step_s=args.max_step_s)
            quick_rates[letter] = {x["mode"]: x["gflops"] for x in r if "gflops" in x}
            rows += r
        fulls = [] if args.skip_full else [dict(study_config(s, "full"), study=k) for k, s in STUDIES.items()]
        if not args.skip_full:
            fulls.append(dict(REFERENCE, study="C"))
        for cfg in fulls:
            if args.quick:
                cfg = tiny_config(cfg)
            rows += measure_modes(cfg, max(1, min(steps, 2)), step_flops(cfg), max_step_s=args.max_step_s,
                                  predict=None if args.quick else quick_rates.get(cfg["study"]))
        bench.add_table("train_step", rows, ["study", "size", "shape", "widths", "mode", "gflop_per_step", "step_s",
                                             "items_per_s", "gflops", "vs_fastest", "loss_rel_diff", "skipped"],
                        title="2. training step per mode (step_s median; gflops = counted FLOPs / step_s)")
        peak32 = peak[0]["gflops"]
        best = max((r.get("gflops", float("nan")) for r in rows if r["mode"] == "fp32"), default=float("nan"))
        bench.note(f"best fp32 training step reaches {best:.3g} GFLOP/s = {100 * bc.ratio(best, peak32):.0f} % of "
                   f"the fp32 matmul peak {peak32:.3g} GFLOP/s")

        rec = recommend(rows)
        bench.add_table("fastest_mode", rec["per_model"], title="fastest correct mode per model")
        bench.extra["recommendation"] = rec

        fit_steps = 2 if args.quick else 10
        fits = []
        for letter, study in STUDIES.items():
            cfg = dict(study_config(study, "quick"), study=letter)
            if args.quick:
                cfg = tiny_config(cfg)
            fits.append(fit_overhead(cfg, fit_steps, 1 if args.quick else 3))
        bench.add_table("fit_overhead", fits, title="3. seglib.train.fit vs a bare loop (same steps, no validation)")
        peers = []
        for cfg in [dict(study_config("brain", "quick"), study="C")] + ([] if args.quick else [REFERENCE]):
            peers += peer_step(cfg, 3 if args.quick else 5)
        bench.add_table("peer", peers, title="4. seglib's U-Net beside MONAI's BasicUNet (same widths, input and mode)")
        if not native:
            bench.note("this CPU has no native bf16: bf16 autocast is emulated (slower than fp32), so the engine's "
                       "'auto' precision correctly stays fp32 here; bf16 numbers above show the cost of forcing it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
