"""Statistics on arrays small enough to check by hand, and cross-checked against scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats


def test_describe_hand_values():
    d = stats.describe([1.0, 2.0, 3.0, 4.0, np.nan])  # NaN = a failed seed: dropped
    assert d.n == 4
    assert d.mean == pytest.approx(2.5)
    assert d.median == pytest.approx(2.5)
    assert d.std == pytest.approx(math.sqrt(5 / 3))  # sample sd: sum of squares 5, n - 1 = 3
    assert d.iqr == pytest.approx(1.5)  # q75 3.25 − q25 1.75


def test_describe_rows_are_groups():
    d = stats.describe(np.array([[1.0, 3.0], [2.0, 2.0]]))
    np.testing.assert_allclose(d.mean, [2.0, 2.0])
    np.testing.assert_allclose(d.std, [math.sqrt(2), 0.0])


def test_paired_t_matches_scipy_and_its_interval_matches_its_p():
    d = np.array([[0.10, 0.12, 0.08], [0.5, -0.4, 0.2], [-1.0, -2.0, -1.5]])
    t = stats.paired_t(d)
    for row, p, low, high in zip(d, t.p, t.low, t.high):
        ref = sps.ttest_1samp(row, 0.0)
        assert p == pytest.approx(ref.pvalue)
        ci = ref.confidence_interval(0.95)
        assert (low, high) == pytest.approx((ci.low, ci.high))
        assert (p < 0.05) == (low > 0 or high < 0)  # one procedure: the interval and p agree
    # hand value: mean 0.1, sd 0.02, se 0.02/√3, t(0.975, 2) = 4.303 → half-width 0.0497
    assert t.high[0] - t.mean[0] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)


def test_paired_t_degenerate_cases():
    one = stats.paired_t([0.3])
    assert math.isnan(one.p[0]) and math.isnan(one.low[0]) and one.mean[0] == 0.3  # one seed: no interval, no test
    same = stats.paired_t([0.0, 0.0, 0.0])
    assert same.p[0] == 1.0 and (same.low[0], same.high[0]) == (0.0, 0.0)  # identical inputs
    const = stats.paired_t([2 / 60 - 4 / 60, 1 / 60 - 3 / 60, 3 / 60 - 5 / 60])  # equal up to rounding
    assert const.sd[0] == 0.0 and const.p[0] == 0.0


def test_t_interval_per_element_levels():
    low, high = stats.t_interval([0.0, 0.0], [1.0, 1.0], [4, 4], [0.05, 0.0125])
    assert high[0] == pytest.approx(sps.t.ppf(0.975, 4))
    assert high[1] == pytest.approx(sps.t.ppf(1 - 0.0125 / 2, 4))
    assert np.isnan(stats.t_interval(0.0, 1.0, 0, 0.05)[0])  # df 0: no interval


def test_tost_hand_cases_and_scipy_cross_check():
    assert stats.tost_p([0.0, 0.0, 0.0], -1, 1) == 0.0  # identical: exactly inside
    assert stats.tost_p([2.0, 2.0, 2.0], -1, 1) == 1.0  # constant outside the margin
    d = np.array([-0.5, 0.5, 0.0, 0.25, -0.25])
    lower = sps.ttest_1samp(d, -1.0, alternative="greater").pvalue
    upper = sps.ttest_1samp(d, 1.0, alternative="less").pvalue
    assert stats.tost_p(d, -1, 1) == pytest.approx(max(lower, upper))
    assert stats.tost_p(d, -1, 1) < 0.01
    assert stats.tost_p(d + 3, -1, 1) > 0.5
    with pytest.raises(ValueError):
        stats.tost_p(d, 1, -1)


def test_holm_hand_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone: 0.02, 0.03, 0.06, 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.5, 0.9])[1] == 1.0  # capped


def test_holm_levels_reproduce_holm_decisions():
    # steps: 0.005 < 0.05/4 ✓, 0.01 < 0.05/3 ✓, 0.03 ≥ 0.05/2 ✗ → the rest get the failing step's level
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    levels = stats.holm_levels(p, 0.05)
    np.testing.assert_allclose(levels[:4], [0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4])
    assert math.isnan(levels[4])
    # Holm's own counter-example to a naive per-step interval: p = (0.03, 0.04), m = 2 rejects nothing,
    # although 0.04 < α/1 — its level must be α/2, not α.
    np.testing.assert_allclose(stats.holm_levels([0.03, 0.04], 0.05), [0.025, 0.025])
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 8))
        assert np.array_equal(p < stats.holm_levels(p, 0.05), stats.holm(p) < 0.05)


def test_seeds_needed_hand_values():
    # effect = 1 sd at α = 0.05: the t power calculation needs 10 seeds (normal approximation: 7.85)
    assert stats.seeds_needed(1.0, 1.0, 3, level=0.05, low=-0.1, high=0.1) == 10
    n = 10
    ncp = 1.0 * math.sqrt(n)
    crit = sps.t.ppf(0.975, n - 1)
    assert sps.nct.sf(crit, n - 1, ncp) > 0.78  # … and 10 seeds really give about 80 % power
    assert math.isnan(stats.seeds_needed(1.0, float("nan"), 1, level=0.05, low=-0.1, high=0.1))  # spread unknown
    assert stats.seeds_needed(0.0, 1e6, 5, level=0.05, low=-0.1, high=0.1) == 1001  # hopeless: "> cap"
    # a mean well inside the margins: the equivalence route is the short one
    assert stats.seeds_needed(0.0, 0.1, 3, level=0.05, low=-0.5, high=0.5) <= 5
    # a stricter level (a larger family) needs more seeds
    assert stats.seeds_needed(1.0, 1.0, 3, level=0.0125, low=-0.1, high=0.1) > 10


def test_prob_a_better_counts_ties_half_and_has_an_exact_interval():
    a, b = [3.0, 3.0, 3.0, 1.0], [1.0, 2.0, 3.0, 2.0]
    assert stats.prob_a_better(a, b, higher_is_better=True) == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert stats.prob_a_better(a, b, higher_is_better=False) == pytest.approx((0 + 0 + 0.5 + 1) / 4)
    low, high = stats.proportion_interval(np.array([3 / 4, 1.0]), np.array([4, 3]))
    ref = sps.binomtest(3, 4).proportion_ci(0.95, method="exact")
    assert (low[0], high[0]) == pytest.approx((ref.low, ref.high))
    assert high[1] == 1.0 and low[1] == pytest.approx(0.025 ** (1 / 3))  # 3 of 3: [ (α/2)^(1/n), 1 ]


def test_iqm_and_its_bootstrap_interval():
    x = np.arange(12.0)
    assert stats.iqm(x) == pytest.approx(sps.trim_mean(x, 0.25))
    est, low, high = stats.iqm_ci(np.vstack([x, x * 2]), n_resamples=500, random_state=1)
    np.testing.assert_allclose(est, [5.5, 11.0])
    assert np.all(low < est) and np.all(est < high)
    # the weight trick equals resampling and trimming directly (same index draws)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 12, (500, 12))
    direct = np.quantile([sps.trim_mean(x[i], 0.25) for i in idx], [0.025, 0.975])
    assert (low[0], high[0]) == pytest.approx(tuple(direct))
    assert np.isnan(stats.iqm_ci(x[:9])[1])  # fewer than 10 seeds: no IQM interval


def test_mcnemar_counts():
    y = np.zeros(12, dtype=int)
    pred_a = np.array([0] * 8 + [1] * 2 + [0] * 2)
    pred_b = np.array([1] * 8 + [0] * 2 + [0] * 2)
    res = stats.mcnemar(y, pred_a, pred_b)
    assert (res.a_only, res.b_only, res.n) == (8, 2, 12)
    assert res.p == pytest.approx(112 / 1024)  # 2 · (1 + 10 + 45) / 2¹⁰
    assert res.accuracy_difference_pp == pytest.approx(50.0)


def test_decide_follows_the_intervals():
    kw = dict(margin_low=-1.0, margin_high=1.0, n=[5, 5, 5, 5, 5, 0])
    words, winner, margin = stats.decide(
        ["keras"] * 6, ["pytorch"] * 6, a_ahead=[1, 0, 1, 1, 1, np.nan],
        dec_low=[2.0, -3.0, 0.1, -0.5, -3.0, np.nan], dec_high=[3.0, -0.5, 0.5, 0.4, 3.0, np.nan],
        eq_low=[2.2, -2.8, 0.2, -0.3, -2.0, np.nan], eq_high=[2.8, -0.7, 0.4, 0.3, 2.0, np.nan], **kw)
    assert list(words) == ["keras better", "pytorch better", "keras better", "equivalent", "inconclusive",
                           "no paired seeds"]
    assert list(winner) == ["keras", "pytorch", "keras", "", "", ""]
    assert list(margin) == ["exceeds the margin", "", "within the margin", "", "", ""]
