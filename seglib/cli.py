"""The ``seglib`` command: ``run``, ``report``, ``status``, ``predict``, ``check``.

Every command validates its parameters before anything expensive starts.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

from seglib import __version__
from seglib.config import STUDIES, ConfigError, as_dict, load

log = logging.getLogger("seglib")
#: the quick profile's notebooks, longest first: with two at a time, the shortest goes last
LONGEST_FIRST = ("brain", "prostate", "stroke")


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", metavar="FILE", help="YAML parameter file (default: params/<study>/<profile>.yaml)")
    p.add_argument("--data-dir", metavar="DIR", help="root of the real dataset (default: synthetic phantoms)")
    p.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter, e.g. -p train.epochs=3 (repeatable)")


def _add_executor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "dask", "slurm"), default=None,
                   help="where the runs train (default: the parameters' executor section, else local)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="with --executor dask: an existing Dask cluster (default: a LocalCluster for the grid)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --executor dask: LocalCluster worker processes (default: one per GPU, else per core)")


def _executor_overrides(args) -> list[str]:
    out = []
    if getattr(args, "executor", None):
        out.append(f"executor.name={args.executor}")
    if getattr(args, "scheduler", None):
        out.append(f"executor.scheduler={args.scheduler}")
    if getattr(args, "workers", None) is not None:
        out.append(f"executor.workers={args.workers}")
    return out


def _load(study: str, args) -> "object":
    params_file = args.params
    overrides = list(args.overrides) + _executor_overrides(args)
    if params_file is None and getattr(args, "profile", None):
        overrides.insert(0, f"profile={args.profile}")
    return load(study, params_file, overrides, data_dir=args.data_dir)


def cmd_check(args) -> int:
    studies = STUDIES if args.study == "all" else (args.study,)
    for s in studies:
        cfg = _load(s, args)
        print(f"{s}: ok (profile {cfg.profile}, config hash {cfg.hash})")
        if args.show:
            print(json.dumps(as_dict(cfg), indent=1))
    return 0


def cmd_run(args) -> int:
    from seglib.report.notebooks import paths

    studies = STUDIES if args.study == "all" else (args.study,)
    configs = [_load(s, args) for s in studies]  # validate all before running any
    _raise_failures(_execute(configs, paths(), args))
    return 0


def _raise_failures(failures: dict) -> None:
    from seglib.report.notebooks import NotebookFailed

    for e in failures.values():  # a full or read-only disk is said as such, not as a failed notebook
        if isinstance(e, OSError) and (e.errno in DISK_ERRNOS or isinstance(e, PermissionError)):
            raise e
    if failures:
        raise NotebookFailed(" | ".join(str(e) for e in failures.values())
                             + (" (the other notebooks ran to the end and were kept)" if len(failures) > 1 else ""))


def _execute(configs, p, args) -> dict:
    """Execute ``configs`` (``--jobs`` at a time, longest first); print each as it ends; return the failures."""
    from seglib.report.notebooks import default_jobs, run_notebooks

    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: expected a number of notebooks of at least 1.")
    jobs = args.jobs or default_jobs(len(configs))
    configs = sorted(configs, key=lambda c: LONGEST_FIRST.index(c.study))
    if jobs > 1 and len(configs) > 1:
        print(f"executing {', '.join(c.study for c in configs)}, {min(jobs, len(configs))} at a time "
              "(cell output is not echoed; each executed notebook has it)")

    def done(study, result, seconds):
        status = (f"failed after {seconds:.0f} s" if isinstance(result, Exception)
                  else f"executed in {seconds:.0f} s -> {result}")
        print(f"{study}: {status}", flush=True)
        if not isinstance(result, Exception):
            for line in predict_hints(study, p):
                print(line, flush=True)

    results = run_notebooks(configs, p, jobs=jobs, log_output=not args.quiet, progress_bar=not args.quiet,
                            on_done=done)
    return {s: r for s, r in results.items() if isinstance(r, Exception)}


#: the parts of a run's label (``"loss=dice_bce, fold=2 (seed 1)"``) that may differ within one ensemble
#: (:data:`seglib.predict.ENSEMBLE_MAY_DIFFER`): its fold and its seed
_MEMBER_PARTS = re.compile(r"^(?:data\.)?fold=(\d+)$")
_SEED_PART = re.compile(r" \(seed (\d+)\)$")


def _ensemble_group(label: str) -> tuple[str, str | None, str | None]:
    """``(the label without fold and seed, fold, seed)`` of a run's label."""
    m = _SEED_PART.search(label)
    seed = m.group(1) if m else None
    rest, fold = [], None
    for part in (label[:m.start()] if m else label).split(", "):
        f = _MEMBER_PARTS.match(part)
        if f:
            fold = f.group(1)
        elif part:
            rest.append(part)
    return ", ".join(rest), fold, seed


def predict_hints(study: str, p, most: int = 2) -> list[str]:
    """For a grid of at most ``most`` configurations (folds and seeds of one configuration count once), the
    ``seglib predict`` line that applies each one's trained runs (all its folds and seeds, averaged) to another
    folder; nothing for larger grids or without results."""
    try:
        runs = json.loads((p.executed / study / "results.json").read_text())["provenance"]["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    refit = [r for r in runs if isinstance(r, dict) and r.get("refit")]
    runs = refit or runs  # runs trained on every patient (data.refit) are the ones to apply
    groups: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for r in runs:
        label, fold, seed = _ensemble_group(str(r.get("label", "")))
        groups.setdefault(label, []).append((str(r["run"]), fold, seed))
    if not groups or len(groups) > most:
        return []
    lines = []
    for label, members in groups.items():
        flags = " ".join(f"--run {p.runs / study / k}" for k, _, _ in members)
        folds = sorted({f for _, f, _ in members if f is not None}, key=int)
        seeds = sorted({s for _, _, s in members if s is not None}, key=int)
        name = (label or "the configuration") + (" trained on every patient (data.refit)" if refit else "")
        if len(members) == 1:
            what = name
        elif len(folds) > 1 and len(seeds) > 1:
            what = f"the {len(members)} runs ({len(folds)} folds x {len(seeds)} seeds) of {name} averaged"
        else:
            what = f"the {len(members)} {'folds' if len(folds) > 1 else 'seeds'} of {name} averaged"
        lines.append(f"{study}: to predict another folder with {what}: seglib predict {flags} --data-dir DIR")
    return lines


def cmd_report(args) -> int:
    from seglib.report.notebooks import is_up_to_date, paths
    from seglib.report.render import render_site

    p = paths()
    configs = [_load(s, args) for s in STUDIES]
    missing = [s for s in STUDIES if not p.notebook(s).is_file()]
    for s in missing:
        print(f"{s}: notebooks/{s}.ipynb does not exist yet: its page is left out of the site")
    t0 = time.perf_counter()
    todo = []
    for cfg in configs:
        if cfg.study in missing:
            continue
        if is_up_to_date(cfg, p) and not args.force:
            print(f"{cfg.study}: executed notebook is up to date (profile {cfg.profile})")
            continue
        todo.append(cfg)
    _raise_failures(_execute(todo, p, args))
    result = render_site(p.executed, p.root / "_site", renderer=args.renderer, pdf=not args.no_pdf,
                         site_src=p.build / "site_src", quarto_config=p.root / "_quarto.yml")
    print(f"renderer: {result['renderer']}")
    if result.get("pdf_note"):
        print(result["pdf_note"])
    for pdf in result.get("pdf") or []:
        print(f"pdf: {pdf}")
    print(f"report built in {time.perf_counter() - t0:.0f} s")
    print(f"site: {Path(result['index']).resolve()}")
    return 0


def cmd_status(args) -> int:
    from seglib.paths import paths
    from seglib.runs import RunCache
    from seglib.runs.status import format_status, grid_status
    from seglib.studies.collect import grid_specs
    from seglib.studies.pipeline import prepare

    cfg = _load(args.study, args)
    p = paths()
    specs, axes = grid_specs(cfg, prepare(cfg, p))
    rows = grid_status(specs, axes, RunCache(p.runs))
    print(format_status(rows))
    return 0


def cmd_predict(args) -> int:
    from seglib.predict import predict_folder

    summary = predict_folder([Path(r) for r in args.run], Path(args.data_dir), Path(args.out) if args.out else None,
                             device=args.device)
    print(json.dumps(summary, indent=1, default=str))
    if summary.get("dice_mean") is not None:
        print(f"seglib predict: per-volume DSC over the {summary['cases_with_mask']} cases with a mask: mean "
              f"{summary['dice_mean']:.3f}, median {summary['dice_median']:.3f} (per case: {summary['out']}/metrics.csv)",
              file=sys.stderr)  # stdout stays the JSON summary
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"seglib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="validate parameters, then execute a study notebook with papermill")
    p.add_argument("study", choices=(*STUDIES, "all"))
    p.add_argument("--profile", choices=("smoke", "quick", "full"), default=None,
                   help="use params/<study>/<profile>.yaml when --params is not given (default quick)")
    p.add_argument("--quiet", action="store_true", help="no cell log output or progress bar")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="with 'all': notebooks executed at once (default: every notebook, up to two per CPU core)")
    _add_params(p)
    _add_executor(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="execute missing or outdated notebooks, then render the site")
    p.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    p.add_argument("--renderer", choices=("auto", "quarto", "fallback"), default="auto")
    p.add_argument("--force", action="store_true", help="re-execute every notebook (runs stay cached)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="notebooks executed at once (default: every notebook, up to two per CPU core)")
    p.add_argument("--no-pdf", action="store_true")
    p.add_argument("--quiet", action="store_true")
    _add_params(p)
    _add_executor(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("status", help="each run of a study's grid: done, running (where, since when), partial, "
                                      "failed (its error) or not started, and its epoch")
    p.add_argument("study", choices=STUDIES)
    p.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    _add_params(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("predict", help="apply a trained run to a dataset folder")
    p.add_argument("--run", required=True, action="append",
                   help="a run folder (build/runs/<study>/<key>); repeat it to average several runs of one "
                        "configuration (their seeds or folds): an ensemble")
    p.add_argument("--data-dir", required=True, help="dataset folder of the same kind as the run's")
    p.add_argument("--out", default=None,
                   help="output folder for masks, metrics.csv and summary.json, outside the data and every run "
                        "(default: build/predictions/<study>/<run key>/<data folder name>-<hash of its path>)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("check", help="validate parameters and print the config hash")
    p.add_argument("study", choices=(*STUDIES, "all"))
    p.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    p.add_argument("--show", action="store_true", help="print the resolved configuration")
    _add_params(p)
    p.set_defaults(func=cmd_check)
    return parser


#: errors of the disk rather than of the input: full, read-only, not ours to write
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _what(args) -> str:
    """The command line being run, for the one-line messages: ``seglib run brain``."""
    words = ["seglib", args.command]
    if getattr(args, "study", None):
        words.append(args.study)
    if args.command == "predict":
        for r in args.run if isinstance(args.run, list) else [args.run]:
            words += ["--run", str(r)]
    return " ".join(words)


def _paths_of(e: OSError) -> str:
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return " -> ".join(names) if names else "a file under the build folder"


def disk_error_message(e: OSError, what: str) -> str | None:
    """One line for a full or read-only disk (``None`` for any other OSError)."""
    where = _paths_of(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"seglib: no space left on the device to write {where} ({what}): free some space or set "
                f"SEGLIB_BUILD to a folder on a larger disk, then run again (finished runs are kept).")
    if e.errno == errno.EROFS:
        return (f"seglib: cannot write {where} ({what}): the file system is read-only; set SEGLIB_BUILD to a "
                f"writable folder.")
    if e.errno in (errno.EACCES, errno.EPERM) or isinstance(e, PermissionError):
        return (f"seglib: cannot write {where} ({what}): permission denied; make it writable or set "
                f"SEGLIB_BUILD to a writable folder.")
    return None


def _interrupt_kernels_first(signum, frame):
    """SIGINT: interrupt the Jupyter kernels this process started (as a terminal's Ctrl-C would), give them a
    moment to stop the running cell, then raise KeyboardInterrupt here. A kernel shut down in the middle of
    a cell prints a traceback of its own; an interrupted one does not."""
    try:
        from seglib.report.notebooks import interrupt_children

        if interrupt_children():
            time.sleep(1.0)
    except Exception:  # noqa: BLE001 - interrupting must never fail
        pass
    raise KeyboardInterrupt


def _quiet_abandoned_tasks() -> None:
    """After Ctrl-C, nbclient's cell task that the interrupt cut short ends with an error no one reads;
    asyncio would log it with a traceback when the task is collected. The one line said it all."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    previous = None
    if args.command in ("run", "report") and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _interrupt_kernels_first)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _quiet_abandoned_tasks()
        print(f"seglib: interrupted (Ctrl-C) during {_what(args)}; runs that had finished are kept in the cache "
              f"and the next run goes on from there.", file=sys.stderr, flush=True)
        return 130
    except ConfigError as e:
        print(f"seglib: invalid parameters: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI reports any failure in one line
        from seglib.report.notebooks import NotebookFailed

        if isinstance(e, OSError):
            message = disk_error_message(e, _what(args))
            if message is not None:
                print(message, file=sys.stderr)
                return 1
        if isinstance(e, NotebookFailed) and "raised KeyboardInterrupt" in str(e):
            _quiet_abandoned_tasks()
            print(f"seglib: interrupted (Ctrl-C) during {_what(args)} while a notebook cell ran; {e}",
                  file=sys.stderr)
            return 130
        if isinstance(e, (NotebookFailed, FileNotFoundError, ValueError)):
            print(f"seglib: {e}", file=sys.stderr)
            return 1
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
