"""The smoke profile's pinned results: what a change that moves a number must show in review.

Runs are bit-reproducible on a CPU (same configuration, data and code, one thread per run), but not
across CPU kinds: "auto" precision trains in bf16 where the CPU has native bf16 and in fp32 where it
has not, and the kernels differ. So the numbers are pinned per kind, in ``tests/pinned/<kind>.json``.

Record them for this machine's kind (after a change that is meant to move them, say why in the
commit): ``python tests/pins.py --write build/test`` after ``make test`` (or any smoke build).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

PINNED = Path(__file__).resolve().parent / "pinned"
STUDIES = ("stroke", "prostate", "brain")
TOLERANCE = 1e-6


def machine_kind() -> str:
    from seglib.train.device import cpu_has_native_bf16

    return "cpu-native-bf16" if cpu_has_native_bf16() else "cpu-no-bf16"


def _numbers(obj, prefix=""):
    """Flatten nested dicts to ``{"a.b": float}`` (numbers only; strings kept as they are)."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, (int, float, str)) or obj is None:
        out[prefix[:-1]] = obj
    return out


def observed(build: Path) -> dict:
    """Per study: the headline numbers of ``results.json``, each claim's verdict, and every run's
    training and validation loss per epoch, the last epoch's first."""
    build = Path(build)
    out = {}
    for study in STUDIES:
        results = json.loads((build / "executed" / study / "results.json").read_text())
        entry = {f"headline.{k}": v for k, v in _numbers(results["headline"]).items()}
        entry.update({f"claim.{c['id']}": c["verdict"] for c in results["claims"]})
        for run in results["provenance"]["runs"]:
            hist = pd.read_csv(build / "runs" / study / run["run"] / "history.csv")
            for col in ("train_loss", "val_loss"):
                if col in hist:
                    entry[f"run.{run['label']}.{col}"] = [float(v) for v in hist[col]]
        out[study] = entry
    return out


def differences(expected: dict, got: dict, tol: float = TOLERANCE) -> list[str]:
    diffs = []
    for key in sorted(set(expected) | set(got)):
        a, b = expected.get(key, "<missing>"), got.get(key, "<missing>")
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            if all(abs(x - y) <= tol for x, y in zip(a, b)):
                continue
        elif isinstance(a, float) and isinstance(b, float):
            if abs(a - b) <= tol:
                continue
        elif a == b:
            continue
        diffs.append(f"{key}: pinned {a!r}, now {b!r}")
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="BUILD", required=True, help="a build folder with a smoke build")
    args = parser.parse_args()
    PINNED.mkdir(exist_ok=True)
    path = PINNED / f"{machine_kind()}.json"
    path.write_text(json.dumps(observed(Path(args.write)), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"pinned {path}")


if __name__ == "__main__":
    main()
