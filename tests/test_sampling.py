from pathlib import Path

import numpy as np
import pytest
import torch

from seglib.data.sampling import (
    PatchDataset,
    PatchDraw,
    PatchIndex,
    acceptance_stats,
    crop,
    lesion_aware_sample,
    rejection_sample,
    sample_slices,
    slice_weights,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def ball(shape, centre, radius):
    grid = np.indices(shape)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return (d2 <= radius**2).astype(np.uint8)


def test_patch_index_counts_match_brute_force():
    rng = np.random.default_rng(0)
    mask = (rng.random((9, 7, 6)) < 0.1).astype(np.uint8)
    index = PatchIndex(mask, (4, 3, 2))
    corners = np.array(list(np.ndindex(6, 5, 5)))
    expected = [mask[x:x + 4, y:y + 3, z:z + 2].sum() for x, y, z in corners]
    np.testing.assert_array_equal(index.counts(corners), expected)


def test_acceptance_probability_closed_form():
    # 8^3 volume, one lesion voxel at (3,3,3), patch 4: corners 0..4 per axis (5 values), the patch
    # holds the voxel iff corner in 0..3 (4 values) -> p = 4^3 / 5^3 = 64/125 at any threshold in (0, 1].
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[3, 3, 3] = 1
    index = PatchIndex(mask, 4)
    assert index.acceptance_probability(0.4) == pytest.approx(64 / 125)
    assert index.acceptance_probability(1.0) == pytest.approx(64 / 125)
    assert index.acceptance_probability(0.0) == 1.0


def test_rejection_accepts_only_patches_over_threshold():
    mask = ball((30, 30, 20), (12, 15, 9), 3)
    rng = np.random.default_rng(1)
    for _ in range(20):
        d = rejection_sample(mask, 12, 0.4, rng)
        assert d.accepted and d.fallback_used is None and d.draws >= 1
        # the reported fraction is the direct count over the whole lesion
        assert d.lesion_fraction == pytest.approx(mask[d.slices].sum() / mask.sum())
        assert d.lesion_fraction >= 0.4
        assert crop(mask, d).shape == (12, 12, 12)


def test_empty_mask_returns_immediately():
    d = rejection_sample(np.zeros((10, 10, 10)), 4, 0.4, np.random.default_rng(0))
    assert (d.fallback_used, d.draws, d.accepted) == ("empty_mask", 1, False)
    assert np.isnan(d.lesion_fraction)
    d = lesion_aware_sample(np.zeros((10, 10, 10)), 4, np.random.default_rng(0), threshold=0.4)
    assert d.fallback_used == "empty_mask"


def test_unreachable_threshold_falls_back_to_lesion_centred_patch():
    # a 10^3 lesion and a 4^3 patch: at most 64/1000 of the lesion fits, so 0.4 is unreachable.
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    d = rejection_sample(mask, 4, 0.4, np.random.default_rng(0))
    assert (d.fallback_used, d.draws, d.accepted) == ("unreachable", 0, False)
    # centred on a lesion voxel: holds that voxel, and at most 4^3 of the 1000 lesion voxels
    assert 1 / 1000 <= d.lesion_fraction <= 64 / 1000
    assert mask[tuple(c + 2 for c in d.corner)] == 1  # the centre (corner + 4 // 2) is a lesion voxel
    d = rejection_sample(mask, 4, 0.4, np.random.default_rng(0), fallback="uniform")
    assert d.fallback_used == "unreachable"


def test_max_draws_bounds_the_loop():
    mask = np.zeros((40, 40, 40), np.uint8)
    mask[20, 20, 20] = 1  # p = 4^3 / 37^3 ~ 0.0013 with a 4^3 patch
    draws = [rejection_sample(mask, 4, 0.4, np.random.default_rng(s), max_draws=5) for s in range(20)]
    failed = [d for d in draws if not d.accepted]
    assert failed, "expected some fallbacks at p ~ 0.001 with 5 draws"
    for d in failed:
        assert (d.fallback_used, d.draws) == ("max_draws", 5)
        assert d.lesion_fraction == 1.0  # lesion-centred fallback holds the single voxel


def test_errors_name_the_problem():
    mask = np.zeros((8, 8, 8))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"Patch size \(16, 16, 16\) cannot be larger than image size \(8, 8, 8\)"):
        rejection_sample(mask, 16, 0.4, rng)
    with pytest.raises(ValueError, match="threshold must be in"):
        rejection_sample(mask, 4, 1.5, rng)
    with pytest.raises(TypeError, match="Generator"):
        rejection_sample(mask, 4, 0.4, 0)
    with pytest.raises(ValueError, match='Did you mean "lesion_centred"'):
        rejection_sample(mask, 4, 0.4, rng, fallback="lesion_centered")
    with pytest.raises(ValueError, match="pos_ratio"):
        lesion_aware_sample(mask, 4, rng, pos_ratio=2)
    with pytest.raises(ValueError, match="has 2 axes but the image has 3"):
        rejection_sample(mask, (4, 4), 0.4, rng)


def test_lesion_aware_centres_on_lesion_or_background():
    mask = ball((21, 21, 21), (10, 10, 10), 2)
    rng = np.random.default_rng(3)
    for _ in range(30):
        d = lesion_aware_sample(mask, 3, rng, pos_ratio=1.0)
        centre = tuple(c + 1 for c in d.corner)  # odd patch 3: centre = corner + 1 (no clipping here)
        assert mask[centre] == 1 and d.accepted and d.draws == 1
    d = [lesion_aware_sample(mask, 3, rng, pos_ratio=0.0) for _ in range(30)]
    centres = [tuple(min(max(c + 1, 1), 19) for c in x.corner) for x in d]
    assert sum(mask[c] for c in centres) == 0


def test_lesion_aware_needs_100x_fewer_draws_than_rejection():
    # ATLAS-like 197x233x189 volume, a 515-voxel ball (radius 5), patch 32^3, threshold 0.4.
    # Exact per-draw acceptance of naive rejection: p = 1/145.9 (PatchIndex.acceptance_probability);
    # a lesion-centred 32^3 patch holds the whole ball; half of the lesion-aware proposals put the
    # chosen voxel at a random offset, which still holds 40 % of the ball nearly always.
    mask = ball((197, 233, 189), (100, 120, 90), 5)
    index = PatchIndex(mask, 32)
    p = index.acceptance_probability(0.4)
    assert 1 / p == pytest.approx(145.9, abs=0.1)
    rng = np.random.default_rng(2024)
    naive = acceptance_stats([rejection_sample(index, 32, 0.4, rng, max_draws=5000) for _ in range(100)])
    aware = acceptance_stats([lesion_aware_sample(index, 32, rng, threshold=0.4) for _ in range(100)])
    assert aware["draws_per_accepted"] <= 1.2 and aware["acceptance_rate"] == 1.0
    assert naive["acceptance_rate"] == 1.0
    assert naive["draws_per_accepted"] == pytest.approx(1 / p, rel=0.3)  # geometric, sd/mean ~ 1/sqrt(100)
    assert naive["draws_per_accepted"] / aware["draws_per_accepted"] >= 100


def test_empirical_acceptance_matches_exact_probability():
    # ISLES-sized 112x112x73 volume, 32^3 patch: p ~ 0.13, far from the 100x regime.
    mask = ball((112, 112, 73), (60, 50, 36), 5)
    index = PatchIndex(mask, 32)
    p = index.acceptance_probability(0.4)
    draws = [rejection_sample(index, 32, 0.4, np.random.default_rng([7, i])) for i in range(300)]
    stats = acceptance_stats(draws)
    assert 1 / stats["draws_per_accepted"] == pytest.approx(p, rel=0.15)


def test_acceptance_stats_hand_example():
    draws = [
        PatchDraw((0,), (2,), 3, True, None, 0.5),
        PatchDraw((0,), (2,), 1, True, None, 1.0),
        PatchDraw((0,), (2,), 10, False, "max_draws", 0.0),
        PatchDraw((0,), (2,), 1, False, "empty_mask", float("nan")),
    ]
    s = acceptance_stats(draws)
    assert s["acceptance_rate"] == 0.5  # 2 accepted of 4
    assert s["draws_per_accepted"] == 7.5  # (3 + 1 + 10 + 1) / 2
    assert s["mean_lesion_fraction"] == pytest.approx(0.5)  # nanmean(0.5, 1, 0)
    assert s["fallback_count"] == 2 and s["fallbacks"] == {"max_draws": 1, "empty_mask": 1}


def test_crop_keeps_channel_axes_numpy_and_torch():
    d = PatchDraw((1, 2, 3), (2, 3, 4), 1, True, None, 1.0)
    a = np.arange(2 * 5 * 6 * 8).reshape(2, 5, 6, 8)
    np.testing.assert_array_equal(crop(a, d), a[:, 1:3, 2:5, 3:7])
    assert crop(torch.as_tensor(a), d).shape == (2, 2, 3, 4)
    assert crop(a[0], d).shape == (2, 3, 4)


def test_slice_weights_as_buda():
    # s = [0, 10, 30], S = 40, n = 3: w = (s + 0.1*40/3) / (1.1*40) = (s + 4/3) / 44
    w = slice_weights([0, 10, 30])
    np.testing.assert_allclose(w, (np.array([0, 10, 30]) + 4 / 3) / 44)
    assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(slice_weights([0, 0, 0, 0]), 0.25)
    with pytest.raises(ValueError, match=">= 0"):
        slice_weights([1, -1])


def test_sample_slices_deterministic_and_grouped():
    w = slice_weights([0, 0, 5, 0])
    a = sample_slices(w, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(a, sample_slices(w, 50, np.random.default_rng(1)))
    np.testing.assert_array_equal(sample_slices([0, 1, 0], 10, np.random.default_rng(0)), 1)
    # Buda: volume first (uniformly), then slice: volume 0 has 1 slice, volume 1 has 9
    groups = [0] + [1] * 9
    idx = sample_slices(np.ones(10), 4000, np.random.default_rng(0), groups)
    assert np.mean(idx == 0) == pytest.approx(0.5, abs=0.03)


def _volumes(n=2, shape=(24, 20, 16)):
    images = [np.random.default_rng(i).random((2, *shape)).astype(np.float32) for i in range(n)]
    masks = [ball(shape, (12, 10, 8), 2) for _ in range(n)]
    return images, masks


@pytest.mark.parametrize("sampler", ["rejection", "lesion_aware"])
def test_patch_dataset_deterministic_per_seed_and_epoch(sampler):
    images, masks = _volumes()
    ds = PatchDataset(images, masks, patch_size=8, sampler=sampler, threshold=0.4, samples_per_epoch=6, seed=5)
    item = ds[3]
    assert item["image"].shape == (2, 8, 8, 8) and item["mask"].shape == (1, 8, 8, 8) and item["index"] == 1
    same = PatchDataset(images, masks, patch_size=8, sampler=sampler, threshold=0.4, samples_per_epoch=6, seed=5)
    assert torch.equal(same[3]["image"], item["image"])
    first = [ds.draw_for(i).corner for i in range(6)]
    ds.set_epoch(1)
    assert [ds.draw_for(i).corner for i in range(6)] != first
    assert ds.epoch_draws(0) == [ds.draw_for(i, 0) for i in range(6)]
    for i in range(len(ds)):
        ds[i]
    stats = ds.acceptance_stats(epoch=1)
    assert stats["n_patches"] == 6 and stats["acceptance_rate"] == 1.0


def test_patch_dataset_whole_volume_and_errors():
    images, masks = _volumes()
    ds = PatchDataset(images, [m[None] for m in masks], sampler="none")
    assert ds[0]["image"].shape == (2, 24, 20, 16) and ds[0]["mask"].shape == (1, 24, 20, 16)
    assert ds.acceptance_stats()["n_patches"] == 0
    with pytest.raises(ValueError, match="does not match"):
        PatchDataset(images, [masks[0][:10], masks[1]], sampler="none")
    with pytest.raises(ValueError, match='Did you mean "lesion_aware"'):
        PatchDataset(images, masks, sampler="lesion-aware")


@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "isles22").exists(), reason="shared real data absent")
def test_real_isles_mask_acceptance():
    nib = pytest.importorskip("nibabel")
    path = next((DATA / "isles22").rglob("*_msk.nii.gz"))
    mask = np.asarray(nib.load(path).dataobj)
    index = PatchIndex(mask, 16)
    p = index.acceptance_probability(0.4)
    assert 0 < p < 0.01  # 16^3 patches on the 523-voxel scattered lesion: ~1/459
    rng = np.random.default_rng(0)
    aware = acceptance_stats([lesion_aware_sample(index, 16, rng, threshold=0.4) for _ in range(100)])
    assert (1 / p) / aware["draws_per_accepted"] >= 100


def test_lesion_aware_with_threshold_draws_once_from_exactly_the_accepted_positions():
    """One draw per patch, uniform over the positions rejection sampling would accept (found here by
    brute force over every corner): the same distribution without the rejected draws."""
    mask = np.zeros((9, 8, 7), np.uint8)
    mask[3:6, 2:5, 2:4] = 1
    mask[7, 6, 5] = 1
    size, t = 4, 0.5
    total = mask.sum()
    accepted = {c for c in np.ndindex(6, 5, 4)
                if mask[c[0]:c[0] + size, c[1]:c[1] + size, c[2]:c[2] + size].sum() >= t * total}
    rng = np.random.default_rng(0)
    index = PatchIndex(mask, size)
    draws = [lesion_aware_sample(index, size, rng, threshold=t) for _ in range(3000)]
    assert all(d.draws == 1 and d.accepted and d.lesion_fraction >= t for d in draws)
    seen = [d.corner for d in draws]
    assert set(seen) == accepted
    counts = np.array([seen.count(c) for c in accepted])
    expected = len(draws) / len(accepted)
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)  # uniform within sampling noise
