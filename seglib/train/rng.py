"""Randomness of a run: global seeding, RNG state for checkpoints, per-epoch loader seeds, and
``make_loader`` (a DataLoader whose randomness comes from its own ``torch.Generator``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Called only at the start of ``fit``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """All global RNG states in a form that loads with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(pystate), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of ``epoch``: a fixed function of the run seed and the epoch."""
    return (int(seed) * 1_000_003 + int(epoch)) % 2**63


def reseed_loader(loader: Any, seed: int, epoch: int) -> bool:
    """Reseed the ``torch.Generator`` of ``loader`` (and of its sampler) for ``epoch``.

    Returns False when the loader has no generator (then a shuffling loader draws from
    the global torch RNG, which ``fit`` seeds and checkpoints, so runs stay reproducible).
    """
    found = False
    s = epoch_seed(seed, epoch)
    dataset = getattr(loader, "dataset", None)
    if callable(getattr(dataset, "set_epoch", None)):  # samplers that draw patches/slices per epoch
        dataset.set_epoch(epoch)
    gens = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    seen: list[torch.Generator] = []
    for g in gens:
        if isinstance(g, torch.Generator) and all(g is not x for x in seen):
            g.manual_seed(s)
            seen.append(g)
            found = True
    return found


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of :func:`make_loader`: seed numpy and python from the worker's torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    *,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    collate_fn: Any = None,
) -> DataLoader:
    """A ``DataLoader`` whose randomness comes from its own ``torch.Generator``.

    Build every loader given to :func:`seglib.train.fit` with this function: ``fit``
    reseeds the generator at each epoch from the run seed (so ``seed`` here matters only
    when the loader is used outside ``fit``), which makes shuffling reproducible and
    lets a resumed run draw the same batches (weighted drawing is the dataset's own, e.g.
    :class:`seglib.data.transforms.SliceDataset`). ``num_workers > 0`` seeds numpy
    and python in each worker (:func:`seed_worker`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=bool(shuffle),
        generator=gen,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        drop_last=drop_last,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
    )
