"""Patch samplers of study A: draws per accepted patch and patches per second, naive rejection
(as published, bounded) vs lesion-aware, by threshold and patch size.

Sources: ISLES'22 phantoms (``seglib.data.phantoms``, written under ``build/benchmarks/``, at the
real DWI grid 112x112x73) and the real ISLES'22 case ``sub-strokecase0009`` from ``../shared/data``
(skipped with a note where absent). For every source, patch size, threshold and sampler,
``n_patches`` patches are requested per case with ``seglib.data.sampling.rejection_sample`` /
``lesion_aware_sample`` (rejection capped at ``max_draws``, lesion-centred fallback; lesion-aware draws once,
uniformly among the positions that reach the threshold). ``draws_per_accepted``
is total draws / accepted patches (``acceptance_stats``); ``exact_draws`` is the rejection
sampler's exact expected draws 1/p from ``PatchIndex.acceptance_probability`` (mean over cases),
which the cap cannot bias. Goal: >= 100x fewer draws for the lesion-aware sampler at 0.4 (the reduction
is the rejection sampler's own draws per patch, so it reaches 100x only where those are >= 100).

    .venv/bin/python benchmarks/samplers.py [--quick] [--patch-sizes 16 32 64]
"""

from __future__ import annotations

import time

import bench_common as bc
import numpy as np

THRESHOLDS = (0.2, 0.4, 0.6)
GOAL_REDUCTION = 100.0
REAL_ROOT = bc.REPO.parent / "shared" / "data" / "isles22"
REAL_CASE = "sub-strokecase0009"


def phantom_masks(n_cases: int, shape: tuple[int, int, int], seed: int = 0) -> list[tuple[str, np.ndarray]]:
    from seglib.data import load_cases, with_masks
    from seglib.data.phantoms import write_dataset

    root = bc.OUT_DIR / f"phantoms-isles22-{n_cases}-{'x'.join(map(str, shape))}-{seed}"
    write_dataset("isles22", root, n_cases + 1, shape=shape, seed=seed)  # +1: the writer's unlabelled case
    return [(c.id, np.asarray(c.mask)) for c in with_masks(load_cases("isles22", root))]


def real_masks() -> list[tuple[str, np.ndarray]] | None:
    from seglib.data import load_cases, with_masks

    if not REAL_ROOT.is_dir():
        return None
    cases = [c for c in with_masks(load_cases("isles22", REAL_ROOT)) if c.id.endswith(REAL_CASE) or c.id == REAL_CASE]
    return [(c.id, np.asarray(c.mask)) for c in cases] or None


def run_sampler(masks, patch: int, sampler: str, threshold: float, n_patches: int, max_draws: int,
                seed: int = 0) -> dict:
    """Request ``n_patches`` patches per case; counts, timings and (rejection) the exact 1/p."""
    from seglib.data.sampling import PatchIndex, acceptance_stats, lesion_aware_sample, rejection_sample

    rng = np.random.default_rng([seed, patch, int(threshold * 100), sampler == "rejection"])
    draws, p_exact, index_s, sample_s = [], [], 0.0, 0.0
    for _, mask in masks:
        size = min(patch, *mask.shape)
        t0 = time.perf_counter()
        index = PatchIndex(mask, size)
        _ = index.lesion_voxels, index.background_voxels  # cached arrays the lesion-aware sampler needs
        index_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n_patches):
            if sampler == "rejection":
                draws.append(rejection_sample(index, size, threshold, rng, max_draws=max_draws))
            else:
                draws.append(lesion_aware_sample(index, size, rng, threshold=threshold, max_draws=max_draws))
        sample_s += time.perf_counter() - t0
        if sampler == "rejection":
            p_exact.append(index.acceptance_probability(threshold))
    st = acceptance_stats(draws)
    p = np.array(p_exact, float)
    return {"sampler": sampler, "threshold": threshold, "patch": patch, "cases": len(masks),
            "requested": st["n_patches"], "acceptance_rate": st["acceptance_rate"],
            "draws_per_accepted": st["draws_per_accepted"],
            "exact_draws": float(np.mean(1 / p[p > 0])) if (p > 0).any() else float("nan"),
            "patches_per_s": bc.ratio(st["n_patches"], sample_s), "index_s": index_s,
            "lesion_fraction": st["mean_lesion_fraction"], "fallbacks": st["fallback_count"],
            "fallback_reasons": ", ".join(f"{k}: {v}" for k, v in sorted(st["fallbacks"].items())) or "-"}


def reductions(rows: list[dict]) -> list[dict]:
    """Rejection / lesion-aware draws per accepted patch, per (source, patch, threshold)."""
    out = []
    keys = list(dict.fromkeys((r["source"], r["patch"], r["threshold"]) for r in rows))
    for source, patch, t in keys:
        sel = {r["sampler"]: r for r in rows if (r["source"], r["patch"], r["threshold"]) == (source, patch, t)}
        if len(sel) < 2:
            continue
        rej, la = sel["rejection"], sel["lesion_aware"]
        measured = bc.ratio(rej["draws_per_accepted"], la["draws_per_accepted"])
        exact = bc.ratio(rej["exact_draws"], la["draws_per_accepted"])
        out.append({"source": source, "patch": patch, "threshold": t,
                    "rejection_draws": rej["draws_per_accepted"], "rejection_exact": rej["exact_draws"],
                    "lesion_aware_draws": la["draws_per_accepted"], "reduction": measured,
                    "reduction_exact": exact, "speedup_patches_per_s": bc.ratio(la["patches_per_s"],
                                                                                rej["patches_per_s"]),
                    "goal_100x": "-" if t != 0.4 else ("met" if (exact if np.isfinite(exact) else measured)
                                                       >= GOAL_REDUCTION else "NOT met")})
    return out


def main(argv=None) -> int:
    p = bc.parser(__doc__.splitlines()[0])
    p.add_argument("--patch-sizes", type=int, nargs="+", default=None, help="default 16 32 64")
    p.add_argument("--n-patches", type=int, default=None, help="patches requested per case (default 20)")
    p.add_argument("--max-draws", type=int, default=None, help="draw cap per patch (default 100000)")
    p.add_argument("--phantom-cases", type=int, default=None, help="labelled phantom cases (default 8)")
    args = p.parse_args(argv)
    quick = args.quick
    patches = args.patch_sizes or ([16] if quick else [16, 32, 64])
    n_patches = args.n_patches or (3 if quick else 20)
    max_draws = args.max_draws or (2000 if quick else 100_000)
    n_cases = args.phantom_cases or (2 if quick else 8)
    shape = (48, 48, 40) if quick else (112, 112, 73)

    with bc.Bench("samplers", args) as bench:
        sources = {f"phantoms {n_cases}x{'x'.join(map(str, shape))}": phantom_masks(n_cases, shape)}
        real = real_masks()
        if real is None:
            bench.note(f"real ISLES'22 case {REAL_CASE} not found under {REAL_ROOT}: skipped")
        else:
            m = real[0][1]
            sources[f"real {REAL_CASE}"] = real
            bench.note(f"real case {real[0][0]}: mask {m.shape}, {int((m > 0).sum())} lesion voxels")
        for name, masks in sources.items():
            sizes = [int((m > 0).sum()) for _, m in masks]
            bench.note(f"{name}: lesion voxels per case min {min(sizes)} median {int(np.median(sizes))} max {max(sizes)}")
        rows = []
        for name, masks in sources.items():
            for patch in patches:
                if patch > min(min(m.shape) for _, m in masks):
                    bench.note(f"{name}: patch {patch}^3 larger than the volume, skipped")
                    continue
                for t in THRESHOLDS:
                    for sampler in ("rejection", "lesion_aware"):
                        rows.append({"source": name, **run_sampler(masks, patch, sampler, t, n_patches, max_draws)})
        bench.add_table("samplers", rows, ["source", "patch", "threshold", "sampler", "acceptance_rate",
                                           "draws_per_accepted", "exact_draws", "patches_per_s", "lesion_fraction",
                                           "fallbacks", "fallback_reasons"],
                        title=f"samplers ({n_patches} patches per case, cap {max_draws} draws)")
        red = reductions(rows)
        bench.add_table("reduction", red, title="draws: rejection / lesion-aware (reduction_exact uses the exact 1/p)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
