"""What the benchmark scripts share: command line, load average, timing, tables and JSON output.

Every script is one command (``.venv/bin/python benchmarks/<name>.py [--quick]``) that prints a
table and writes ``build/benchmarks/<name>.json``. The load average is printed at the start and
at the end, with a warning when it is above :data:`LOAD_WARN`: on a small shared machine another
process training a model can make a convolution many times slower, so a timing taken under load
measures the load, not the code.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: A load average above this (per machine, not per core) makes timings unreliable here.
LOAD_WARN = 1.5
OUT_DIR = REPO / "build" / "benchmarks"


# --------------------------------------------------------------------------- arithmetic
def gflops_per_s(flops: float, seconds: float) -> float:
    """Achieved GFLOP/s: ``flops / seconds / 1e9`` (NaN when ``seconds`` is not positive)."""
    if not seconds or seconds <= 0 or not math.isfinite(seconds):
        return float("nan")
    return float(flops) / float(seconds) / 1e9


def matmul_flops(n: int, m: int | None = None, k: int | None = None) -> int:
    """FLOPs of an (n×k) @ (k×m) matrix product: one multiply and one add per term, ``2·n·m·k``."""
    m = n if m is None else m
    k = n if k is None else k
    return 2 * int(n) * int(m) * int(k)


def matmul_peak(dtype: torch.dtype, n_max: int, repeats: int, call_budget_s: float = 1.5) -> dict:
    """Best GFLOP/s of ``a @ b`` for square n×n ``dtype`` matrices, n doubling from 256 up to ``n_max``
    while the next size is predicted (n³ scaling) to take under ``call_budget_s`` per product."""
    import torch

    n, best, rows = 256, None, []
    while True:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        times = time_calls(lambda: torch.matmul(a, b), repeats=repeats, warmup=1, budget_s=4 * call_budget_s)
        t = min(times)
        rate = gflops_per_s(matmul_flops(n), t)
        rows.append({"n": n, "s": t, "gflops": rate})
        if best is None or rate > best["gflops"]:
            best = {"n": n, "s": t, "gflops": rate}
        if 2 * n > n_max or t * 8 > call_budget_s:
            break
        n *= 2
    return {"dtype": str(dtype).replace("torch.", ""), **best, "sizes": rows}


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero or either is not finite."""
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return float("nan")
    if b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return float("nan")
    return a / b


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of repeated timings (seconds); NaNs for an empty list."""
    if not times:
        return {"median_s": float("nan"), "min_s": float("nan"), "max_s": float("nan"), "repeats": 0}
    return {"median_s": float(statistics.median(times)), "min_s": float(min(times)), "max_s": float(max(times)),
            "repeats": len(times)}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1, budget_s: float | None = None) -> list[float]:
    """Wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    With ``budget_s`` the repeats stop early once their total exceeds it (at least one is kept),
    so a configuration much slower than expected cannot blow the script's time budget.
    """
    for _ in range(int(warmup)):
        fn()
    times: list[float] = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and sum(times) > budget_s:
            break
    return times


# --------------------------------------------------------------------------- tables
def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and (abs(v) >= 10 ** 6 or abs(v) < 10 ** -(digits - 1)):
            return f"{v:.{digits}g}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3,
                 title: str | None = None) -> str:
    """A plain-text table: a header, a rule, one line per row; numbers right-aligned.

    ``columns`` defaults to every key in first-appearance order; a missing value prints ``-``;
    floats get ``digits`` significant digits (whole numbers from 100 up).
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c), digits) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) or r.get(c) is None
                   for r in rows) for c in columns]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out += [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


# --------------------------------------------------------------------------- machine
def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (NaNs where the OS has none)."""
    try:
        return tuple(float(x) for x in os.getloadavg())  # type: ignore[return-value]
    except (OSError, AttributeError):
        return (float("nan"),) * 3  # type: ignore[return-value]


def load_warning(load1: float, threshold: float = LOAD_WARN) -> str | None:
    """The warning to print for a 1-minute load average, or None when it is at most ``threshold``."""
    if math.isfinite(load1) and load1 > threshold:
        return (f"WARNING: load average {load1:.2f} > {threshold}: other processes share the CPU, "
                f"timings are inflated and not comparable with an idle machine")
    return None


def cpu_info() -> dict[str, Any]:
    """CPU model, core count and the SIMD / bf16 flags of ``/proc/cpuinfo`` that matter to PyTorch."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        for ln in text.splitlines():
            if ln.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = ln.partition(":")[2].strip()
            if ln.startswith("flags"):
                flags = set(ln.partition(":")[2].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags],
            "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags)}


def environment() -> dict[str, Any]:
    import torch

    from seglib.train.device import CPU_AUTO_BF16, cpu_has_native_bf16, resolve_precision

    return {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_info(), "cpu_has_native_bf16": cpu_has_native_bf16(), "CPU_AUTO_BF16": CPU_AUTO_BF16,
            "auto_precision_cpu": resolve_precision("auto", "cpu"),
            "date": _dt.datetime.now().isoformat(timespec="seconds")}


# --------------------------------------------------------------------------- a benchmark run
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fast sanity pass: tiny sizes, 1-2 repeats")
    p.add_argument("--out", type=Path, default=None, help=f"JSON output (default {OUT_DIR}/<name>.json)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's own choice; 1 with --quick, which is a sanity pass)")
    return p


class Bench:
    """One benchmark invocation: prints the load average at start and end and writes the JSON.

    >>> with Bench("demo", args) as b:       # doctest: +SKIP
    ...     b.add_table("main", rows, columns)
    """

    def __init__(self, name: str, args: argparse.Namespace | None = None):
        self.name = name
        self.quick = bool(getattr(args, "quick", False))
        self.out = getattr(args, "out", None) or OUT_DIR / f"{name}.json"
        self.threads = getattr(args, "threads", None) or (1 if self.quick else None)
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.load: dict[str, Any] = {}
        self._t0 = 0.0

    def __enter__(self) -> Bench:
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
            os.environ["OMP_NUM_THREADS"] = str(int(self.threads))  # child processes (fresh measurements)
        self._t0 = time.perf_counter()
        self.load["start"] = load_average()
        print(f"== {self.name}{' (--quick)' if self.quick else ''}: torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; load average at start {self._fmt_load(self.load['start'])}")
        warn = load_warning(self.load["start"][0])
        if warn:
            print(warn)
        return self

    @staticmethod
    def _fmt_load(load: Iterable[float]) -> str:
        return " ".join(f"{x:.2f}" for x in load)

    def note(self, text: str) -> None:
        print(f"note: {text}")
        self.notes.append(text)

    def add_table(self, key: str, rows: list[dict[str, Any]], columns: Sequence[str] | None = None,
                  title: str | None = None, digits: int = 3) -> None:
        self.tables[key] = rows
        print()
        print(format_table(rows, columns, digits=digits, title=title or key))
        sys.stdout.flush()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.load["end"] = load_average()
        wall = time.perf_counter() - self._t0
        print(f"\nload average at end {self._fmt_load(self.load['end'])}; wall {wall:.1f} s")
        warn = load_warning(max(self.load["start"][0], self.load["end"][0]))
        if warn:
            print(warn)
            self.notes.append(warn)
        payload = {"benchmark": self.name, "quick": self.quick, "wall_s": wall, "load_average": self.load,
                   "environment": environment(), "tables": self.tables, "notes": self.notes, **self.extra}
        if exc_type is not None:
            payload["error"] = f"{exc_type.__name__}: {exc}"
        write_json(self.out, payload)
        print(f"wrote {self.out}")
        return False


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (NaN as null), creating the folder; atomic replace."""
    from seglib.io import atomic_write_json

    return atomic_write_json(path, payload)
