"""Patient-level k-fold cross-validation of a study C profile on real LGG data (default: the CPU recipe).

Every patient of ``--data-dir`` is validated exactly once: the profile's grid is crossed with
``data.fold = 0 … k-1`` (``data.folds = k``), each fold trained through the run cache like any grid (a
fold trained before is read back), then each fold's model (its seeds averaged, as ``seglib predict
--run A --run B`` does, and each seed alone) predicts its held-out patients **at their original
resolution** with ``seglib predict``'s own code (Buda's crop and resize undone, the profile's test-time
flips and post-processing applied), and the per-volume DSC of every patient is pooled.
Printed: one row per fold and the pooled mean [95 % bootstrap CI], median, quartiles, minimum and the
number of complete misses (DSC 0), and the same with the evaluation variants the profile could
choose (no flips, no post-processing) on the same trained weights, so what each buys is measured.

``--held-out DIR`` (a kaggle_3m folder of patients that are not in ``--data-dir``) measures what the
cross-validation cannot: the profile's predictor, every fold's model averaged (``seglib predict`` with all
its runs), on patients none of them saw, beside each fold's model alone and the per-patient gain of the
average over the mean of the single folds. With one folder split in two (links to the patients of each part),
this is a nested evaluation of the fold ensemble.

    .venv/bin/python benchmarks/lgg_cv.py --data-dir ../shared/data/lgg [--folds 5] [--executor dask]
        [--params params/brain/real-cpu.yaml] [-p train.epochs=40 ...] [--held-out DIR]

``--executor dask`` trains the folds side by side (a LocalCluster of ``--workers`` processes,
default 2, each run with the profile's ``train.cpu_threads``). Runs go to ``$SEGLIB_BUILD``'s cache
(default ``build/``), so re-running the script only re-evaluates.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from pathlib import Path

import numpy as np

import bench_common as bc

REPO = Path(__file__).resolve().parents[1]


def variants(train) -> dict[str, dict | None]:
    """The profile's evaluation and the others it could choose on the same weights: test-time flips toggled
    (none <-> left-right), post-processing toggled (largest component <-> none), and both. With several
    seeds the profile's weights are their average (``seglib predict --run A --run B``), and each seed alone
    is scored too (profile's evaluation)."""
    tta = "lr" if train.tta == "none" else "none"
    post = "largest" if train.postprocess == "none" else "none"
    return {f"profile (tta {train.tta}, post {train.postprocess})": None, f"tta {tta}": {"tta": tta},
            f"post {post}": {"postprocess": post}, f"tta {tta}, post {post}": {"tta": tta, "postprocess": post}}


def main(argv: list[str] | None = None) -> int:
    ap = bc.parser(__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=False, default=str(REPO.parent / "shared" / "data" / "lgg"))
    ap.add_argument("--params", default=str(REPO / "params" / "brain" / "real-cpu.yaml"))
    ap.add_argument("--folds", type=int, default=None, help="default: the profile's data.folds, else 5")
    ap.add_argument("--executor", default="local", choices=("local", "dask"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--only", default=None, metavar="K,K",
                    help="train and score only these folds (e.g. 0,1), a quicker look before the full cross-validation; "
                         "the pooled rows then cover their patients only")
    ap.add_argument("--held-out", default=None, metavar="DIR",
                    help="a kaggle_3m folder of other patients (none of --data-dir's): the average of every fold's "
                         "model (what `seglib predict` applies) and each fold's model alone are scored on them")
    args = ap.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        print(f"lgg_cv: --data-dir {args.data_dir}: no such folder (the kaggle_3m folder or its parent)")
        return 2
    sys.path.insert(0, str(REPO))
    import torch

    import pandas as pd

    from seglib.config import ExecutorConfig, load
    from seglib.eval.metrics import case_metrics
    from seglib.eval.stats import mean_ci
    from seglib.nn.ensemble import Ensemble
    from seglib.predict import load_run, predict_case
    from seglib.report.notebooks import paths
    from seglib.studies.collect import run_grid
    from seglib.studies.pipeline import for_cell, prepare
    from seglib.train.device import cpu_threads

    # everything the evaluation after training imports, imported now: the working tree edited while the folds
    # train (tens of minutes) cannot then mix two versions of the code in one evaluation
    for name in ("seglib.studies.brain.data", "seglib.data.preprocess", "seglib.data.readers", "seglib.studies.slices2d",
                 "seglib.eval.metrics", "seglib.data"):
        importlib.import_module(name)
    load1 = bc.load_average()[0]
    if args.folds is None:
        args.folds = load("brain", args.params, args.overrides, data_dir=args.data_dir).data.folds or 5
    cfg = load("brain", args.params, [*args.overrides, f"data.folds={args.folds}"], data_dir=args.data_dir)
    folds = list(range(args.folds))
    if args.only is not None:
        try:
            only = sorted({int(k) for k in args.only.split(",")})
        except ValueError:
            only = [-1]
        if not only or not set(only) <= set(folds):
            print(f"lgg_cv: --only {args.only}: expected folds among 0-{args.folds - 1}, separated by commas")
            return 2
        folds = only
    # a run refit on every patient (data.refit) has no held-out patients to score: the cross-validation is of
    # the recipe, with the validated cells alone
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, refit=False))
    blocks = []
    for b in cfg.grid or ({},):
        kept = {k: v for k, v in b.items() if k != "data.refit"}
        if False in b.get("data.refit", [False]) and kept not in blocks:
            blocks.append(kept)
    grid = [{**block, "data.fold": folds} for block in blocks or ({},)]
    executor = ExecutorConfig(name=args.executor, workers=args.workers if args.executor == "dask" else None)
    cfg = dataclasses.replace(cfg, grid=tuple(grid))
    p = paths(REPO)
    prepared = prepare(cfg, p)
    t0 = time.perf_counter()
    results = run_grid(cfg, prepared, p, progress=False, executor=executor)
    train_s = time.perf_counter() - t0
    rows, fold_rows = [], []
    t1 = time.perf_counter()
    by_fold: dict[int, list] = {}
    for key in results.runs["key"]:  # the runs trained above (a fingerprint taken now could differ: code edited meanwhile)
        study, cell, model, epoch = load_run(p.runs / "brain" / str(key))
        wall = results.runs.loc[results.runs["key"] == key, "wall_s"].iloc[0]
        precision = results.runs.loc[results.runs["key"] == key, "precision"].iloc[0]
        by_fold.setdefault(cell.data.fold, []).append((cell, model.eval(), epoch, wall, precision))
    for fold, members in sorted(by_fold.items()):
        cell, precision = members[0][0], members[0][4]
        fold_prep = for_cell(prepared, cell.data)
        # what the profile predicts: its seeds averaged (``seglib predict --run A --run B``), or its one run
        models = {f"seed {c.seed}": m for c, m, *_ in members} if len(members) > 1 else {}
        models["profile"] = Ensemble([m for _, m, *_ in members]).eval() if len(members) > 1 else members[0][1]
        options = variants(cell.train)
        scores: dict[str, list[float]] = {}
        with cpu_threads(cell.train.cpu_threads), torch.no_grad():
            for cid in fold_prep.val_ids:
                case = fold_prep.case(cid)  # predicted from its image alone, as `seglib predict` does
                for mname, model in models.items():
                    for name, change in (options.items() if mname == "profile" else [(mname, None)]):
                        c = cell if change is None else dataclasses.replace(cell, train=dataclasses.replace(cell.train, **change))
                        mask = predict_case(study, c, model, case, torch.device("cpu"), precision)
                        dsc = case_metrics(mask, case.mask, spacing=case.spacing)["dice"]
                        scores.setdefault(name, []).append(dsc)
                        rows.append({"variant": name, "fold": fold, "case_id": cid, "dice": dsc})
        fold_rows.append({"fold": fold, "seeds": ",".join(str(c.seed) for c, *_ in members),
                          "val patients": len(fold_prep.val_ids),
                          "best epochs": ",".join(str(e) for _, _, e, *_ in members),
                          "train wall s": max(w for *_, w, _ in members),
                          **{f"DSC {v}": float(np.nanmean(sc)) for v, sc in scores.items()}})
    eval_s = time.perf_counter() - t1
    print(f"lgg_cv: {len(prepared.cases)} patients, {args.folds} folds{f' (only {args.only})' if args.only else ''}, profile {Path(args.params).name} "
          f"{' '.join(args.overrides)}; training {train_s:.0f} s ({args.executor}), evaluation {eval_s:.0f} s; "
          f"{'native bf16' if bc.cpu_info()['native_bf16'] else 'no native bf16'}, {bc.cpu_info()['cores']} cores")
    print(bc.format_table(fold_rows))
    pooled = []
    df = pd.DataFrame(rows)
    for name in dict.fromkeys(df["variant"]):
        d = df[df["variant"] == name].groupby("case_id")["dice"].mean().to_numpy(float)
        ci = mean_ci(d, rng=0)
        q1, med, q3 = np.nanpercentile(d, [25, 50, 75])
        pooled.append({"evaluation": name, "patients": int(np.isfinite(d).sum()), "mean DSC": ci["mean"],
                       "95% CI": f"[{ci['low']:.3f}, {ci['high']:.3f}]", "median": med, "q1": q1, "q3": q3,
                       "min": float(np.nanmin(d)), "DSC = 0": int((d == 0).sum()), "DSC < 0.5": int((d < 0.5).sum())})
    print(bc.format_table(pooled))
    held = held_out_scores(args.held_out, by_fold, study, prepared) if args.held_out else []
    if held:
        print(bc.format_table(held))
    warning = bc.load_warning(load1)
    if warning:
        print(warning)
    bc.write_json(p.build / "benchmarks" / "lgg_cv.json",
                  {"folds": fold_rows, "pooled": pooled, "per_case": rows, "held_out": held, "train_s": train_s,
                   "eval_s": eval_s,
                   "params": args.params, "overrides": args.overrides, "environment": bc.environment(),
                   "load_start": load1, "load_end": bc.load_average()[0]})
    return 0


def held_out_scores(folder: str, by_fold: dict, study: str, prepared) -> list[dict]:
    """Patients none of the runs saw, each predicted by the average of every run (``seglib predict`` with every
    fold's and seed's ``--run``) and by each fold's runs alone: mean per-volume DSC [95 % CI], median, and the
    ensemble's paired gain over the mean of the single folds (per patient, with its bootstrap CI)."""
    import torch

    from seglib.data import load_cases
    from seglib.eval.metrics import case_metrics
    from seglib.eval.stats import mean_ci
    from seglib.nn.ensemble import Ensemble
    from seglib.predict import predict_case
    from seglib.train.device import cpu_threads

    seen = {str(c.id) for c in prepared.cases}
    cases = [c for c in load_cases("lgg", folder) if c.mask is not None]
    overlap = sorted(seen & {str(c.id) for c in cases})
    if overlap:
        raise SystemExit(f"lgg_cv: --held-out {folder}: {len(overlap)} of its patients are in --data-dir "
                         f"(e.g. {overlap[0]}): expected other patients")
    members = [(fold, cell, model, precision) for fold, ms in sorted(by_fold.items()) for cell, model, _, _, precision in ms]
    cell, precision = members[0][1], members[0][3]
    models = {"all folds averaged": Ensemble([m for _, _, m, _ in members]).eval()}
    for fold in sorted(by_fold):
        ms = [m for f, _, m, _ in members if f == fold]
        models[f"fold {fold} alone"] = ms[0] if len(ms) == 1 else Ensemble(ms).eval()
    scores: dict[str, list[float]] = {k: [] for k in models}
    with cpu_threads(cell.train.cpu_threads), torch.no_grad():
        for case in cases:
            for name, model in models.items():
                mask = predict_case(study, cell, model, case, torch.device("cpu"), precision)
                scores[name].append(case_metrics(mask, case.mask, spacing=case.spacing)["dice"])
    arr = {k: np.asarray(v, float) for k, v in scores.items()}
    singles = np.mean([v for k, v in arr.items() if k != "all folds averaged"], axis=0)
    rows = []
    for name, d in [*arr.items(), ("mean of the single folds", singles),
                    ("gain: averaged - mean of single folds", arr["all folds averaged"] - singles)]:
        ci = mean_ci(d, rng=0)
        rows.append({"held-out evaluation": name, "patients": len(d), "mean DSC": ci["mean"],
                     "95% CI": f"[{ci['low']:.3f}, {ci['high']:.3f}]", "median": float(np.nanmedian(d)),
                     "min": float(np.nanmin(d))})
    return rows


if __name__ == "__main__":
    sys.exit(main())
