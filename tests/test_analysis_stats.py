"""Statistics on arrays small enough to check by hand (rliable style)."""
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


def test_bootstrap_two_values_percentile_interval_is_the_range():
    # Resampled means of {0, 1} are 0, ½, 1 (probabilities ¼, ½, ¼): the 95 % percentile interval is [0, 1].
    low, high = stats.bootstrap_mean_ci([0.0, 1.0], n_resamples=200, random_state=0, method="percentile")
    assert (low, high) == (0.0, 1.0)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_matches_scipy_resampling(method):
    x = np.array([[1.0, 2.0, 3.0, 4.0, 10.0], [0.5, 0.7, 0.9, 0.4, 0.6]])
    low, high = stats.bootstrap_mean_ci(x, n_resamples=300, random_state=7, method=method)
    ref = sps.bootstrap((x,), np.mean, axis=-1, vectorized=True, n_resamples=300, method=method,
                        rng=np.random.default_rng(7))
    np.testing.assert_allclose(low, ref.confidence_interval.low, rtol=1e-5)  # float32 resampled means
    np.testing.assert_allclose(high, ref.confidence_interval.high, rtol=1e-5)
    assert np.all(low < x.mean(axis=1)) and np.all(x.mean(axis=1) < high)


def test_bootstrap_one_seed_has_no_interval_and_constant_has_a_point():
    low, high = stats.bootstrap_mean_ci([0.8], n_resamples=50)
    assert math.isnan(low) and math.isnan(high)
    low, high = stats.bootstrap_mean_ci([2.0, 2.0, 2.0], n_resamples=50)
    assert (low, high) == (2.0, 2.0)


def test_bootstrap_is_reproducible_and_seed_dependent():
    x = np.arange(8.0) ** 2
    a = stats.bootstrap_mean_ci(x, n_resamples=200, random_state=1)
    assert a == stats.bootstrap_mean_ci(x, n_resamples=200, random_state=1)
    assert a != stats.bootstrap_mean_ci(x, n_resamples=200, random_state=2)


def test_signed_rank_exact_p():
    assert stats.signed_rank_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)  # all positive: 2 · 2⁻⁵
    assert stats.signed_rank_p([0.0, 0.0, 0.0]) == 1.0  # identical inputs
    assert math.isnan(stats.signed_rank_p([1.0]))  # no test with one pair
    rows = stats.signed_rank_p(np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, -2.0, -3.0, -4.0, -5.0]]))
    np.testing.assert_allclose(rows, [0.0625, 0.0625])


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


def test_prob_a_better_counts_ties_half():
    a, b = [3.0, 3.0, 3.0, 1.0], [1.0, 2.0, 3.0, 2.0]
    assert stats.prob_a_better(a, b, higher_is_better=True) == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert stats.prob_a_better(a, b, higher_is_better=False) == pytest.approx((0 + 0 + 0.5 + 1) / 4)


def test_holm_hand_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone: 0.02, 0.03, 0.06, 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.5, 0.9])[1] == 1.0  # capped


def test_mcnemar_exact_binomial():
    y = np.zeros(12, dtype=int)
    pred_a = np.array([0] * 8 + [1] * 2 + [0] * 2)
    pred_b = np.array([1] * 8 + [0] * 2 + [0] * 2)
    res = stats.mcnemar(y, pred_a, pred_b)
    assert (res.a_only, res.b_only, res.n) == (8, 2, 12)
    assert res.p == pytest.approx(112 / 1024)  # 2 · (1 + 10 + 45) / 2¹⁰
    assert res.accuracy_difference_pp == pytest.approx(50.0)
    assert stats.mcnemar(y, y, y).p == 1.0  # no discordant pairs


def test_seeds_needed_hand_values():
    assert stats.min_seeds_for_signed_rank(0.05) == 6  # 2/2⁶ = 0.031 ≤ 0.05 < 2/2⁵
    assert stats.min_seeds_for_signed_rank(0.05, family_size=10) == 9  # 2/2⁹ ≤ 0.005
    # effect = 1 sd: ((1.96 + 0.84) · 1)² = 7.85 → 8 (≥ the exact-test minimum 6)
    assert stats.seeds_needed(1.0, 1.0, 3, low=-0.1, high=0.1, alpha=0.05) == 8
    assert stats.seeds_needed(1.0, float("nan"), 1, low=-0.1, high=0.1, alpha=0.05) == 6  # spread unknown
    assert stats.seeds_needed(0.0, 1e6, 5, low=-0.1, high=0.1, alpha=0.05) == 1001  # hopeless: "> cap"


def test_verdict_words():
    kw = dict(alpha=0.05)
    assert stats.verdict("keras", "pytorch", a_better=True, p_holm=0.2, p_tost=0.01, **kw) == "equivalent"
    assert stats.verdict("keras", "pytorch", a_better=False, p_holm=0.01, p_tost=0.9, **kw) == "pytorch better"
    assert stats.verdict("keras", "pytorch", a_better=True, p_holm=0.01, p_tost=0.9, **kw) == "keras better"
    assert stats.verdict("keras", "pytorch", a_better=True, p_holm=0.2, p_tost=0.9, **kw) == stats.VERDICT_INCONCLUSIVE
    assert stats.verdict("keras", "pytorch", a_better=None, p_holm=float("nan"), p_tost=float("nan"),
                         **kw) == stats.VERDICT_INCONCLUSIVE
