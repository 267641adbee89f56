"""nnU-Net's intensity augmentation of 2D image channels as a MONAI random transform (``data.augment_intensity``):
drawn from MONAI's random state like every transform of :mod:`seglib.data.transforms`, with a batched form of the
same bits (:meth:`RandIntensityd.apply_batch`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform


class RandIntensityd(RandomizableTransform, MapTransform):
    """nnU-Net's intensity augmentation of the image channels (the mask untouched), one draw an item for all
    its channels, each channel's statistics its own: multiplicative brightness ``U(0.75, 1.25)`` with probability 0.15, contrast ``U(0.75, 1.25)`` about the
    channel's mean (clipped to its range) with probability 0.15, gamma with probability 0.3 (``U(0.7, 1)`` or
    ``U(1, 1.5)``, even odds; on the channel rescaled to [0, 1] and back, its mean and standard deviation
    restored) and additive Gaussian noise of variance ``U(0, 0.1)`` with probability 0.1 (the channels are
    z-scored). The draws come from the MONAI random state like every transform here; the noise from a seed
    drawn with them, so one item's augmentation is a function of its seed alone.
    """

    BRIGHTNESS, CONTRAST, GAMMA, NOISE = 0.15, 0.15, 0.3, 0.1

    def __init__(self, keys=("image",)):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.params: dict = {}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        r = self.R
        p = {"brightness": r.uniform(0.75, 1.25) if r.uniform() < self.BRIGHTNESS else None,
             "contrast": r.uniform(0.75, 1.25) if r.uniform() < self.CONTRAST else None,
             "gamma": None, "noise": None}
        if r.uniform() < self.GAMMA:
            p["gamma"] = r.uniform(0.7, 1.0) if r.uniform() < 0.5 else r.uniform(1.0, 1.5)
        if r.uniform() < self.NOISE:
            p["noise"] = (float(np.sqrt(r.uniform(0.0, 0.1))), int(r.randint(2**32, dtype="uint32")))
        self.params = p

    def draw(self) -> dict:
        """The draws of one :meth:`__call__`: brightness, contrast and gamma factors and the noise's (std, seed),
        each None where it is not applied."""
        self.randomize()
        return dict(self.params)

    @staticmethod
    def apply(image: torch.Tensor, p: dict) -> torch.Tensor:
        """``image`` (C, H, W) float32 with the draws ``p``; the same tensor when nothing applies."""
        if all(v is None for v in p.values()):
            return image
        x = image.to(torch.float32).clone()
        flat = x.reshape(x.shape[0], -1)
        if p["brightness"] is not None:
            flat *= p["brightness"]
        if p["contrast"] is not None:
            lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
            mean = flat.mean(1, keepdim=True)
            flat.copy_(torch.minimum(torch.maximum((flat - mean) * p["contrast"] + mean, lo), hi))
        if p["gamma"] is not None:
            lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
            mean, std = flat.mean(1, keepdim=True), flat.std(1, keepdim=True)
            span = (hi - lo).clamp_min(1e-7)
            g = ((flat - lo) / span).clamp_min(0.0) ** p["gamma"] * span + lo
            g_mean, g_std = g.mean(1, keepdim=True), g.std(1, keepdim=True).clamp_min(1e-7)
            flat.copy_((g - g_mean) / g_std * std + mean)
        if p["noise"] is not None:
            std, seed = p["noise"]
            noise = np.random.default_rng(seed).standard_normal(tuple(x.shape), dtype=np.float32)
            x += std * torch.from_numpy(noise)
        return x

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        for key in self.keys:
            d[key] = self.apply(torch.as_tensor(np.asarray(d[key])).float(), self.params)
        return d

    def apply_batch(self, batch: dict[str, torch.Tensor], draws: Sequence[dict]) -> dict:
        """:meth:`__call__` of every item of ``batch`` with its draws (elementwise: item by item, the same bits)."""
        out = dict(batch)
        for key in self.keys:
            out[key] = torch.stack([self.apply(x, p) for x, p in zip(batch[key], draws)])
        return out
