"""Study C's slice sampling (Buda et al.): slices drawn with probability proportional to the
lesion area plus a uniform share, volume by volume. Randomness comes from a passed-in generator."""

from __future__ import annotations

import numpy as np


def slice_weights(lesion_areas, uniform: float = 0.1) -> np.ndarray:
    """Slice sampling probabilities of one volume, as Buda's brain-segmentation-pytorch
    (``dataset.py``): ``w = (s + uniform * S / n) / ((1 + uniform) * S)`` with ``s`` the lesion
    area per slice, ``S = sum(s)`` and ``n`` slices. So the uniform share of the probability mass
    is ``uniform / (1 + uniform)`` = 1/11 (about 9.1 %) at the published 0.1, and the lesion share
    is 10/11. All-zero areas (Buda: 0/0 = NaN) give uniform weights here.
    """
    s = np.asarray(lesion_areas, dtype=float).reshape(-1)
    if s.size == 0:
        raise ValueError("lesion_areas is empty: expected one area per slice.")
    if np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"lesion_areas must be finite and >= 0, got min {s.min()!r}.")
    total = s.sum()
    if total == 0:
        return np.full(s.size, 1.0 / s.size)
    return (s + uniform * total / s.size) / ((1.0 + uniform) * total)


def sample_slices(weights, n: int, rng: np.random.Generator, groups=None) -> np.ndarray:
    """Draw ``n`` slice indices with probabilities ``weights`` (normalised).

    With ``groups`` (one volume id per slice) it follows Buda: pick a volume uniformly, then a
    slice of that volume with the weights renormalised within it (use :func:`slice_weights`
    per volume). Returns global slice indices.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.")
    w = np.asarray(weights, dtype=float).reshape(-1)
    if w.size == 0 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all zero.")
    if groups is None:
        return rng.choice(w.size, size=int(n), p=w / w.sum())
    groups = np.asarray(groups).reshape(-1)
    if groups.size != w.size:
        raise ValueError(f"groups has {groups.size} entries but weights has {w.size}.")
    ids = np.unique(groups)
    picked, out = rng.integers(len(ids), size=int(n)), np.empty(int(n), dtype=np.int64)
    for j, g in enumerate(ids):
        idx, where = np.flatnonzero(groups == g), np.flatnonzero(picked == j)
        p = w[idx] / w[idx].sum() if w[idx].sum() > 0 else None  # None: uniform within the volume
        out[where] = idx[rng.choice(idx.size, size=where.size, p=p)]
    return out


