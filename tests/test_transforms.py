import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from seglib.data.sampling import slice_weights
from seglib.data.transforms import SliceDataset, build_augmentation


def _item(h=40, w=48, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((1, h, w), np.float32)
    mask[0, 10:25, 8:30] = 1
    image = np.concatenate([mask, rng.random((1, h, w)).astype(np.float32)])
    return {"image": image, "mask": mask}


@pytest.mark.parametrize("study", ["prostate", "brain"])
def test_mask_stays_binary_and_follows_image(study):
    for seed in range(6):
        out = build_augmentation(study, seed=seed)(_item())
        assert out["image"].dtype == torch.float32 and out["image"].shape == (2, 40, 48)
        assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
        # channel 0 of the image is the mask: bilinear vs nearest differ only along the edges
        img_mask = out["image"][0] > 0.5
        truth = out["mask"][0] > 0.5
        iou = (img_mask & truth).sum() / (img_mask | truth).sum()
        assert iou > 0.85


def test_flips_reverse_the_right_axes():
    item = _item()
    both = build_augmentation("prostate", seed=0, rotate_prob=0.0, flip_prob=1.0)(item)
    np.testing.assert_array_equal(both["image"].numpy(), item["image"][:, ::-1, ::-1])
    # Buda: np.fliplr on (H, W, C) reverses W; scale and rotation switched off (zoom 1, angle 0)
    horizontal = build_augmentation("brain", seed=0, scale=0.0, rotate_degrees=0.0, flip_prob=1.0)(item)
    np.testing.assert_allclose(horizontal["image"].numpy(), item["image"][:, :, ::-1], atol=1e-5)
    np.testing.assert_array_equal(horizontal["mask"].numpy(), item["mask"][:, :, ::-1])


def test_brain_scale_keeps_size_and_area_within_bounds():
    item = _item()
    area = item["mask"].sum()
    for seed in range(5):
        out = build_augmentation("brain", seed=seed, rotate_degrees=0.0, flip_prob=0.0)(item)
        assert out["mask"].shape == (1, 40, 48)
        # isotropic zoom in [0.95, 1.05]: area scales by at most 1.05^2 (+ nearest-neighbour rounding)
        assert 0.85 * area <= out["mask"].sum() <= 1.2 * area


def test_brain_zoom_enlarges_by_the_drawn_factor_in_one_resampling():
    """A zoom z > 1 enlarges the image (as MONAI's RandZoomd, Buda's scale): a centred square's area
    grows by about z², whatever the rotation; the mask keeps exactly {0, 1}."""
    mask = np.zeros((1, 64, 64), np.float32)
    mask[0, 24:40, 24:40] = 1
    item = {"image": mask.copy(), "mask": mask}
    for seed in range(8):
        aug = build_augmentation("brain", seed=seed, scale=0.4, rotate_degrees=30.0, flip_prob=0.0)
        out = aug(item)
        zoom = aug.transforms[0].zoom
        assert 0.6 <= zoom <= 1.4
        assert out["mask"].sum().item() == pytest.approx(256 * zoom**2, rel=0.15)
        assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}


def test_seeded_and_none():
    item = _item()
    a = build_augmentation("brain", seed=11)(item)
    b = build_augmentation("brain", seed=11)(item)
    c = build_augmentation("brain", seed=12)(item)
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    same = build_augmentation("none")(item)
    np.testing.assert_array_equal(same["image"].numpy(), item["image"])


def test_errors():
    with pytest.raises(ValueError, match='Did you mean "brain"'):
        build_augmentation("brian")
    with pytest.raises(TypeError, match='Did you mean "scale"'):
        build_augmentation("brain", scal=0.1)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_augmentation("brain")({"image": np.zeros((4, 4)), "mask": np.zeros((1, 4, 4))})


def _slices(n=6, h=16, w=16):
    images = np.random.default_rng(0).random((n, 2, h, w)).astype(np.float32)
    masks = np.zeros((n, 1, h, w), np.float32)
    masks[2, 0, 4:8, 4:8] = 1
    masks[4, 0, 2:12, 2:12] = 1
    return images, masks


def test_slice_dataset_plain_order():
    images, masks = _slices()
    ds = SliceDataset(images, masks)
    assert len(ds) == 6 and ds[4]["index"] == 4
    np.testing.assert_array_equal(ds[2]["mask"].numpy(), masks[2])
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 2, 16, 16)


def test_slice_dataset_weighted_deterministic_per_epoch():
    images, masks = _slices()
    w = slice_weights(masks.sum(axis=(1, 2, 3)))
    ds = SliceDataset(images, masks, transform=build_augmentation("brain"), weights=w, samples_per_epoch=40, seed=3)
    again = SliceDataset(images, masks, transform=build_augmentation("brain"), weights=w, samples_per_epoch=40, seed=3)
    np.testing.assert_array_equal(ds.indices, again.indices)
    assert torch.equal(ds[5]["image"], again[5]["image"])
    assert torch.equal(ds[5]["image"], ds[5]["image"])  # reseeded per item: order-independent
    # lesion slices 2 and 4 hold 10/11 of the mass (Buda's 0.1 uniform share)
    assert np.isin(ds.indices, [2, 4]).mean() > 0.6
    first = ds.indices
    ds.set_epoch(1)
    assert not np.array_equal(first, ds.indices)
    ds.set_epoch(0)
    np.testing.assert_array_equal(first, ds.indices)


def test_slice_dataset_errors():
    images, masks = _slices()
    with pytest.raises(ValueError, match="do not match"):
        SliceDataset(images, masks[:3])
    with pytest.raises(ValueError, match="weights has 2 entries"):
        SliceDataset(images, masks, weights=[0.5, 0.5])
    with pytest.raises(IndexError):
        SliceDataset(images, masks)[6]


@pytest.mark.parametrize("study", ["prostate", "brain"])
def test_reseeding_in_place_gives_the_draws_of_monais_seeding(study):
    """After the first call, ``Augmentation.set_random_state`` reseeds MONAI's generators in place instead
    of letting MONAI build new ones; every item must come out as MONAI's own seeding makes it."""
    from monai.transforms import Compose

    rng = np.random.default_rng(0)
    item = {"image": rng.random((3, 24, 24), dtype=np.float32),
            "mask": (rng.random((1, 24, 24)) > 0.7).astype(np.float32)}
    fast, plain = build_augmentation(study, seed=1), build_augmentation(study, seed=1)
    for seed in [7, 2**32 - 1, 0, 123456789, 7, *rng.integers(0, 2**32, 20).tolist()]:
        fast.set_random_state(seed)
        Compose.set_random_state(plain.compose, seed=int(seed) % 2**32)  # MONAI's seeding, every time
        a, b = fast(item), plain(item)
        assert all(torch.equal(a[k], b[k]) for k in ("image", "mask")), seed
    assert fast._in_place  # the in-place path was the one taken


def test_an_unknown_random_transform_keeps_monais_seeding():
    from monai.transforms import RandFlipd, RandomizableTransform

    from seglib.data.transforms import Augmentation

    class Odd(RandomizableTransform):
        def set_random_state(self, seed=None, state=None):
            super().set_random_state(seed, state)
            self.extra = seed
            return self

        def __call__(self, d):
            return d

    aug = Augmentation("none", [RandFlipd(keys=["image"], prob=0.5), Odd()])
    aug.set_random_state(5)
    aug.set_random_state(6)
    assert not aug._in_place and aug.transforms[1].extra is not None


@pytest.mark.parametrize("study,params", [("prostate", {}), ("prostate", {"rotate_prob": 1.0, "flip_prob": 1.0}),
                                          ("prostate", {"rotate_prob": 0.0, "flip_prob": 0.0}), ("brain", {}),
                                          ("brain", {"scale": 0.2, "rotate_degrees": 40.0}),
                                          ("brain", {"intensity": True}), ("prostate", {"intensity": True})])
def test_a_batch_is_augmented_at_once_with_the_bits_of_one_item_at_a_time(study, params):
    """``SliceDataset.__getitems__`` (what a ``DataLoader`` calls for a batch) draws each item's parameters as
    MONAI's transforms do and resamples the batch in one call per key: the very tensors of ``ds[i]``."""
    rng = np.random.default_rng(1)
    channels = 1 if study == "prostate" else 3
    images = rng.random((12, channels, 20, 28), dtype=np.float32)
    masks = (rng.random((12, 1, 20, 28)) > 0.7).astype(np.float32)
    ds = SliceDataset(images, masks, build_augmentation(study, **params), seed=4)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        order = [5, 0, 11, 3, 3, 8, 1]
        one, batch = [ds[i] for i in order], ds.__getitems__(order)
        for a, b in zip(one, batch):
            assert a["index"] == b["index"]
            assert all(torch.equal(a[k], b[k]) and b[k].dtype == torch.float32 for k in ("image", "mask"))
        changed = [not torch.equal(a["image"], torch.as_tensor(images[a["index"]])) for a in one]
        assert any(changed) == (params.get("rotate_prob", 0.5) + params.get("flip_prob", 0.5) > 0)
    loader = DataLoader(ds, batch_size=4)
    stacked = torch.stack([ds[i]["image"] for i in range(4)])
    assert torch.equal(next(iter(loader))["image"], stacked)


def test_a_transform_without_a_batched_form_augments_item_by_item():
    from monai.transforms import RandGaussianNoised

    from seglib.data.transforms import Augmentation

    images, masks = _slices()
    aug = Augmentation("none", [RandGaussianNoised(keys=["image"], prob=1.0, std=0.5)])
    ds = SliceDataset(images, masks, aug, seed=2)
    one, batch = [ds[i] for i in range(6)], ds.__getitems__(list(range(6)))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(one, batch))
    assert not torch.equal(batch[0]["image"], torch.as_tensor(images[0]))


def test_intensity_augmentation_changes_the_image_alone_as_drawn():
    """``RandIntensityd``: each part applied at its probability, the mask untouched, contrast kept within the
    channel's range, gamma keeping the channel's mean and standard deviation, the noise a function of the draws."""
    from seglib.data.intensity import RandIntensityd

    t = RandIntensityd(("image",))
    t.set_random_state(0)
    draws = [t.draw() for _ in range(4000)]
    rates = {k: np.mean([d[k] is not None for d in draws]) for k in draws[0]}
    for k, p in (("brightness", 0.15), ("contrast", 0.15), ("gamma", 0.3), ("noise", 0.1)):
        assert abs(rates[k] - p) < 0.03, (k, rates[k])
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((2, 16, 16)).astype(np.float32))
    none = {"brightness": None, "contrast": None, "gamma": None, "noise": None}
    assert t.apply(x, none) is x
    assert torch.allclose(t.apply(x, {**none, "brightness": 1.2}), 1.2 * x)
    c = t.apply(x, {**none, "contrast": 1.25})
    assert (c.amin(dim=(1, 2)) >= x.amin(dim=(1, 2))).all() and (c.amax(dim=(1, 2)) <= x.amax(dim=(1, 2))).all()
    assert (c.std(dim=(1, 2)) > x.std(dim=(1, 2))).all()
    g = t.apply(x, {**none, "gamma": 0.7})
    assert not torch.allclose(g, x)
    assert torch.allclose(g.mean(dim=(1, 2)), x.mean(dim=(1, 2)), atol=1e-5)
    assert torch.allclose(g.std(dim=(1, 2)), x.std(dim=(1, 2)), atol=1e-5)
    n1, n2 = (t.apply(x, {**none, "noise": (0.3, 5)}) for _ in range(2))
    assert torch.equal(n1, n2) and not torch.equal(n1, t.apply(x, {**none, "noise": (0.3, 6)}))
    assert 0.2 < float((n1 - x).std()) < 0.4
    rng = np.random.default_rng(3)
    item = {"image": rng.random((3, 24, 24), dtype=np.float32), "mask": (rng.random((1, 24, 24)) > 0.7).astype(np.float32)}
    plain = build_augmentation("brain", seed=9)(item)
    both = build_augmentation("brain", seed=9, intensity=True)
    outs = [both.set_random_state(s)(item) for s in range(40)]
    assert torch.equal(outs[9]["mask"], plain["mask"])  # the spatial draws are the same; the mask is not touched
    assert sum(not torch.equal(build_augmentation("brain", seed=s)(item)["image"], o["image"])
               for s, o in enumerate(outs)) > 10
