"""Studies B and C: their tables and claims on known grids (the values are set, so the expected
numbers follow by hand), including table C1's learning-rate column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seglib.config import LOSS_CHOICES
from seglib.studies import brain, prostate
from seglib.studies.collect import GridResults

N_CASES = 12


def _grid(cells, dice_of, axes) -> GridResults:
    """``cells``: dicts of axis values (plus ``lr``); ``dice_of(cell, seed, k)`` the per-case Dice."""
    runs, cases = [], []
    for i, cell in enumerate(cells):
        for seed in (0, 1):
            key = f"r{i}s{seed}"
            label = ", ".join(f"{k}={v}" for k, v in cell.items() if k in ("model", "loss", "optim", "alpha"))
            runs.append({"key": key, "config": label, "seed": seed, **cell, "best_epoch": 2 + seed, "epochs_run": 4,
                         "train_time_s": 8.0 + seed, "time_per_epoch_s": 2.0 + seed / 4, "batch_size": 16})
            for k in range(N_CASES):
                d = dice_of(cell, seed, k)
                cases.append({"config": label, "seed": seed, "key": key, "case_id": f"c{k:02d}", "dice": d,
                              "precision": d, "recall": d, "f1": d, "hd95": 10 * (1 - d), "tp": 100 * d, "fp": 100 * (1 - d),
                              "fn": 100 * (1 - d), **{a: v for a, v in cell.items() if a != "lr"}})
    return GridResults(pd.DataFrame(runs), pd.DataFrame(cases), pd.DataFrame(), {}, axes,
                       {"runs": len(runs), "hits": 0, "trained": len(runs), "seconds": 0.0})


# --------------------------------------------------------------------------- study C
BRAIN_CELLS = [{"model": "unet", "loss": l, "optim": o, "lr": 0.003} for l in ("dice", "bce") for o in ("adam", "sgd")]
BRAIN_CELLS.append({"model": "unetpp", "loss": "dice", "optim": "adam", "lr": 0.003})


def _brain_dice(cell, seed, k):
    # Adam 0.80, SGD 0.30; BCE 0.02 lower; U-Net++ 0.01 higher; each case k/1000 apart; seed 1 +0.01
    base = 0.80 if cell["optim"] == "adam" else 0.30
    base -= 0.02 * (cell["loss"] == "bce")
    base += 0.01 * (cell["model"] == "unetpp")
    return base + k / 1000 + 0.01 * seed


@pytest.fixture(scope="module")
def brain_grid():
    return _grid(BRAIN_CELLS, _brain_dice, ["model.name", "loss.name", "optim.name"])


def test_c1_shows_the_learning_rate_each_run_trained_with(brain_grid):
    c1 = brain.table_c1(brain_grid)
    assert len(c1) == 4  # U-Net only: {Adam, SGD} x {Dice, BCE}
    # the profile trained SGD at 3e-3 too (its grid sweeps only the optimiser): not the seed's 1e-3
    assert set(c1["lr"]) == {0.003}
    assert set(c1["batch"]) == {16}
    row = c1[(c1["optimizer"] == "SGD") & (c1["loss"] == "Dice")].iloc[0]
    # mean over seeds of the per-volume mean: 0.30 + mean(k)/1000 + mean(seed)·0.01 = 0.30 + 0.0055 + 0.005
    assert row["validation mean DSC (per volume)"] == pytest.approx(0.3105)
    assert row["converge time (best epoch)"] == pytest.approx(2.5)
    assert row["training time (s)"] == pytest.approx(8.5) and row["max epoch"] == 4
    assert row["seed's DSC"] == pytest.approx(0.812136)


def test_c1_lists_every_learning_rate_when_runs_differ(brain_grid):
    grid = brain_grid
    runs = grid.runs.copy()
    runs.loc[(runs["optim"] == "sgd") & (runs["seed"] == 1), "lr"] = 0.01
    c1 = brain.table_c1(GridResults(runs, grid.cases, grid.history, grid.predictions, grid.axes, grid.summary))
    assert set(c1.loc[c1["optimizer"] == "SGD", "lr"]) == {"0.003, 0.01"}


def test_c2_pairs_unet_and_unetpp_by_volume(brain_grid):
    c2 = brain.table_c2(brain_grid)
    assert len(c2) == 1
    row = c2.iloc[0]
    assert row["difference (points)"] == pytest.approx(1.0)
    assert row["cases"] == N_CASES and row["Wilcoxon p"] < 0.01  # 12 of 12 volumes higher


def test_c_claims_on_a_known_grid(brain_grid):
    claims = {c["id"]: c for c in brain.claims(brain_grid)}
    assert claims["C-adam-sgd"]["verdict"] == "supported"
    # U-Net++ higher in every volume, so significantly: the seed's "not significantly" is not supported
    assert claims["C-unetpp"]["verdict"] == "not supported"
    assert claims["C-losses"]["verdict"] == "supported"  # Dice 0.02 above BCE in every volume
    head = brain.headline(brain_grid)
    assert head["best_config"] == "U-Net++ + Dice + Adam"
    assert head["baseline_mean_dsc"] == pytest.approx(0.8105)


# --------------------------------------------------------------------------- study B
PROSTATE_CELLS = [{"loss": "bce", "alpha": np.nan, "lr": 1e-3}] + [
    {"loss": "tversky", "alpha": a, "lr": 1e-3} for a in (0.25, 0.5, 0.75)]


def _prostate_dice(cell, seed, k):
    # BCE 0.70; Tversky 0.75 + 0.1·α; each case k/1000 apart
    return (0.70 if cell["loss"] == "bce" else 0.75 + 0.1 * cell["alpha"]) + k / 1000 + 0.0 * seed


@pytest.fixture(scope="module")
def prostate_grid():
    return _grid(PROSTATE_CELLS, _prostate_dice, ["loss.name", "loss.alpha"])


def test_b1_names_orders_and_marks_the_best(prostate_grid):
    b1 = prostate.table_b1(prostate_grid)
    assert list(b1["loss"]) == ["BCE", "Tversky α=0.25", "Dice (α=0.50)", "Tversky α=0.75"]
    # per patient: 0.75 + 0.075 + mean(k)/1000 = 0.8305 for α = 0.75, the best of every column of ours
    assert b1.loc[3, "dice (per patient)"] == pytest.approx(0.8305)
    from seglib.report.tables import display_table

    shown = display_table(b1)
    assert shown.bold.loc[3, "dice (per patient) [95 % CI]"] and shown.bold["dice (per patient) [95 % CI]"].sum() == 1
    assert b1.loc[0, "seed dice"] == pytest.approx(0.85551)  # the seed's Table 1 beside ours
    assert b1.loc[1, "differs from BCE"] in (True, "yes")


def test_b_claims_and_tradeoff_on_a_known_grid(prostate_grid):
    claims = {c["id"]: c for c in prostate.claims(prostate_grid)}
    assert claims["B-alpha-0.75"]["verdict"] == "supported"  # best, and above the runner-up in all 12 cases
    assert claims["B-alpha-0.25"]["verdict"] == "not supported"
    s = prostate.summary_with_alpha(prostate_grid)
    assert s.set_index("config").loc["Tversky α=0.25", "alpha"] == pytest.approx(0.25)
    head = prostate.headline(prostate_grid)
    assert head["best_config"] == "Tversky α=0.75" and head["baseline_mean_dice"] == pytest.approx(0.7055)


@pytest.mark.parametrize("loss", sorted(LOSS_CHOICES))
def test_every_loss_a_configuration_may_choose_has_a_name_in_every_report(loss):
    """A grid with a loss outside the study's published ones (the LGG CPU recipe trains Dice + BCE) is reported,
    not a KeyError in a cell."""
    from seglib.studies import stroke

    cells = [{"model": "unet", "loss": lo, "optim": "adam", "lr": 0.001} for lo in dict.fromkeys(["dice", loss])]
    grid = _grid(cells, _brain_dice, ["model.name", "loss.name", "optim.name"])
    assert len(brain.table_c1(grid)) == len(cells) and len(brain.table_results(grid)) == len(cells)
    assert stroke.report.LOSS_LABELS[loss] and brain.report.LOSS_LABELS[loss]
    name = prostate.report.name_of(loss, None)
    assert isinstance(name, str) and "None" not in name
