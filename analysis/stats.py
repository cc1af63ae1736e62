"""Pure statistics over seeds (rliable style): typed functions, explicit ``random_state``, scipy underneath.

Every function works on one group (a 1-D array, NaNs dropped) or on many groups at once (a 2-D
array, one group per row, no NaNs) and then returns one value per row — the report analyses
thousands of (metric, condition, framework) groups, and looping in Python would dominate.

Conventions
- Paired values are "A − B" (quality, in percentage points for proportions) or "log(A / B)" (time,
  throughput, memory); a ratio's estimate is the geometric mean ratio exp(mean log(A/B)).
- Bootstrap CIs resample seeds. ``scipy.stats.bootstrap`` computes the interval (BCa by default);
  the resampled means are supplied to it through its ``bootstrap_result`` argument, computed as a
  matrix product of the values with the resample *counts*. That is the same resampling scipy does
  (same index draws from the same generator, shared by all rows — as scipy shares them across a
  batch), but costs one BLAS call instead of materialising a groups × resamples × seeds array.
- The paired test is the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, exact for small n).
- Equivalence (TOST) is t-based: two one-sided one-sample t-tests of the paired differences against
  the margins; "equivalent" ⇔ the (1 − 2α) t-interval lies inside the margins.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

BootstrapMethod = Literal["BCa", "percentile", "basic"]

# Bootstrap work is chunked so one chunk's resampled means stay around this many floats (~32 MB).
# They are float32: relative error ~1e-7 on a CI bound, and the sort scipy does inside is ~1.5× faster.
_CHUNK_FLOATS = 8_000_000


def _groups(values: ArrayLike) -> tuple[np.ndarray, bool]:
    """(2-D float array, was_1d). A 1-D input is one group with its NaNs dropped."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        return arr[np.isfinite(arr)][None, :], True
    if arr.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D array, got shape {arr.shape}")
    return arr, False


def _out(x: np.ndarray, was_1d: bool):
    return float(x[0]) if was_1d else x


@dataclass(frozen=True)
class Description:
    """Per-group summary; fields are floats for a 1-D input, arrays (one per row) for a 2-D input."""

    n: int | np.ndarray
    mean: float | np.ndarray
    median: float | np.ndarray
    std: float | np.ndarray  # sample standard deviation (ddof = 1); NaN for n = 1
    iqr: float | np.ndarray  # interquartile range (linear interpolation)


def describe(values: ArrayLike) -> Description:
    x, one = _groups(values)
    n = x.shape[1]
    if n == 0:
        nan = np.full(x.shape[0], np.nan)
        return Description(0 if one else np.zeros(x.shape[0], int), *(_out(nan, one) for _ in range(4)))
    mean = x.mean(axis=1)
    median = np.median(x, axis=1)
    std = x.std(axis=1, ddof=1) if n > 1 else np.full(x.shape[0], np.nan)
    iqr = stats.iqr(x, axis=1)
    ns = np.full(x.shape[0], n)
    return Description(int(n) if one else ns, _out(mean, one), _out(median, one), _out(std, one), _out(iqr, one))


def resample_counts(n: int, n_resamples: int, random_state: int | np.random.Generator) -> np.ndarray:
    """(n_resamples, n) matrix: how often each of the n seeds appears in each bootstrap resample.

    The index draws are exactly the ones ``scipy.stats.bootstrap`` makes with the same generator
    (``rng.integers(0, n, (n_resamples, n))``).
    """
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, n, (n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1.0)
    return counts


def bootstrap_mean_ci(values: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 2000,
                      random_state: int = 0, method: BootstrapMethod = "BCa"):
    """Bootstrap confidence interval of the mean over seeds: ``(low, high)``.

    Fewer than two values ⇒ NaN (a single seed has no interval). A group with no spread gets the
    degenerate interval [x, x]. Where BCa is undefined (e.g. one outlier among equal values) the
    percentile interval of the same bootstrap distribution is used.
    """
    x, one = _groups(values)
    g, n = x.shape
    low = np.full(g, np.nan)
    high = np.full(g, np.nan)
    if n < 2 or g == 0:
        return _out(low, one), _out(high, one)
    weights = (resample_counts(n, n_resamples, random_state).T / n).astype(np.float32)  # (n, B)
    constant = np.ptp(x, axis=1) == 0
    low[constant] = high[constant] = x[constant, 0]
    rows = np.flatnonzero(~constant)
    chunk = max(1, _CHUNK_FLOATS // max(n_resamples, 1))
    for start in range(0, rows.size, chunk):
        sel = rows[start:start + chunk]
        data = x[sel].astype(np.float32)
        dist = SimpleNamespace(bootstrap_distribution=data @ weights)  # (rows, B) resampled means
        lo, hi = _scipy_interval(data, dist, confidence, method)
        bad = ~(np.isfinite(lo) & np.isfinite(hi))
        if bad.any() and method != "percentile":
            lo2, hi2 = _scipy_interval(data[bad], SimpleNamespace(
                bootstrap_distribution=dist.bootstrap_distribution[bad]), confidence, "percentile")
            lo[bad], hi[bad] = lo2, hi2
        low[sel], high[sel] = lo, hi
    return _out(low, one), _out(high, one)


def _scipy_interval(data: np.ndarray, dist: SimpleNamespace, confidence: float, method: str):
    with warnings.catch_warnings():
        # Degenerate BCa rows are detected and redone by the caller; the warning is noise here.
        warnings.simplefilter("ignore")
        res = stats.bootstrap((data,), np.mean, axis=-1, vectorized=True, n_resamples=0,
                              bootstrap_result=dist, confidence_level=confidence, method=method)
    return (np.atleast_1d(np.asarray(res.confidence_interval.low, dtype=float)),
            np.atleast_1d(np.asarray(res.confidence_interval.high, dtype=float)))


def signed_rank_p(differences: ArrayLike):
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped, scipy's default).

    n < 2 ⇒ NaN (no test); all differences zero ⇒ 1.
    """
    d, one = _groups(differences)
    p = np.full(d.shape[0], np.nan)
    if d.shape[1] >= 2 and d.shape[0]:
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")  # scipy warns on rows that are all zeros; those get p = 1
            p = np.asarray(stats.wilcoxon(d, axis=-1).pvalue, dtype=float).reshape(-1)
        p[np.all(d == 0, axis=1)] = 1.0
    return _out(p, one)


def tost_p(differences: ArrayLike, low: float, high: float):
    """t-based TOST p-value that the mean paired difference lies inside (low, high).

    p = max(p(mean ≤ low), p(mean ≥ high)); small p ⇒ equivalent within the margins. With no
    spread the answer is exact: 0 when the (constant) difference is strictly inside, else 1.
    """
    if not low < high:
        raise ValueError(f"equivalence margins must satisfy low < high, got ({low}, {high})")
    d, one = _groups(differences)
    n = d.shape[1]
    p = np.full(d.shape[0], np.nan)
    if n >= 2 and d.shape[0]:
        mean = d.mean(axis=1)
        se = d.std(axis=1, ddof=1) / math.sqrt(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            p_low = stats.t.sf((mean - low) / se, n - 1)  # H0: mean ≤ low
            p_high = stats.t.cdf((mean - high) / se, n - 1)  # H0: mean ≥ high
        p = np.maximum(p_low, p_high)
        flat = se == 0
        p[flat] = np.where((mean[flat] > low) & (mean[flat] < high), 0.0, 1.0)
    return _out(p, one)


def prob_a_better(a: ArrayLike, b: ArrayLike, *, higher_is_better: bool):
    """Share of paired seeds on which A beats B (ties count one half) — the common-language effect."""
    a_arr = np.asarray(a, dtype=float)
    b_arr = np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired arrays differ in shape: {a_arr.shape} vs {b_arr.shape}")
    if a_arr.ndim == 1:
        keep = np.isfinite(a_arr) & np.isfinite(b_arr)
        a_arr, b_arr = a_arr[keep][None, :], b_arr[keep][None, :]
        one = True
    else:
        one = False
    if a_arr.shape[1] == 0:
        return _out(np.full(a_arr.shape[0], np.nan), one)
    wins = (a_arr > b_arr) if higher_is_better else (a_arr < b_arr)
    score = wins.astype(float) + 0.5 * (a_arr == b_arr)
    return _out(score.mean(axis=1), one)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and are
    not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def min_seeds_for_signed_rank(alpha: float, family_size: int = 1) -> int:
    """Smallest n at which an exact two-sided signed-rank test can reach p ≤ α / family_size (Holm's
    first step): its smallest possible p is 2 / 2ⁿ."""
    threshold = alpha / max(family_size, 1)
    return max(2, math.ceil(math.log2(2.0 / threshold)))


def seeds_needed(mean: ArrayLike, std: ArrayLike, n: ArrayLike, *, low: float, high: float, alpha: float,
                 family_size: int = 1, power: float = 0.8, cap: int = 1000):
    """Rough number of seeds after which the observed effect would likely get a verdict.

    Two routes, whichever needs fewer seeds: detect the difference (normal approximation at the
    Holm-corrected level, and at least the seeds an exact signed-rank test needs) or show
    equivalence (TOST at level α, only if the observed mean lies inside the margins). Both use the
    observed spread, so with 2–3 seeds this is a hint, not a promise. Values above ``cap`` return
    ``cap + 1`` ("more than cap"). Unknown spread (n < 2) ⇒ the exact-test minimum.
    """
    mean_a = np.atleast_1d(np.asarray(mean, dtype=float))
    std_a = np.atleast_1d(np.asarray(std, dtype=float))
    n_a = np.atleast_1d(np.asarray(n, dtype=float))
    floor = min_seeds_for_signed_rank(alpha, family_size)
    z_diff = special.ndtri(1 - alpha / (2 * max(family_size, 1))) + special.ndtri(power)
    z_eq = special.ndtri(1 - alpha) + special.ndtri(power)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_diff = np.maximum(np.ceil((z_diff * std_a / np.abs(mean_a)) ** 2), floor)
        gap = np.minimum(mean_a - low, high - mean_a)
        n_eq = np.where(gap > 0, np.maximum(np.ceil((z_eq * std_a / gap) ** 2), 3), np.inf)
    need = np.fmin(np.nan_to_num(n_diff, nan=np.inf), np.nan_to_num(n_eq, nan=np.inf))
    unknown = ~np.isfinite(std_a) | (n_a < 2)
    need = np.where(unknown, floor, need)
    need = np.maximum(need, n_a + 1)
    need = np.where(np.isfinite(need), np.minimum(need, cap + 1), cap + 1)
    return need.astype(int) if np.ndim(mean) else int(need[0])


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on one shared test set: only the discordant samples carry information."""

    n: int  # shared samples
    a_only: int  # A correct, B wrong
    b_only: int  # B correct, A wrong
    p: float  # two-sided exact binomial p on the discordant pairs (1 when there are none)
    accuracy_difference_pp: float  # (acc A − acc B) × 100 on the shared samples


def mcnemar(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike) -> McNemarResult:
    y = np.asarray(y_true)
    a_right = np.asarray(pred_a) == y
    b_right = np.asarray(pred_b) == y
    a_only = int(np.sum(a_right & ~b_right))
    b_only = int(np.sum(~a_right & b_right))
    discordant = a_only + b_only
    p = float(stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
    n = int(y.size)
    diff = 100.0 * (a_only - b_only) / n if n else math.nan
    return McNemarResult(n, a_only, b_only, p, diff)


VERDICT_EQUIVALENT = "equivalent"
VERDICT_INCONCLUSIVE = "inconclusive — need more seeds"


def verdicts(a: ArrayLike, b: ArrayLike, *, a_ahead: ArrayLike, p_holm: ArrayLike, p_tost: ArrayLike,
             alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Verdict words and winner ("" when none) of paired comparisons, one per element.

    ``a_ahead``: 1 where the estimate favours A, 0 where it favours B, NaN where it favours neither.
    Equivalence (TOST p < α) wins over a significant difference: a difference inside the stated
    margin is declared practically irrelevant; otherwise a Holm-corrected p < α names the leader.
    """
    a_arr = np.atleast_1d(np.asarray(a, dtype=object))
    b_arr = np.atleast_1d(np.asarray(b, dtype=object))
    ahead = np.atleast_1d(np.asarray(a_ahead, dtype=float))
    equivalent = np.nan_to_num(np.atleast_1d(np.asarray(p_tost, dtype=float)), nan=1.0) < alpha
    significant = np.nan_to_num(np.atleast_1d(np.asarray(p_holm, dtype=float)), nan=1.0) < alpha
    better = ~equivalent & significant & np.isfinite(ahead)
    leader = np.where(ahead == 1, a_arr, b_arr)
    winner = np.where(better, leader, "").astype(object)
    words = np.where(equivalent, VERDICT_EQUIVALENT,
                     np.where(better, leader.astype(str) + " better", VERDICT_INCONCLUSIVE)).astype(object)
    return words, winner


def verdict(a: str, b: str, *, a_better: bool | None, p_holm: float, p_tost: float, alpha: float) -> str:
    """Scalar form of :func:`verdicts`."""
    ahead = np.nan if a_better is None else float(a_better)
    return str(verdicts([a], [b], a_ahead=[ahead], p_holm=[p_holm], p_tost=[p_tost], alpha=alpha)[0][0])
