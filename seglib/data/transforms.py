"""2D augmentation of studies B and C through MONAI dictionary transforms, and a slice ``Dataset``.

Items are ``{"image": (C, H, W) float32, "mask": (1, H, W)}``. Every spatial transform moves the
image and the mask together; the image is interpolated bilinearly and the mask with nearest
neighbour, so it keeps its values ({0, 1}). Randomness lives in the transforms' own MONAI random
state: call ``set_random_state(seed)`` (done per item by :class:`SliceDataset`); nothing is seeded
globally. The outputs are plain ``torch.Tensor`` (float32), MONAI's metadata dropped. A ``DataLoader``
batch is augmented at once (:meth:`Augmentation.batch`): each item's draws are its own, the resampling
runs once for the batch, and the tensors are the bits of the item-by-item path (tested).

Study B (prostate, Albumentations in the seed, parameters not published): rotate within ±15°
with probability 0.5 (Albumentations' default probability; its default limit of ±90° seemed
implausible for axial prostate slices and the seed does not give one), horizontal flip p 0.5,
vertical flip p 0.5. Resizing is a preprocessing step, not an augmentation, and is not here.

Study C (brain LGG, Buda's ``transform.py``): isotropic scale uniform in [0.95, 1.05] about the
centre, cropped / zero-padded back to the input size (always applied), rotate uniform in ±15°
(always applied), horizontal flip p 0.5 — in Buda's order; the scale and the rotation are applied
as one affine resampling (:class:`RandScaleRotated`).

"Horizontal flip" mirrors left-right, i.e. reverses the width axis W (spatial axis 1 of
(C, H, W)), as ``np.fliplr`` on (H, W, C) did in Buda's code; "vertical" reverses H.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.networks.layers import AffineTransform
from monai.transforms import (AffineGrid, Compose, Flip, MapTransform, RandFlipd, Randomizable, RandomizableTransform,
                              RandRotated, Resample)
from monai.transforms.utils import create_rotate, create_translate, resolves_modes
from monai.utils import convert_to_dst_type, get_equivalent_dtype
from torch.utils.data import Dataset

from seglib.data.intensity import RandIntensityd
from seglib.data.sampling import sample_slices
from seglib.registry import check_kwargs, look_up

KEYS = ("image", "mask")
MODES = ("bilinear", "nearest")


def _rotate(degrees: float, prob: float) -> RandRotated:
    return RandRotated(
        keys=KEYS, range_x=float(np.deg2rad(degrees)), prob=prob, keep_size=True,
        mode=MODES, padding_mode="zeros", align_corners=False,
    )


def _prostate(rotate_degrees: float = 15.0, rotate_prob: float = 0.5, flip_prob: float = 0.5,
              intensity: bool = False) -> list:
    return [
        _rotate(rotate_degrees, rotate_prob),
        RandFlipd(keys=KEYS, prob=flip_prob, spatial_axis=1),  # horizontal: width
        RandFlipd(keys=KEYS, prob=flip_prob, spatial_axis=0),  # vertical: height
    ] + _intensity(intensity)


def _intensity(on: bool) -> list:
    """The optional intensity augmentation (``data.augment_intensity``), after the spatial transforms."""
    return [RandIntensityd(("image",))] if on else []


class RandScaleRotated(RandomizableTransform, MapTransform):
    """Isotropic zoom by ``z ~ U(1 - scale, 1 + scale)`` about the centre and rotation by
    ``θ ~ U(-degrees, degrees)``, applied as **one** resampling of each key, with zero padding.

    Buda's pipeline scales (cropping or zero-padding back to the input size) and then rotates; an
    isotropic zoom and a rotation about the same centre compose into one affine map, so one
    interpolation gives the same geometry as two (the mask is interpolated once, by nearest
    neighbour) at less than half the cost of MONAI's ``RandZoomd`` + ``RandRotated`` (measured: 1.5 ms
    against 3.8 ms per 3×48×48 item). MONAI's ``RandAffined`` draws a scale per axis, so it cannot draw an
    isotropic one; the grid and the resampling are MONAI's (``AffineGrid``, ``Resample``), only the draw
    is ours. MONAI scales the sampling grid, so a zoom ``z`` is ``scale_params = 1 / z``.
    """

    def __init__(self, keys, scale: float, degrees: float, modes: Sequence[str]):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.scale, self.radians, self.modes = float(scale), float(np.deg2rad(degrees)), tuple(modes)
        self.zoom, self.angle = 1.0, 0.0
        self.resample = Resample()

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.zoom = float(self.R.uniform(1.0 - self.scale, 1.0 + self.scale))
        self.angle = float(self.R.uniform(-self.radians, self.radians))

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        affine = AffineGrid(rotate_params=self.angle, scale_params=(1.0 / self.zoom,) * 2)
        grids = {}  # one sampling grid per spatial size (image and mask share it)
        for key, mode in zip(self.keys, self.modes):
            img = torch.as_tensor(d[key]).float()
            size = tuple(img.shape[1:])
            if size not in grids:
                grid = affine(spatial_size=size)
                grids[size] = grid[0] if isinstance(grid, tuple) else grid
            d[key] = self.resample(img, grids[size], mode=mode, padding_mode="zeros")
        return d

    def draw(self) -> tuple[float, float]:
        """The draws of one :meth:`__call__`: ``(zoom, angle)``."""
        self.randomize()
        return self.zoom, self.angle

    def apply_batch(self, batch: dict[str, torch.Tensor], draws: Sequence[tuple[float, float]]) -> dict:
        """:meth:`__call__` of every item of ``batch`` (``{key: (N, C, H, W)}``) with its ``(zoom, angle)``, the same
        bits: each item's grid is MONAI's ``AffineGrid``; the resampling is one call for the batch, as MONAI's
        ``Resample`` does it for one image (its torch path, in its dtype, float64: grid axes reversed to (H, W, 2),
        each scaled by 2 / size, ``grid_sample``), which MONAI has no batched form of."""
        out = dict(batch)
        size = tuple(next(iter(batch.values())).shape[2:])
        grids = []
        for zoom, angle in draws:
            grid = AffineGrid(rotate_params=angle, scale_params=(1.0 / zoom,) * 2)(spatial_size=size)
            grids.append(grid[0] if isinstance(grid, tuple) else grid)
        dtype = get_equivalent_dtype(self.resample.dtype, torch.Tensor)  # Resample's computation dtype (float64)
        grid_t = torch.stack(grids)[:, [1, 0]].movedim(1, -1).to(dtype).contiguous()  # (N, H, W, 2): x then y
        for i, dim in enumerate(size[::-1]):
            grid_t[..., i] *= 2.0 / max(2, dim)
        for key, mode in zip(self.keys, self.modes):
            out[key] = torch.nn.functional.grid_sample(batch[key].to(dtype), grid_t, mode=mode, padding_mode="zeros",
                                                       align_corners=self.resample.align_corners).float()
        return out


def _draw_rotate(t: RandRotated):
    """The draws of one ``RandRotated.__call__``: ``(applied, angle)``."""
    t.randomize(None)
    t.rand_rotate.randomize()
    return bool(t._do_transform), float(t.rand_rotate.x)


def _rotate_batch(t: RandRotated, batch: dict[str, torch.Tensor], draws) -> dict:
    """``RandRotated`` on every item of ``batch`` with its draw, the same bits as MONAI's 2D ``rotate`` item by item:
    the same matrix (centre shift, ``create_rotate``, shift back, in float64, cast to the resampling dtype), then
    MONAI's ``AffineTransform`` once for all the rotated items of the batch."""
    rows = [i for i, (applied, _) in enumerate(draws) if applied]
    if not rows:
        return batch
    out = dict(batch)
    for key, mode, padding_mode, align_corners, dtype in zip(t.keys, t.mode, t.padding_mode, t.align_corners, t.dtype):
        x = batch[key][rows].to(get_equivalent_dtype(dtype, torch.Tensor))
        size = np.asarray(x.shape[2:])
        shift = create_translate(2, ((size - 1) / 2).tolist())
        shift_back = create_translate(2, (-(size.astype(int) - 1) / 2).tolist())
        theta = torch.stack([convert_to_dst_type(shift @ create_rotate(2, (draws[i][1],)) @ shift_back, x)[0]
                             for i in rows])
        _, interp, pad, _ = resolves_modes(mode, padding_mode)
        xform = AffineTransform(normalized=False, mode=interp, padding_mode=pad, align_corners=align_corners,
                                reverse_indexing=True)
        out[key] = _with_rows(batch[key], rows, xform(x, theta, spatial_size=tuple(int(v) for v in size)).float())
    return out


def _with_rows(batch: torch.Tensor, rows: list[int], new: torch.Tensor) -> torch.Tensor:
    """A copy of ``batch`` whose items ``rows`` are ``new`` (the items a random transform applied to)."""
    out = batch.clone()
    out[rows] = new
    return out


def _draw_flip(t: RandFlipd):
    """The draw of one ``RandFlipd.__call__``: whether it flips."""
    t.randomize(None)
    return bool(t._do_transform)


def _flip_batch(t: RandFlipd, batch: dict[str, torch.Tensor], draws) -> dict:
    """``RandFlipd`` on every item of ``batch``: MONAI's ``Flip`` on the flipped items (their channels side by side)."""
    rows = [i for i, applied in enumerate(draws) if applied]
    if not rows:
        return batch
    out = dict(batch)
    flip = Flip(spatial_axis=t.flipper.spatial_axis)
    for key in t.keys:
        x = batch[key][rows]
        out[key] = _with_rows(batch[key], rows, torch.as_tensor(flip(x.reshape(-1, *x.shape[2:]))).reshape(x.shape))
    return out


#: the transforms :meth:`Augmentation.batch` applies to a whole batch: ``type: (draw(t), apply(t, batch, draws))``
_BATCHED: dict[type, tuple[Callable, Callable]] = {
    RandRotated: (_draw_rotate, _rotate_batch),
    RandFlipd: (_draw_flip, _flip_batch),
    RandScaleRotated: (RandScaleRotated.draw, RandScaleRotated.apply_batch),
    RandIntensityd: (RandIntensityd.draw, RandIntensityd.apply_batch),
}


def _brain(scale: float = 0.05, rotate_degrees: float = 15.0, flip_prob: float = 0.5, intensity: bool = False) -> list:
    return [
        RandScaleRotated(KEYS, scale=scale, degrees=rotate_degrees, modes=MODES),
        RandFlipd(keys=KEYS, prob=flip_prob, spatial_axis=1),
    ] + _intensity(intensity)


STUDIES: dict[str, Callable[..., list]] = {"prostate": _prostate, "brain": _brain, "none": lambda: []}


def _untracked(fn: Callable, item: dict):
    """``fn(item)`` with MONAI's metadata tracking off (about 3x faster per 2D item; the outputs are
    plain tensors, which is all the training loop uses). The global flag is restored afterwards."""
    from monai.data import get_track_meta, set_track_meta

    before = get_track_meta()
    set_track_meta(False)
    try:
        return fn(item)
    finally:
        set_track_meta(before)


@dataclass
class Augmentation:
    """A MONAI ``Compose`` over ``{"image", "mask"}`` returning float32 tensors.

    Extra keys of the item pass through untouched.
    """

    study: str
    transforms: list = field(default_factory=list)

    def __post_init__(self):
        self.compose = Compose(self.transforms)
        self._in_place = False  # set once MONAI has given every random transform a generator of its own

    def set_random_state(self, seed: int) -> Augmentation:
        """``Compose.set_random_state(seed=seed)``, MONAI's seeding of the composition and of each random
        transform in it. MONAI builds a new ``np.random.RandomState`` for each (about 150 µs: a new bit
        generator draws OS entropy before the seed overwrites it), five per 2D item for study B; after the
        first call the generators MONAI built are reseeded in place (``RandomState.seed``, about 2 µs), which
        puts them in the very state a new ``RandomState(seed)`` starts in. Only transforms whose seeding is
        known (:data:`_NESTED`) take that path; any other keeps MONAI's call."""
        seed = int(seed) % (2**32)
        if self._in_place:
            _reseed(self.compose, seed)
        else:
            self.compose.set_random_state(seed=seed)
            self._in_place = _reseedable(self.compose)
        return self

    def batch(self, items: Sequence[dict], seeds: Sequence[int]) -> list[dict]:
        """``[self.set_random_state(seed)(item) for item, seed in zip(items, seeds)]``, the same bits, each
        resampling done once for the whole batch: every item's random parameters are drawn by its MONAI
        transforms as their ``__call__`` draws them, then each transform moves all items at once
        (:data:`_BATCHED`). Study B's batch of four 48² slices: 1.5 ms an item one by one. A transform
        without a batched form, or items of different shapes, take the item-by-item path."""
        items = list(items)
        shapes = {(key, tuple(np.shape(it[key]))) for it in items for key in KEYS if key in it}
        if (not items or not self.transforms or any(type(t) not in _BATCHED for t in self.transforms)
                or len(shapes) != len(KEYS) or any(np.ndim(it[key]) != 3 for it in items for key in KEYS)):
            return [self.set_random_state(seed)(it) for it, seed in zip(items, seeds)]
        draws = []
        for seed in seeds:
            self.set_random_state(seed)
            draws.append([_BATCHED[type(t)][0](t) for t in self.transforms])
        batch = {key: torch.stack([torch.as_tensor(np.asarray(it[key])).float() for it in items]) for key in KEYS}

        def apply(batch):
            for j, t in enumerate(self.transforms):
                batch = _BATCHED[type(t)][1](t, batch, [d[j] for d in draws])
            return batch

        batch = _untracked(apply, batch)
        return [{**it, **{key: batch[key][i].to(torch.float32).contiguous() for key in KEYS}}
                for i, it in enumerate(items)]

    def __call__(self, item: dict) -> dict:
        for key in KEYS:
            if key not in item:
                raise KeyError(f"Augmentation expects keys {KEYS}; {key!r} is missing (got {sorted(item)}).")
            if np.ndim(item[key]) != 3:
                raise ValueError(f"{key!r} must be (C, H, W), got shape {tuple(np.shape(item[key]))}.")
        out = dict(_untracked(self.compose, dict(item))) if self.transforms else dict(item)
        for key in KEYS:
            value = out[key]
            value = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(np.asarray(value))
            out[key] = value.to(torch.float32).contiguous()
        return out


#: MONAI transforms whose ``set_random_state(seed)`` seeds their own generator and then, with the same seed,
#: the random transforms held in these attributes (``Compose`` seeds its members from its generator instead)
_NESTED: dict[type, tuple[str, ...]] = {Randomizable: (), RandFlipd: (), RandRotated: ("rand_rotate",)}
_MAX_SEED = 2**32


def _seeding_class(t) -> type | None:
    """The class of :data:`_NESTED` whose ``set_random_state`` ``t`` uses, or None (unknown seeding)."""
    fn = type(t).set_random_state
    return next((c for c in _NESTED if c.__dict__.get("set_random_state") is fn), None)


def _reseedable(t) -> bool:
    """Every random transform under ``t`` has a generator of its own and a seeding :func:`_reseed` knows."""
    if isinstance(t, Compose):
        return "R" in vars(t) and all(_reseedable(c) for c in t.transforms if isinstance(c, Randomizable))
    cls = _seeding_class(t)
    return (cls is not None and isinstance(vars(t).get("R"), np.random.RandomState)
            and all(_reseedable(getattr(t, a)) for a in _NESTED[cls]))


def _reseed(t, seed: int) -> None:
    """MONAI's ``t.set_random_state(seed=seed)`` on generators :func:`_reseedable` found, reseeded in place."""
    t.R.seed(int(np.int64(seed) % _MAX_SEED))
    if isinstance(t, Compose):
        for c in t.transforms:
            if isinstance(c, Randomizable):
                _reseed(c, int(t.R.randint(_MAX_SEED, dtype="uint32")))
        return
    for attr in _NESTED[_seeding_class(t)]:
        _reseed(getattr(t, attr), seed)


def build_augmentation(study: str, seed: int | None = None, **params) -> Augmentation:
    """The augmentation of ``study`` ("prostate" = B, "brain" = C, "none").

    ``params`` override the defaults (prostate: ``rotate_degrees, rotate_prob, flip_prob``;
    brain: ``scale, rotate_degrees, flip_prob``; both: ``intensity``, :class:`RandIntensityd` after the
    spatial transforms); unknown names raise ``TypeError``.
    """
    factory = look_up(study, STUDIES, "augmentation study")
    check_kwargs(params, inspect.signature(factory).parameters, f"augmentation {study!r}")
    aug = Augmentation(study, factory(**params))
    if seed is not None:
        aug.set_random_state(seed)
    return aug


class SliceDataset(Dataset):
    """2D slices with an optional transform, deterministic per ``(seed, epoch, item)``.

    ``images`` ``(N, C, H, W)``, ``masks`` ``(N, 1, H, W)``. Without ``weights`` item ``i`` is slice
    ``i`` (``samples_per_epoch`` defaults to N). With ``weights`` (see
    ``seglib.data.sampling.slice_weights``; ``groups`` gives the volume of each slice for Buda's
    volume-then-slice draw) the epoch's slice indices are drawn by
    ``seglib.data.sampling.sample_slices`` with ``default_rng([seed, epoch])``. A transform with
    ``set_random_state`` is reseeded per item from ``(seed, epoch, i)``, so worker order does not
    matter. Returns ``{"image", "mask", "index"}`` (index = slice drawn).
    """

    def __init__(self, images, masks, transform: Callable | None = None, weights=None,
                 samples_per_epoch: int | None = None, seed: int = 0, groups: Sequence | None = None):
        if np.ndim(images) != 4 or np.ndim(masks) != 4:
            raise ValueError(f"Expected images (N, C, H, W) and masks (N, 1, H, W), got {np.shape(images)} and {np.shape(masks)}.")
        if len(images) != len(masks) or np.shape(images)[2:] != np.shape(masks)[2:]:
            raise ValueError(f"Images {np.shape(images)} and masks {np.shape(masks)} do not match.")
        if weights is not None and len(weights) != len(images):
            raise ValueError(f"weights has {len(weights)} entries but there are {len(images)} slices.")
        self.images, self.masks, self.transform = images, masks, transform
        self.weights, self.groups, self.seed = weights, groups, int(seed)
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch is not None else len(images)
        self.epoch = 0
        self._order = self._draw_order()

    def _draw_order(self) -> np.ndarray:
        if self.weights is None:
            return np.arange(self.samples_per_epoch) % len(self.images)
        rng = np.random.default_rng([self.seed, self.epoch])
        return sample_slices(self.weights, self.samples_per_epoch, rng, self.groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._order = self._draw_order()

    @property
    def indices(self) -> np.ndarray:
        """Slice indices of the current epoch."""
        return self._order.copy()

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _raw(self, i: int) -> tuple[int, dict]:
        if not 0 <= i < len(self):
            raise IndexError(f"Item {i} out of range for {len(self)} samples per epoch.")
        k = int(self._order[i])
        return k, {"image": np.asarray(self.images[k], dtype=np.float32),
                   "mask": np.asarray(self.masks[k], dtype=np.float32)}

    def _item_seed(self, i: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1)[0])

    @staticmethod
    def _out(item: dict, k: int) -> dict:
        return {"image": torch.as_tensor(item["image"], dtype=torch.float32),
                "mask": torch.as_tensor(item["mask"], dtype=torch.float32), "index": k}

    def __getitem__(self, i: int) -> dict:
        k, item = self._raw(i)
        if self.transform is not None:
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(self._item_seed(i))
            item = self.transform(item)
        return self._out(item, k)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The items of a ``DataLoader`` batch, ``[self[i] for i in indices]``; an :class:`Augmentation` moves
        them together (:meth:`Augmentation.batch`, the same bits)."""
        if not isinstance(self.transform, Augmentation):
            return [self[i] for i in indices]
        raw = [self._raw(int(i)) for i in indices]
        done = self.transform.batch([item for _, item in raw], [self._item_seed(int(i)) for i in indices])
        return [self._out(item, k) for (k, _), item in zip(raw, done)]
