import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from seglib.eval.stats import (
    bootstrap_ci,
    compare_to_baseline,
    format_mean_ci,
    holm,
    mean_ci,
    paired_test,
    rank_biserial,
    test_claim,
)

VALUES = np.array([0.81, 0.79, 0.85, 0.88, 0.76, 0.83, 0.90, 0.80])


@pytest.mark.parametrize("method,scipy_method", [("percentile", "percentile"), ("bca", "BCa")])
def test_bootstrap_matches_scipy(method, scipy_method):
    expected = st.bootstrap((VALUES,), np.mean, n_resamples=2000, method=scipy_method,
                            rng=np.random.default_rng(4), vectorized=True).confidence_interval
    low, high = bootstrap_ci(VALUES, n_resamples=2000, method=method, rng=4)
    assert (low, high) == pytest.approx((expected.low, expected.high))
    # NaNs are skipped
    assert bootstrap_ci(np.append(VALUES, np.nan), n_resamples=2000, method=method, rng=4) == pytest.approx((low, high))


def test_bootstrap_degenerate_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([0.5]))
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan, 0.5]))
    assert bootstrap_ci([0.7, 0.7, 0.7], method="bca") == (0.7, 0.7)
    with pytest.raises(ValueError, match='Did you mean "bca"'):
        bootstrap_ci(VALUES, method="bcaa")


def test_t_interval_closed_form():
    # [1, 2, 3]: mean 2, sd 1, t_{0.975, 2} = 4.302653 -> 2 +/- 4.302653 / sqrt(3) = 2 +/- 2.484138
    low, high = bootstrap_ci([1, 2, 3], method="t")
    assert (low, high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)


def test_mean_ci_and_format():
    d = mean_ci([1.0, 2.0, 3.0, np.nan], method="t")
    assert d["mean"] == 2.0 and d["n"] == 3
    assert format_mean_ci({"mean": 0.8123, "low": 0.79, "high": 0.8334}) == "0.812 [0.790, 0.833]"
    assert format_mean_ci({"mean": 0.5, "low": float("nan"), "high": float("nan")}, digits=2) == "0.50 [nan, nan]"


def test_rank_biserial_tiny_example():
    # d = a - b = [1, -2, 3, 4]; ranks of |d| = 1, 2, 3, 4; R+ = 1 + 3 + 4 = 8, R- = 2;
    # r = (8 - 2) / (8 + 2) = 0.6
    assert rank_biserial([2, 0, 5, 9], [1, 2, 2, 5]) == pytest.approx(0.6)
    assert rank_biserial([1, 2], [0, 1]) == 1.0
    assert math.isnan(rank_biserial([1, 2], [1, 2]))


def test_paired_test_matches_scipy_and_drops_nan_pairs():
    rng = np.random.default_rng(0)
    a = rng.normal(0.8, 0.05, 12)
    b = a - rng.normal(0.02, 0.02, 12)
    expected = st.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    res = paired_test(a, b)
    assert res["p"] == pytest.approx(expected.pvalue) and res["statistic"] == pytest.approx(expected.statistic)
    assert res["n"] == 12 and res["median_diff"] == pytest.approx(np.median(a - b))
    one_sided = paired_test(a, b, alternative="greater")
    assert one_sided["p"] == pytest.approx(st.wilcoxon(a, b, alternative="greater").pvalue)
    with_nan = paired_test(np.append(a, [np.nan, 0.5]), np.append(b, [0.4, np.nan]))
    assert with_nan["n"] == 12 and with_nan["p"] == pytest.approx(expected.pvalue)


def test_paired_test_rules_without_exceptions():
    few = paired_test([1, 2, 3], [0, 1, 2])
    assert math.isnan(few["p"]) and few["n"] == 3 and few["effect_size"] == 1.0
    zeros = paired_test([0.5] * 8, [0.5] * 8)
    assert zeros["p"] == 1.0 and zeros["effect_size"] == 0.0
    empty = paired_test([np.nan], [1.0])
    assert empty["n"] == 0 and math.isnan(empty["p"])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1, 2], [1])


def test_holm_hand_worked():
    # sorted p: 0.01, 0.03, 0.04 (m = 3) -> x3, x2, x1 = 0.03, 0.06, 0.04;
    # running max -> 0.03, 0.06, 0.06; back in input order [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06]
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # NaN passes through and does not count in m (m = 2): 0.01 x2 = 0.02, 0.04 x1 -> max(0.02, 0.04)
    np.testing.assert_allclose(holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    # capped at 1: 0.5 x2 = 1.0, 0.6 x1 -> max(1.0, 0.6) = 1.0
    np.testing.assert_allclose(holm([0.6, 0.5]), [1.0, 1.0])
    assert holm([]).size == 0
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm([1.2])


def _grid():
    rng = np.random.default_rng(1)
    rows = []
    for case in range(10):
        base = rng.uniform(0.6, 0.9)
        for seed in range(3):
            for config, shift in [("dice", 0.0), ("bce", 0.05), ("same", 0.0)]:
                noise = rng.normal(0, 0.005)
                rows.append({"loss": config, "case": f"c{case}", "seed": seed, "dsc": base + shift + noise})
    return pd.DataFrame(rows)


def test_compare_to_baseline():
    df = _grid()
    out = compare_to_baseline(df, "loss", "case", "dsc", baseline="dice", n_resamples=500, rng=0)
    assert list(out["config"]) == ["dice", "bce", "same"]
    base = out.iloc[0]
    assert math.isnan(base["p"]) and not base["differs"] and base["n"] == 10
    # seeds averaged per case first, then the Wilcoxon test on case means
    per_case = df.groupby(["loss", "case"])["dsc"].mean().unstack("loss")
    expected = paired_test(per_case["bce"], per_case["dice"])
    bce = out.set_index("config").loc["bce"]
    assert bce["p"] == pytest.approx(expected["p"]) and bce["mean"] == pytest.approx(per_case["bce"].mean())
    assert bce["effect_size"] == 1.0 and bce["differs"]
    np.testing.assert_allclose(out["p_holm"], holm(out["p"]), equal_nan=True)
    assert out["ci_low"].le(out["mean"]).all() and out["ci_high"].ge(out["mean"]).all()
    with pytest.raises(ValueError, match='Did you mean "dice"'):
        compare_to_baseline(df, "loss", "case", "dsc", baseline="dise")
    with pytest.raises(ValueError, match="Column 'dcs'"):
        compare_to_baseline(df, "loss", "case", "dcs", baseline="dice")


def test_claim_verdicts():
    a = np.linspace(0.8, 0.9, 10)
    assert test_claim(a, a - 0.05, "A beats B")["verdict"] == "supported"
    assert test_claim(a - 0.05, a, "A beats B")["verdict"] == "not supported"
    res = test_claim(a[:3], a[:3] - 0.05, "A beats B")
    assert res["verdict"] == "inconclusive" and "n = 3 pairs" in res["measured"]


def test_smallest_p_is_the_one_extreme_sign_pattern_and_holm_scales_it():
    from scipy.stats import wilcoxon

    from seglib.eval.stats import describe_design_power, smallest_p

    # 5 pairs all of one sign: scipy's exact p is 2/32 two-sided, 1/32 one-sided
    a, b = np.arange(1.0, 6.0), np.zeros(5)
    assert smallest_p(5) == pytest.approx(wilcoxon(a, b).pvalue) == pytest.approx(0.0625)
    assert smallest_p(5, alternative="greater") == pytest.approx(wilcoxon(a, b, alternative="greater").pvalue)
    assert smallest_p(12, m=11) == pytest.approx(11 * 2 / 4096)
    assert smallest_p(2, m=10) == 1.0                                    # capped
    assert "cannot" in describe_design_power(6, 9) and "0.28" in describe_design_power(6, 9)
    assert "can reach" in describe_design_power(12, 11)
    with pytest.raises(ValueError, match="at least 1"):
        smallest_p(0)
