"""Study A's training set of patches, drawn per epoch by a sampler (deterministic per seed, epoch, item).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from seglib.data.sampling.patches import (
    PatchDraw,
    PatchIndex,
    acceptance_stats,
    crop,
    lesion_aware_sample,
    rejection_sample,
)
from seglib.data.sampling.slices import sample_slices, slice_weights  # noqa: F401 - re-exported
from seglib.registry import look_up

SAMPLERS = ("rejection", "lesion_aware", "none")


@dataclass(eq=False)
class PatchDataset(Dataset):
    """Patches of 3D volumes for training, deterministic per ``(seed, epoch, item)``.

    ``images``: arrays ``(C, X, Y, Z)``; ``masks``: ``(X, Y, Z)`` or ``(1, X, Y, Z)``. Item ``i``
    of an epoch comes from volume ``i % len(images)`` with its own generator
    ``default_rng([seed, epoch, i])``, so results do not depend on worker order. Returns
    ``{"image": float32 (C, *patch), "mask": float32 (1, *patch), "index": volume}``;
    ``sampler="none"`` returns whole volumes. Draws made in this process are recorded
    (:meth:`acceptance_stats`); :meth:`epoch_draws` recomputes an epoch's draws exactly without
    cropping (use it with ``num_workers > 0``, whose records stay in the workers).
    """

    images: list
    masks: list
    patch_size: int | Sequence[int] = 64
    sampler: str = "rejection"
    threshold: float | None = 0.4
    samples_per_epoch: int | None = None
    seed: int = 0
    max_draws: int = 1000
    pos_ratio: float = 1.0
    fallback: str = "lesion_centred"
    epoch: int = field(default=0, init=False)

    def __post_init__(self):
        look_up(self.sampler, {s: s for s in SAMPLERS}, "sampler")
        if len(self.images) != len(self.masks) or not self.images:
            raise ValueError(f"Expected as many masks as images (> 0), got {len(self.images)} and {len(self.masks)}.")
        self.masks = [np.asarray(m)[0] if np.ndim(m) == np.ndim(im) else np.asarray(m) for im, m in zip(self.images, self.masks)]
        for i, (im, m) in enumerate(zip(self.images, self.masks)):
            if tuple(np.shape(im)[1:]) != m.shape:
                raise ValueError(f"Volume {i}: image shape {np.shape(im)} does not match mask shape {m.shape}.")
        if self.sampler == "rejection" and self.threshold is None:
            raise ValueError("sampler='rejection' needs a threshold (a fraction in [0, 1]).")
        self._indices: dict[int, PatchIndex] = {}
        self.records: dict[tuple[int, int], PatchDraw] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.samples_per_epoch or len(self.images))

    def draw_for(self, i: int, epoch: int | None = None) -> PatchDraw | None:
        if self.sampler == "none":
            return None
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, int(i)])
        v = int(i) % len(self.images)
        if v not in self._indices:
            self._indices[v] = PatchIndex(self.masks[v], self.patch_size)
        index = self._indices[v]
        if self.sampler == "rejection":
            return rejection_sample(index, index.size, self.threshold, rng, self.max_draws, self.fallback)
        return lesion_aware_sample(index, index.size, rng, self.pos_ratio, self.threshold, self.max_draws, self.fallback)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"Item {i} out of range for {len(self)} samples per epoch.")
        v = i % len(self.images)
        image, mask = np.asarray(self.images[v]), self.masks[v][None]
        draw = self.draw_for(i)
        if draw is not None:
            self.records[(self.epoch, i)] = draw
            image, mask = crop(image, draw), crop(mask, draw)
        return {"image": torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32),
                "mask": torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.float32), "index": v}

    def epoch_draws(self, epoch: int | None = None) -> list[PatchDraw]:
        return [self.draw_for(i, epoch) for i in range(len(self))] if self.sampler != "none" else []

    def acceptance_stats(self, epoch: int | None = None) -> dict:
        """Stats of the draws recorded in this process (all epochs, or one)."""
        draws = [d for (e, _), d in sorted(self.records.items()) if epoch is None or e == epoch]
        return acceptance_stats(draws)
