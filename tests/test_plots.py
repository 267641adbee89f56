"""Tests of seglib.plots: every figure on tiny synthetic tables/arrays, NaN tolerance, saving."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb, to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from seglib import plots  # noqa: E402
from seglib.plots.images import lesion_centre  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def _luminance(color):
    r, g, b = to_rgb(color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _history():
    rows = []
    for config in ("dice", "bce"):
        for seed in (0, 1):
            for epoch in range(1, 5):
                rows.append(dict(config=config, seed=seed, epoch=epoch, train_loss=1.0 / epoch + 0.1 * seed,
                                 val_loss=1.2 / epoch, val_dice=1 - 1.0 / epoch, optimizer="adam" if seed else "sgd"))
    return pd.DataFrame(rows)


def _summary():
    return pd.DataFrame({
        "config": ["bce", "tversky α=0.25", "dice α=0.5", "tversky α=0.75"],
        "alpha": [np.nan, 0.25, 0.5, 0.75],
        "dice_mean": [0.80, 0.85, 0.83, 0.82], "dice_low": [0.75, 0.80, 0.80, 0.78],
        "dice_high": [0.85, 0.90, 0.86, 0.86],
        "f1_mean": [0.70, 0.90, 0.80, np.nan],
        "precision_mean": [0.7, 0.8, 0.85, 0.9], "precision_low": [0.6, 0.7, 0.8, 0.85],
        "precision_high": [0.8, 0.9, 0.9, 0.95],
        "recall_mean": [0.9, 0.85, 0.8, 0.7],
    })


# ---------------------------------------------------------------- style / save

def test_style_is_a_context_that_restores_rcparams():
    before = matplotlib.rcParams["figure.dpi"]
    with plots.style():
        assert matplotlib.rcParams["figure.dpi"] == 100
        assert matplotlib.rcParams["axes.spines.top"] is False
    assert matplotlib.rcParams["figure.dpi"] == before


def test_save_writes_png_creates_folders_and_is_deterministic(tmp_path):
    paths = []
    for i in range(2):
        fig = plots.per_volume_bars(pd.Series([0.5, 0.7, 0.9], index=["a", "b", "c"]))
        paths.append(plots.save(fig, tmp_path / f"deep/er/fig{i}"))
    assert paths[0] == tmp_path / "deep/er/fig0.png"
    data = [p.read_bytes() for p in paths]
    assert data[0][:8] == b"\x89PNG\r\n\x1a\n" and len(data[0]) > 1000
    assert data[0] == data[1]  # no timestamp/software metadata: same figure, same bytes
    with pytest.raises(ValueError, match=r"\.png"):
        plots.save(plots.per_volume_bars(pd.Series([0.5])), tmp_path / "x.pdf")


# ---------------------------------------------------------------- training curves

def test_training_curves_panels_lines_and_band():
    h = _history()
    fig = plots.training_curves(h, metrics=("train_loss", "val_loss", "val_dice"))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.lines) == 2  # one mean line per config
    # the mean over seeds of train_loss for config "dice" at epoch 2 is 1/2 + (0 + 0.1)/2 = 0.55
    line = fig.axes[0].lines[0]
    assert line.get_ydata()[1] == pytest.approx(0.55)
    assert len(fig.axes[0].collections) == 2  # min–max band where the seeds differ
    assert _legend_texts(fig) == ["dice", "bce"]
    assert fig.get_figwidth() <= 10


def test_training_curves_skips_missing_metric_handles_nan_and_facets():
    h = _history().drop(columns="val_dice")
    h.loc[h.index[:3], "val_loss"] = np.nan
    fig = plots.training_curves(h, metrics=("train_loss", "val_loss", "val_dice"), facet="optimizer", band="ci")
    assert len(fig.axes) == 2 * 2  # two optimiser rows × two present metrics
    with pytest.raises(ValueError, match="none of"):
        plots.training_curves(h, metrics=("val_dice",))
    with pytest.raises(ValueError, match="Did you mean"):
        plots.training_curves(h, band="minmx")


# ---------------------------------------------------------------- bars and colours

def test_metric_bars_counts_errorbars_best_and_nan():
    s = _summary()
    fig = plots.metric_bars(s, metrics=("dice", "f1"))
    ax = fig.axes[0]
    assert len(ax.patches) == 4 * 2 - 1  # f1 of the last config is NaN: no bar ...
    assert any(t.get_text() == "n/a" for t in ax.texts)  # ... but an n/a mark
    best = [p for p in ax.patches if p.get_linewidth() == pytest.approx(1.8)]
    assert sorted(p.get_height() for p in best) == pytest.approx([0.85, 0.90])  # best dice, best f1
    assert [t.get_text() for t in ax.get_xticklabels()] == list(s["config"])
    assert _legend_texts(fig) == ["dice", "f1"]


def test_metric_bars_order_and_config_colours():
    s = _summary()
    order = ["dice α=0.5", "bce"]
    colors = {"bce": "#7f7f7f", "dice α=0.5": "#67000d"}
    fig = plots.metric_bars(s, metrics=("precision",), order=order, colors=colors)
    ax = fig.axes[0]
    assert [to_rgba(c) for c in (colors["dice α=0.5"], colors["bce"])] == [p.get_facecolor() for p in ax.patches]
    with pytest.raises(ValueError, match="missing column"):
        plots.metric_bars(s, metrics=("hd95",))


def test_alpha_colors_rule():
    cols = plots.alpha_colors({"bce": None, "a25": 0.25, "a35": 0.35, "dice": 0.5, "a75": 0.75, "nan": float("nan")})
    assert list(cols) == ["bce", "a25", "a35", "dice", "a75", "nan"]
    assert _luminance(cols["a25"]) < _luminance(cols["a35"]) < _luminance(cols["a75"])  # lighter = higher α
    assert cols["dice"] == plots.DARK_RED.lower()
    assert cols["bce"] == cols["nan"] == "#7f7f7f"
    with pytest.raises(ValueError, match="1.5"):
        plots.alpha_colors({"x": 1.5})
    with pytest.raises(TypeError, match="number or None"):
        plots.alpha_colors({"x": "0.3"})


# ---------------------------------------------------------------- trade-off

def test_tradeoff_vs_alpha_lines_baseline_and_marker():
    s = _summary()
    fig = plots.tradeoff_vs_alpha(s, metrics=("precision", "recall", "dice"))
    assert len(fig.axes) == 3
    ax = fig.axes[0]
    curve, base, mark = ax.lines  # curve, baseline (dashed), hypothesis marker (dotted)
    assert list(curve.get_xdata()) == [0.25, 0.5, 0.75]
    assert base.get_ydata()[0] == pytest.approx(0.7)  # BCE is the single row without alpha
    assert mark.get_xdata()[0] == pytest.approx(0.25)
    assert "baseline: bce" in _legend_texts(fig)
    fig2 = plots.tradeoff_vs_alpha(s, metrics=("dice",), baseline="bce", mark_alpha=None)
    assert len(fig2.axes[0].lines) == 2
    with pytest.raises(ValueError, match='Did you mean "bce"'):
        plots.tradeoff_vs_alpha(s, baseline="bcee")


# ---------------------------------------------------------------- distributions

def _cases(rng):
    df = pd.DataFrame({"config": np.repeat(["a", "b", "c"], 10), "seed": np.tile([0, 1], 15),
                       "case_id": np.tile(range(5), 6), "dice": rng.random(30)})
    df.loc[[0, 5], "dice"] = np.nan
    df.loc[df["config"] == "c", "dice"] = np.nan  # a config with no value at all
    return df


def test_per_case_distribution_box_and_strip():
    rng = np.random.default_rng(1)
    df = _cases(rng)
    fig = plots.per_case_distribution(df, metric="dice", kind="box", rng=rng)
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # one box per config with data
    assert len(ax.collections) == 2  # one scatter per seed
    assert sum(len(c.get_offsets()) for c in ax.collections) == 20 - 2  # finite values only
    assert any(t.get_text() == "n/a" for t in ax.texts)
    assert _legend_texts(fig) == ["seed 0", "seed 1"]
    fig = plots.per_case_distribution(df.drop(columns="seed"), metric="dice", kind="strip", order=["b", "a"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["b", "a"]
    with pytest.raises(ValueError, match="Did you mean"):
        plots.per_case_distribution(df, kind="boxx")


def test_per_volume_bars_sorted_with_mean_and_median_lines():
    values = pd.Series([0.9, np.nan, 0.5, 0.7, 0.95], index=["p1", "p2", "p3", "p4", "p5"])
    fig = plots.per_volume_bars(values)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == sorted(heights) and len(heights) == 4  # NaN dropped, ascending
    # finite values 0.5, 0.7, 0.9, 0.95: mean 3.05/4 = 0.7625, median (0.7+0.9)/2 = 0.8
    mean_line, median_line = ax.lines
    assert mean_line.get_ydata()[0] == pytest.approx(0.7625)
    assert median_line.get_ydata()[0] == pytest.approx(0.8)
    assert to_rgb(mean_line.get_color()) == to_rgb("red") and to_rgb(median_line.get_color()) == to_rgb("green")
    assert _legend_texts(fig) == ["mean = 0.762", "median = 0.800"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["p3", "p4", "p1", "p5"]
    with pytest.raises(ValueError, match="no finite"):
        plots.per_volume_bars(pd.Series([np.nan]))
    with pytest.raises(TypeError, match="Series"):
        plots.per_volume_bars([0.1, 0.2])


def test_paired_scatter_pairs_on_index_and_drops_nan():
    a = pd.Series([0.9, 0.8, np.nan, 0.6, 0.7], index=list("abcde"))
    b = pd.Series([0.85, 0.9, 0.5, 0.4], index=list("abcd"))  # no "e"
    fig = plots.paired_scatter(a, b, "Adam", "SGD")
    ax, axd = fig.axes
    assert len(ax.collections[0].get_offsets()) == 3  # pairs a, b, d
    identity = ax.lines[0]
    assert np.allclose(identity.get_xdata(), identity.get_ydata())
    diffs = sorted(axd.collections[0].get_offsets()[:, 1])
    assert diffs == pytest.approx([-0.2, -0.05, 0.1])  # SGD − Adam for d, a, b
    with pytest.raises(ValueError, match="no case"):
        plots.paired_scatter(a[["c"]], b[["c"]] * np.nan, "A", "B")


# ---------------------------------------------------------------- benchmarks

def _bench():
    return pd.DataFrame({"conv": ["3d"] * 3 + ["2+1d"] * 3, "size": [32, 64, 128] * 2,
                         "peak_mem_mb": [100.0, 800.0, np.nan, 60.0, 400.0, 3200.0],
                         "time_per_step_s": [0.1, 0.3, np.nan, 0.1, 0.2, 0.5]})


def test_memory_time_lines_missing_marks_and_log_scale():
    fig = plots.memory_time(_bench())
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 2  # one per conv mode
        assert len(ax.lines[0].get_xdata()) == 2  # the 3d line skips its NaN (out of memory) point
        assert [t.get_text() for t in ax.texts] == ["×"]
    assert fig.axes[0].get_yscale() == "log"  # 3200/60 > 20
    assert fig.axes[1].get_yscale() == "linear"  # 0.5/0.1 = 5
    assert "× out of memory / not run" in _legend_texts(fig)
    b = pd.concat([_bench().assign(precision="fp32"), _bench().assign(precision="amp")])
    fig = plots.memory_time(b)
    assert all(len(ax.lines) == 4 for ax in fig.axes)


def test_sampler_figure_panels_and_fraction_boxes():
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"sampler": ["rejection"] * 3 + ["lesion_aware"] * 3, "threshold": [0.2, 0.4, 0.6] * 2,
                       "acceptance_rate": [0.3, 0.1, np.nan, 0.9, 0.8, 0.7],
                       "draws_per_accepted": [3.0, 10.0, np.nan, 1.1, 1.2, 1.4],
                       "lesion_fraction_mean": [0.4, 0.6, 0.8, 0.5, 0.5, 0.6]})
    fig = plots.sampler_figure(df)
    assert len(fig.axes) == 3
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 3]  # + the y = threshold line
    assert len(fig.axes[0].lines[0].get_xdata()) == 2  # NaN acceptance skipped
    assert fig.axes[1].get_yscale() == "log"
    long = pd.DataFrame({"sampler": np.repeat(["rejection", "lesion_aware"], 30),
                         "threshold": np.tile(np.repeat([0.2, 0.4, 0.6], 10), 2), "lesion_fraction": rng.random(60)})
    fig = plots.sampler_figure(df.drop(columns=["draws_per_accepted"]), fractions=long)
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 6  # a box per sampler × threshold
    listed = df.assign(lesion_fraction=[list(rng.random(4)) for _ in range(6)])
    assert len(plots.sampler_figure(listed).axes[2].patches) == 6


# ---------------------------------------------------------------- images

def _volume():
    rng = np.random.default_rng(3)
    image = rng.random((12, 14, 10))
    truth = np.zeros(image.shape)
    truth[3:6, 4:9, 2:5] = 1  # centre of mass (4, 6, 3)
    pred = np.roll(truth, 1, axis=0)
    return image, truth, pred


def test_lesion_centre_falls_back_to_prediction_then_volume_centre():
    image, truth, pred = _volume()
    assert lesion_centre(truth.astype(bool), pred.astype(bool)) == (4, 6, 3)
    assert lesion_centre(np.zeros_like(truth, bool), pred.astype(bool)) == (5, 6, 3)
    assert lesion_centre(np.zeros((12, 14, 10), bool)) == (6, 7, 5)


def test_overlay_planes_and_rows():
    image, truth, pred = _volume()
    image[0, 0, 0] = np.nan
    fig = plots.overlay_planes(image, truth, pred)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["axial (z = 3)", "coronal (y = 6)", "sagittal (x = 4)"]
    assert all(len(ax.collections) == 2 for ax in fig.axes)  # truth and prediction contours
    assert _legend_texts(fig) == ["truth", "prediction"]
    empty = np.zeros_like(truth)
    fig = plots.overlay_rows([dict(image=image, truth=truth, pred=pred, label="best"),
                              dict(image=image, truth=empty, pred=empty, label="worst", spacing=(1, 1, 2))])
    assert len(fig.axes) == 6
    assert [fig.axes[0].get_ylabel(), fig.axes[3].get_ylabel()] == ["best", "worst"]
    assert all(len(ax.collections) == 0 for ax in fig.axes[3:])  # nothing to outline
    with pytest.raises(ValueError, match="expected the image's"):
        plots.overlay_planes(image, truth[:5], pred)
    with pytest.raises(TypeError, match="Did you mean"):
        plots.overlay_rows([dict(image=image, truth=truth, prd=pred)])


def test_contour_grid_removes_unused_cells_and_accepts_rgb():
    rng = np.random.default_rng(4)
    truth = np.zeros((16, 16))
    truth[4:9, 5:11] = 1
    items = [dict(image=rng.random((16, 16)), truth=truth, pred=np.roll(truth, i, 1), label=f"case {i}")
             for i in range(4)]
    items.append(dict(image=(rng.random((16, 16, 3)) * 255).astype(np.uint8), truth=truth, pred=truth * 0.9,
                      label="rgb"))
    fig = plots.contour_grid(items, ncols=3)
    assert len(fig.axes) == 5  # 2×3 grid, sixth cell removed
    assert [ax.get_title() for ax in fig.axes][-1] == "rgb"
    assert fig.axes[-1].images[0].get_array().shape == (16, 16, 3)


def test_multi_contours_legend_and_crop():
    truth = np.zeros((32, 32))
    truth[10:20, 12:22] = 1
    preds = {"bce": np.roll(truth, 1, 0), "α=0.25": np.roll(truth, -1, 1), "α=0.5": np.zeros((32, 32))}
    fig = plots.multi_contours(np.random.default_rng(5).random((32, 32)), truth, preds,
                               colors={"bce": "#7f7f7f"}, crop_margin=2)
    ax = fig.axes[0]
    assert _legend_texts(fig) == ["truth", "bce", "α=0.25", "α=0.5 (empty)"]
    assert len(ax.collections) == 3  # two non-empty predictions + truth
    # union of masks: rows 10..20 (bce shifted down), cols 11..21 (α=0.25 shifted left);
    # a margin of 2 gives rows 8..22 and cols 9..23: 15 × 15 pixels
    assert ax.images[0].get_array().shape == (15, 15)
    assert to_rgb(fig.legends[0].legend_handles[1].get_color()) == to_rgb("#7f7f7f")


def test_every_figure_is_small_untitled_and_100_dpi():
    image, truth, pred = _volume()
    figs = [plots.training_curves(_history()), plots.metric_bars(_summary()),
            plots.tradeoff_vs_alpha(_summary()), plots.memory_time(_bench()),
            plots.overlay_planes(image, truth, pred)]
    for fig in figs:
        assert fig.dpi == 100
        assert 4 <= fig.get_figwidth() <= 10
        assert fig._suptitle is None


def test_paired_scatter_without_pairs_says_why_or_raises():
    a, b = pd.Series({"p1": 0.8}), pd.Series(dtype=float)
    with pytest.raises(ValueError, match="no case"):
        plots.paired_scatter(a, b, "Adam", "SGD")
    fig = plots.paired_scatter(a, b, "Adam", "SGD", empty="this grid has no SGD run")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("no SGD run" in t for t in texts)
    plt.close(fig)


def test_training_curves_are_small_multiples_never_ten_lines_on_one_axis():
    h = _history()
    many = pd.concat([h.assign(config=f"{c}-{i}") for i in range(5) for c in ("dice", "bce")], ignore_index=True)
    fig = plots.training_curves(many, metrics=("train_loss", "val_loss"))
    assert len(fig.axes) == 2 * 2                      # ten configurations: two rows of five
    assert max(len(ax.lines) for ax in fig.axes) <= 5
    fig = plots.training_curves(many, metrics=("train_loss", "val_loss"), facet="config", lines="metrics")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 10 and all(len(ax.lines) == 2 for ax in visible)  # train and val per panel
    assert fig.get_figwidth() <= 10
    with pytest.raises(ValueError, match="needs facet"):
        plots.training_curves(many, lines="metrics")
