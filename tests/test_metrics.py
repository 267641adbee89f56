"""Tests for seglib.eval.metrics: closed-form cases, the empty-mask policy, Dice = F1, per-volume
regrouping of slices, aggregation, and agreement with MONAI's metrics on random masks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from seglib.eval.metrics import (
    aggregate,
    case_metrics,
    confusion_counts,
    evaluate_cases,
    hd95,
    largest_connected_component,
    lesion_f1,
    volume_metrics,
)


def _masks():
    # 3×3: truth = top row, pred = top-left two pixels + centre
    truth = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    return pred, truth


def _random_masks(seed, shape=(3, 20, 18, 9), p=0.3):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    # smoothed noise → blobby masks with several components
    noise = ndimage.gaussian_filter(rng.random(shape), sigma=(0, 1.5, 1.5, 1.0))
    truth = noise > np.quantile(noise, 1 - p)
    pred = np.roll(truth, 2, axis=1) ^ (rng.random(shape) > 0.97)
    return pred, truth


def test_confusion_counts_closed_form():
    pred, truth = _masks()
    # tp = (0,0),(0,1); fp = (1,1); fn = (0,2); tn = 9 - 4
    assert confusion_counts(pred, truth) == {"tp": 2, "fp": 1, "fn": 1, "tn": 5}
    assert confusion_counts(torch.from_numpy(pred).bool(), torch.from_numpy(truth)) == {
        "tp": 2, "fp": 1, "fn": 1, "tn": 5}


def test_case_metrics_closed_form():
    pred, truth = _masks()
    m = case_metrics(pred, truth)
    assert m["dice"] == pytest.approx(4 / 6)        # 2·2/(2·2 + 1 + 1)
    assert m["iou"] == pytest.approx(2 / 4)         # 2/(2 + 1 + 1)
    assert m["precision"] == pytest.approx(2 / 3)   # 2/(2 + 1)
    assert m["recall"] == pytest.approx(2 / 3)      # 2/(2 + 1)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["volume_diff"] == 0                    # 3 voxels each
    # one true component; the prediction (8-connected: centre touches the top-left pair
    # diagonally) is one component overlapping it → lesion F1 = 1
    assert m["lesion_f1"] == 1.0
    # surfaces: every voxel of these thin masks is on its surface. pred→truth distances:
    # 0, 0, 1 (centre to (0,1)); truth→pred: 0, 0, 1 ((0,2) to (0,1)); P95 of {0, 0, 1} with
    # linear interpolation = 0.9 in both directions.
    assert m["hd95"] == pytest.approx(0.9)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 5)


def test_hd95_and_volume_in_millimetres():
    # single voxels 3 apart along x, spacing (2, 1, 2.5) mm → 6 mm both ways
    truth = np.zeros((8, 4, 4), bool)
    pred = np.zeros_like(truth)
    truth[1, 1, 1] = True
    pred[4, 1, 1] = True
    pred[4, 2, 1] = True  # a second predicted voxel at distance √(6² + 1²)
    assert hd95(pred[:, :, :], truth, spacing=(2, 1, 2.5)) == pytest.approx(
        np.percentile([6, math.sqrt(37)], 95))
    m = case_metrics(pred, truth, spacing=(2, 1, 2.5))
    # |2 - 1| voxels × 2·1·2.5 mm³ = 5 mm³ = 0.005 ml
    assert m["volume_diff"] == pytest.approx(0.005)
    assert case_metrics(pred, truth)["volume_diff"] == 1  # voxels without spacing


def test_empty_mask_policy():
    empty = np.zeros((4, 5), bool)
    some = np.zeros((4, 5), bool)
    some[1:3, 1:3] = True
    both = case_metrics(empty, empty)
    for key in ("dice", "iou", "precision", "recall", "f1", "lesion_f1", "hd95"):
        assert math.isnan(both[key]), key
    assert both["volume_diff"] == 0 and both["tn"] == 20 and both["tp"] == both["fp"] == both["fn"] == 0
    missed = case_metrics(empty, some)  # nothing predicted
    assert missed["dice"] == 0 and missed["precision"] == 0 and missed["recall"] == 0
    assert missed["lesion_f1"] == 0 and math.isnan(missed["hd95"])
    false_alarm = case_metrics(some, empty)
    assert false_alarm["dice"] == 0 and false_alarm["recall"] == 0 and math.isnan(false_alarm["hd95"])


def test_lesion_f1_closed_form():
    truth = np.zeros((6, 12), bool)
    pred = np.zeros_like(truth)
    truth[1:3, 1:3] = True      # lesion A: hit
    truth[1:3, 6:8] = True      # lesion B: missed → FN
    pred[2:4, 2:4] = True       # overlaps A
    pred[5, 10:12] = True       # touches nothing → FP
    # TP = 1, FP = 1, FN = 1 → 1/(1 + (1 + 1)/2) = 0.5
    assert lesion_f1(pred, truth) == pytest.approx(0.5)
    # a diagonal neighbour joins a component (full connectivity, as ISLES'22's 26-connectivity)
    pred2 = pred.copy()
    pred2[4, 9] = True          # diagonal to (5, 10): the FP blob grows but stays one
    assert lesion_f1(pred2, truth) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_equals_dice(seed):
    pred, truth = _random_masks(seed)
    for p, t in zip(pred, truth):
        m = case_metrics(p, t)
        assert m["f1"] == pytest.approx(m["dice"], rel=1e-12)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI 1.6 warns about its own internals
def test_agreement_with_monai_metrics():
    from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric

    pred, truth = _random_masks(7)
    spacing = (1.0, 1.5, 3.0)
    ours = [case_metrics(p, t, spacing) for p, t in zip(pred, truth)]
    yp, yt = torch.from_numpy(pred[:, None]).float(), torch.from_numpy(truth[:, None]).float()
    dice = DiceMetric(include_background=True, reduction="none")(yp, yt)[:, 0]
    conf = ConfusionMatrixMetric(include_background=True, metric_name=["precision", "recall", "f1"],
                                 compute_sample=True, reduction="none")
    conf(yp, yt)
    precision, recall, f1 = (r[:, 0] for r in conf.aggregate())
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        yp, yt, spacing=spacing)[:, 0]
    for i, m in enumerate(ours):
        assert m["dice"] == pytest.approx(dice[i].item(), rel=1e-6)
        assert m["precision"] == pytest.approx(precision[i].item(), rel=1e-6)
        assert m["recall"] == pytest.approx(recall[i].item(), rel=1e-6)
        assert m["f1"] == pytest.approx(f1[i].item(), rel=1e-6)
        assert m["hd95"] == pytest.approx(hd[i].item(), rel=1e-6)


def test_volume_metrics_regroups_slices():
    rng = np.random.default_rng(3)
    vols_p = [rng.random((6, 5, n)) > 0.5 for n in (3, 4)]
    vols_t = [rng.random((6, 5, n)) > 0.5 for n in (3, 4)]
    # interleave the slices of the two cases
    order = [("b", 0), ("a", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2), ("b", 3)]
    index = {"a": 0, "b": 1}
    slices_p = [vols_p[index[c]][..., k] for c, k in order]
    slices_t = [vols_t[index[c]][..., k] for c, k in order]
    frame = volume_metrics(slices_p, slices_t, [c for c, _ in order], spacing=(1, 1, 3))
    assert list(frame["case_id"]) == ["b", "a"] and list(frame["n_slices"]) == [4, 3]
    for row, case in zip(frame.itertuples(), ("b", "a")):
        expected = case_metrics(vols_p[index[case]], vols_t[index[case]], spacing=(1, 1, 3))
        for key, value in expected.items():
            got = getattr(row, key)
            assert (math.isnan(value) and math.isnan(got)) or got == pytest.approx(value), key


def test_per_volume_dice_differs_from_mean_of_slices():
    # slice 1: truth 1 px, pred 1 px, same → Dice 1; slice 2: truth 3 px, pred 0 → Dice 0.
    # mean over slices 0.5, but per volume: 2·1/(2·1 + 0 + 3) = 0.4
    t1, p1 = np.zeros((2, 2), bool), np.zeros((2, 2), bool)
    t1[0, 0] = p1[0, 0] = True
    t2, p2 = np.zeros((2, 2), bool), np.zeros((2, 2), bool)
    t2[0, :] = True
    t2[1, 0] = True
    frame = volume_metrics([p1, p2], [t1, t2], ["x", "x"])
    assert frame.loc[0, "dice"] == pytest.approx(0.4)


def test_aggregate_mean_median_pooled_and_nan_skipping():
    df = pd.DataFrame([
        # dice 1: tp 2, fp 0, fn 0; dice 2·1/(2+1+1)=0.5; an empty case (NaN)
        {"case_id": "a", "dice": 1.0, "f1": 1.0, "tp": 2, "fp": 0, "fn": 0, "tn": 6},
        {"case_id": "b", "dice": 0.5, "f1": 0.5, "tp": 1, "fp": 1, "fn": 1, "tn": 5},
        {"case_id": "c", "dice": float("nan"), "f1": float("nan"), "tp": 0, "fp": 0, "fn": 0, "tn": 8},
    ])
    out = aggregate(df)
    assert out["n_cases"] == 3 and out["dice_n_cases"] == 2
    assert out["dice_mean_per_case"] == pytest.approx(0.75)
    assert out["dice_median_per_case"] == pytest.approx(0.75)
    # pooled: TP 3, FP 1, FN 1 → 6/8; precision = recall = 3/4
    assert out["dice_pooled"] == pytest.approx(0.75)
    assert out["precision_pooled"] == pytest.approx(0.75) and out["iou_pooled"] == pytest.approx(0.6)
    assert (out["tp_pooled"], out["fp_pooled"], out["fn_pooled"], out["tn_pooled"]) == (3, 1, 1, 19)


@pytest.mark.parametrize("seed", [4, 5])
def test_pooled_dice_equals_pooled_f1(seed):
    pred, truth = _random_masks(seed)
    out = aggregate(evaluate_cases(list(pred), list(truth), ["p", "q", "r"]))
    assert out["dice_pooled"] == pytest.approx(out["f1_pooled"], rel=1e-12)
    assert out["hd95_mean_per_case"] > 0 and "lesion_f1_median_per_case" in out


def test_largest_connected_component():
    mask = np.zeros((5, 7), bool)
    mask[0:2, 0:2] = True        # 4 px
    mask[3:5, 3:7] = True        # 8 px: kept
    mask[2, 2] = True            # diagonal to both blobs: joins them with full connectivity
    full = largest_connected_component(mask)
    assert full.sum() == 13      # one component of 4 + 1 + 8
    faces = largest_connected_component(mask, connectivity=1)
    assert faces.sum() == 8 and faces[3:5, 3:7].all()
    t = largest_connected_component(torch.from_numpy(mask), connectivity=1)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.bool and int(t.sum()) == 8
    assert not largest_connected_component(np.zeros((3, 3))).any()


def test_errors():
    with pytest.raises(ValueError, match="pred must be binary"):
        confusion_counts(np.full((2, 2), 0.7), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"pred shape \(2, 2\) must equal truth shape \(2, 3\)"):
        case_metrics(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="spacing must be 3 positive voxel sizes"):
        case_metrics(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1, 1))
    with pytest.raises(ValueError, match="same length"):
        volume_metrics([np.zeros((2, 2))], [], ["a"])
    with pytest.raises(ValueError, match="case 'a': slices must be 2D arrays of one shape"):
        volume_metrics([np.zeros((2, 2)), np.zeros((2, 3))], [np.zeros((2, 2)), np.zeros((2, 3))], ["a", "a"])
    with pytest.raises(ValueError, match="spacing mapping has no entry for case 'b'"):
        evaluate_cases([np.ones((2, 2))] * 2, [np.ones((2, 2))] * 2, ["a", "b"], spacing={"a": (1, 1)})
    with pytest.raises(ValueError, match="connectivity must be between 1 and 2"):
        largest_connected_component(np.zeros((2, 2)), connectivity=3)
