"""Train/validation splits: by patient (correct) and by slice (study B as published).

All splits are deterministic functions of their inputs and ``seed``; ids are
sorted first, so the order in which cases were read does not matter.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import numpy as np


def _n_val(n: int, val_fraction: float | None, n_val: int | None, what: str) -> int:
    if n_val is not None:  # a fixed count wins over a fraction
        if not 0 < int(n_val) < n:
            raise ValueError(f"n_val must be between 1 and {n - 1} for {n} {what}, got {n_val}.")
        return int(n_val)
    if val_fraction is None or not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    if n < 2:
        raise ValueError(f"Cannot split {n} {what} into train and validation.")
    return int(min(max(round(val_fraction * n), 1), n - 1))


def split_by_patient(
    ids: Iterable[str],
    val_fraction: float | None = 0.2,
    seed: int = 0,
    *,
    n_val: int | None = None,
) -> tuple[list[str], list[str]]:
    """Split unique patient ids into (train, validation), no patient in both.

    ``val_fraction`` of the patients (rounded, at least one each side) or,
    when given, exactly ``n_val`` of them (study C uses 10) go to validation, chosen by ``np.random.default_rng(seed)``. Both lists
    come back sorted.
    """
    uniq = sorted(set(ids))
    k = _n_val(len(uniq), val_fraction, n_val, "patients")
    order = np.random.default_rng(seed).permutation(len(uniq))
    val = sorted(uniq[i] for i in order[:k])
    val_set = set(val)
    return [p for p in uniq if p not in val_set], val


def split_k_fold(ids: Iterable[str], folds: int, fold: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Fold ``fold`` (0-based) of a patient-level ``folds``-fold cross-validation: (train, validation).

    The sorted unique ids are permuted by ``np.random.default_rng(seed)`` and dealt round-robin into the
    folds, so every patient is validated in exactly one fold and the fold sizes differ by at most one.
    Both lists come back sorted.
    """
    uniq = sorted(set(ids))
    if not 2 <= int(folds) <= len(uniq):
        raise ValueError(f"data.folds = {folds}: expected between 2 and {len(uniq)} (the number of patients).")
    if not 0 <= int(fold) < int(folds):
        raise ValueError(f"data.fold = {fold}: expected 0 to {int(folds) - 1} for {folds} folds.")
    order = np.random.default_rng(seed).permutation(len(uniq))
    val = sorted(uniq[i] for i in order[int(fold)::int(folds)])
    val_set = set(val)
    return [p for p in uniq if p not in val_set], val


def split_as_buda(ids: Iterable[str], n_val: int = 10, seed: int = 42) -> tuple[list[str], list[str]]:
    """Study C's split exactly as Buda's ``BrainSegmentationDataset`` drew it:
    ``random.seed(seed); random.sample(sorted(patients), k=n_val)`` (Python's
    ``random``, seeded locally here). Returns sorted (train, validation)."""
    uniq = sorted(set(ids))
    _n_val(len(uniq), None, n_val, "patients")
    val = sorted(random.Random(seed).sample(uniq, k=n_val))
    val_set = set(val)
    return [p for p in uniq if p not in val_set], val


def split_by_slice(
    patient_of_slice: Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Study B **as published**: shuffle the 2D slices and cut 80/20 by slice.

    This leaks patients: slices of one patient land in both training and
    validation, so neighbouring, nearly identical slices are "validated" on,
    and validation scores are optimistic. Kept only to reproduce the seed;
    use ``split_by_patient`` otherwise. ``leaked_patients`` measures the leak.

    Args:
        patient_of_slice: patient id of each slice (e.g. ``extract_slices(...)["patient"]``).
    Returns:
        sorted index arrays ``(train_idx, val_idx)`` into the slices.
    """
    n = len(patient_of_slice)
    k = _n_val(n, val_fraction, None, "slices")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def leaked_patients(patient_of_slice: Sequence[str], train_idx, val_idx) -> list[str]:
    """Patients with slices on both sides of a slice split (sorted)."""
    p = np.asarray(patient_of_slice)
    return sorted(set(p[np.asarray(train_idx, int)]) & set(p[np.asarray(val_idx, int)]))
