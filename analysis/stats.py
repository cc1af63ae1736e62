"""Pure statistics over seeds: typed functions, explicit ``random_state``, scipy underneath.

Every function works on one group (a 1-D array, NaNs dropped) or on many groups at once (a 2-D
array, one group per row, no NaNs) and then returns one value per row — the report analyses
thousands of (metric, condition, framework) groups, and looping in Python would dominate.

One procedure per comparison
- Paired values are "A − B" (quality, in percentage points for proportions) or "log(A / B)" (time,
  throughput, memory); a ratio's estimate is the geometric mean ratio exp(mean log(A/B)).
- The estimate, the interval, the p-value, the direction and the verdict of a comparison all come
  from ONE paired t procedure on those values (mean, sd, n − 1 degrees of freedom): the interval is
  mean ± t·sd/√n, p is the matching two-sided t-test, the direction is the sign of the mean (the
  centre of the interval), and the verdict follows from where the interval lies. They cannot
  disagree. The t-interval holds its coverage from n = 2 for roughly normal values (log-ratios of
  times are; calibration: ``benchmarks/bench_calibration.py``); rank tests cannot reject at 3–5
  seeds and bootstrap intervals under-cover there, so neither is used for decisions.
- Multiplicity: Holm over the report's headline family. :func:`holm_levels` turns Holm into one
  level per hypothesis such that "the (1 − level) interval excludes no-difference" ⇔ "Holm rejects",
  so the decision interval shown is exactly the one that decided.
- Equivalence (TOST) is t-based: equivalent ⇔ the (1 − 2·level) interval lies inside the margins,
  with the level again from Holm over the same family's TOST p-values.
- Descriptive extras: P(A beats B) over paired seeds with a Clopper–Pearson interval; the
  interquartile mean (IQM) with a percentile bootstrap over seeds (rliable) from 10 seeds on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

# The IQM bootstrap (rliable) is only computed from this many seeds on: below, a quarter of the
# seeds is less than one seed to trim and the percentile bootstrap under-covers.
IQM_MIN_SEEDS = 10

# Bootstrap work is chunked so one chunk's resampled statistics stay around this many floats (~32 MB).
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
    q25, q75 = np.percentile(x, [25, 75], axis=1)  # linear interpolation, as scipy.stats.iqr
    iqr = q75 - q25
    ns = np.full(x.shape[0], n)
    return Description(int(n) if one else ns, _out(mean, one), _out(median, one), _out(std, one), _out(iqr, one))


# --------------------------------------------------------------------------------------------- t procedure

def t_interval(mean: ArrayLike, se: ArrayLike, df: ArrayLike, level: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``1 − level`` interval mean ± t(1 − level/2, df)·se, element-wise (``level`` may vary
    per element). df < 1 or a NaN level ⇒ NaN; se = 0 ⇒ the point [mean, mean]."""
    mean, se, df, level = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mean, se, df, level)))
    ok = (df >= 1) & np.isfinite(level) & np.isfinite(se)
    with np.errstate(invalid="ignore"):
        q = np.where(ok, special.stdtrit(np.where(ok, df, 1), 1 - np.where(ok, level, 0.5) / 2), np.nan)
        half = np.where(se == 0, 0.0, q * se)
    return np.where(ok, mean - half, np.nan), np.where(ok, mean + half, np.nan)


def t_test_p(mean: ArrayLike, se: ArrayLike, df: ArrayLike) -> np.ndarray:
    """Two-sided one-sample t-test p of "mean = 0", element-wise. df < 1 ⇒ NaN; se = 0 ⇒ exact:
    1 when the (constant) value is 0, else 0."""
    mean, se, df = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mean, se, df)))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * special.stdtr(np.maximum(df, 1), -np.abs(mean / se))
    p = np.where(se == 0, np.where(mean == 0, 1.0, 0.0), p)
    return np.where(df >= 1, p, np.nan)


@dataclass(frozen=True)
class PairedT:
    """The one paired procedure (rows = groups); analysis scale (pp or log ratio)."""

    n: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    se: np.ndarray
    low: np.ndarray  # confidence interval at ``confidence``
    high: np.ndarray
    p: np.ndarray  # two-sided t-test of "no difference"


def resampled_variance_factor(n: ArrayLike, rho: ArrayLike) -> np.ndarray:
    """Nadeau & Bengio (2003)'s corrected resampled t: with n resampled splits whose test part is a fraction
    ``rho`` = n_test / n_train of the training part, the variance of the mean is (1/n + rho)·s², not s²/n —
    the splits overlap, so the seeds' differences are not independent. The factor on s²/n: 1 + n·rho
    (≈ 3.8 for 10 seeds at n_test/n_train = 400/1440). rho = 0 (a fixed split): 1."""
    return 1.0 + np.asarray(n, dtype=float) * np.asarray(rho, dtype=float)


def paired_t(differences: ArrayLike, *, confidence: float = 0.95, rho: ArrayLike = 0.0) -> PairedT:
    """Estimate, interval and two-sided p of the mean paired difference (rows = groups). ``rho`` (per
    group, or one value): n_test / n_train of resampled splits — the variance is then Nadeau & Bengio's
    corrected one (``resampled_variance_factor``); 0 = the plain paired t."""
    d, _ = _groups(differences)
    g, n = d.shape
    ns = np.full(g, n)
    if n == 0:
        nan = np.full(g, np.nan)
        return PairedT(ns, nan, nan, nan, nan, nan, nan)
    mean = d.mean(axis=1)
    sd = d.std(axis=1, ddof=1) if n > 1 else np.full(g, np.nan)
    # Rounding noise of equal values (e.g. 2/60 − 4/60 computed per seed) is no spread: exact zero.
    sd = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mean)), 0.0, sd)
    se = sd / math.sqrt(n) * np.sqrt(resampled_variance_factor(n, np.broadcast_to(rho, (g,))))
    low, high = t_interval(mean, se, n - 1, 1 - confidence)
    return PairedT(ns, mean, sd, se, low, high, t_test_p(mean, se, n - 1))


def tost_p(differences: ArrayLike, low: float, high: float, rho: ArrayLike = 0.0):
    """t-based TOST p-value that the mean paired difference lies inside (low, high).

    p = max(p(mean ≤ low), p(mean ≥ high)); small p ⇒ equivalent within the margins. With no
    spread the answer is exact: 0 when the (constant) difference is strictly inside, else 1.
    ``rho``: as in ``paired_t`` (Nadeau–Bengio variance for resampled splits).
    """
    if not low < high:
        raise ValueError(f"equivalence margins must satisfy low < high, got ({low}, {high})")
    d, one = _groups(differences)
    n = d.shape[1]
    p = np.full(d.shape[0], np.nan)
    if n >= 2 and d.shape[0]:
        mean = d.mean(axis=1)
        se = d.std(axis=1, ddof=1) / math.sqrt(n) * np.sqrt(resampled_variance_factor(n, np.broadcast_to(rho, (d.shape[0],))))
        p = tost_p_from(mean, se, n - 1, low, high)
    return _out(p, one)


def tost_p_from(mean: ArrayLike, se: ArrayLike, df: ArrayLike, low: float, high: float) -> np.ndarray:
    mean, se, df = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mean, se, df)))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_low = special.stdtr(np.maximum(df, 1), -(mean - low) / se)  # H0: mean ≤ low
        p_high = special.stdtr(np.maximum(df, 1), (mean - high) / se)  # H0: mean ≥ high
    p = np.maximum(p_low, p_high)
    flat = se == 0
    p = np.where(flat, np.where((mean > low) & (mean < high), 0.0, 1.0), p)
    return np.where(df >= 1, p, np.nan)


# --------------------------------------------------------------------------------------------- multiplicity

def _finite_order(p_values: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``p`` as floats, an all-NaN output of its shape, and the indices of its finite values by
    ascending p (stable): the family both Holm functions work on."""
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    return p, np.full(p.shape, np.nan), finite[np.argsort(p[finite], kind="stable")]


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and are
    not counted in the family."""
    p, out, order = _finite_order(p_values)
    m = order.size
    if m == 0:
        return out
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def holm_levels(p_values: ArrayLike, alpha: float) -> np.ndarray:
    """Per-hypothesis test level that makes a single interval reproduce Holm's decisions.

    Holm sorts the m finite p-values and rejects while p₍ₖ₎ < α/(m − k + 1); let j be the first
    step that fails. Hypothesis k gets level α/(m − min(k, j) + 1): a rejected one (k < j) is
    rejected at its own step's level; every other one gets the level of the failing step, at which
    its p (≥ p₍ⱼ₎) is not significant. So "p < level" ⇔ "Holm adjusted p < α", and the
    (1 − level) t-interval excludes no-difference exactly when Holm rejects. NaN p ⇒ NaN level.
    """
    p, out, order = _finite_order(p_values)
    m = order.size
    if m == 0:
        return out
    thresholds = alpha / (m - np.arange(m))
    fails = np.flatnonzero(p[order] >= thresholds)
    first_fail = fails[0] if fails.size else m
    steps = np.minimum(np.arange(m), first_fail)
    out[order] = thresholds[np.minimum(steps, m - 1)]
    return out


# --------------------------------------------------------------------------------------------- planning

def seeds_needed(mean: ArrayLike, sd: ArrayLike, n: ArrayLike, *, level: float, low: float, high: float,
                 power: float = 0.8, cap: int = 1000, rho: ArrayLike = 0.0):
    """Seeds after which the observed effect would likely be settled (80 % power by default).

    With resampled splits (``rho`` = n_test/n_train > 0) the variance of the mean never falls below rho·s²
    (Nadeau–Bengio): an effect smaller than that floor is never settled by more seeds — ``cap + 1``.

    Two routes, whichever needs fewer seeds: show a difference (two-sided t at ``level``, e.g. the
    first Holm step α/m) or show equivalence (TOST at ``level``, only when the observed mean lies
    inside the margins). Both take the observed mean and sd as the truth — with 2–3 seeds a hint, not
    a promise. Solved with the usual t fixed point n = ((t₁ + t₂)·sd / effect)². Above ``cap`` ⇒
    ``cap + 1`` ("more than cap"); unknown spread (n < 2) ⇒ NaN (no plan can be made from one seed).
    """
    mean_a, sd_a, n_a = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (mean, sd, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        eff_diff = np.abs(mean_a)
        gap = np.minimum(mean_a - low, high - mean_a)
        eff_eq = np.where(gap > 0, gap, 0.0)
        z_pow = special.ndtri(power)
        need = []
        rho_a = np.broadcast_to(np.asarray(rho, dtype=float), mean_a.shape)

        def corrected(k_plain: np.ndarray) -> np.ndarray:  # 1/n + rho ≤ 1/k_plain  ⇒  n ≥ 1/(1/k_plain − rho)
            room = 1.0 / k_plain - rho_a
            return np.where(room > 0, 1.0 / np.where(room > 0, room, 1.0), np.inf)

        for effect, alpha_side in ((eff_diff, level / 2), (eff_eq, level)):
            k = corrected(((special.ndtri(1 - alpha_side) + z_pow) * sd_a / effect) ** 2)
            for _ in range(6):  # t correction: converges in a few steps for k ≥ 2
                df = np.maximum(np.nan_to_num(k, nan=2.0, posinf=1e9) - 1, 1)
                k = corrected(((special.stdtrit(df, 1 - alpha_side) + special.stdtrit(df, power)) * sd_a / effect) ** 2)
            need.append(np.nan_to_num(k, nan=np.inf))
        out = np.ceil(np.fmin(need[0], need[1]))
    out = np.maximum(out, np.maximum(n_a + 1, 3))
    out = np.where(np.isfinite(out), np.minimum(out, cap + 1), cap + 1)
    out = np.where((n_a < 2) | ~np.isfinite(sd_a), np.nan, out)
    return out if np.ndim(mean) else float(out[0])


# --------------------------------------------------------------------------------------------- descriptive

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


def proportion_interval(share: ArrayLike, n: ArrayLike, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson interval of a share of n paired seeds (Bouthillier et al. 2021's P(A > B)).

    Exact (conservative) for whole counts; a tie counts one half, i.e. the beta quantiles are taken
    at a fractional count. n < 1 ⇒ NaN.
    """
    share, n = np.broadcast_arrays(np.asarray(share, dtype=float), np.asarray(n, dtype=float))
    k = share * n
    a = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, special.betaincinv(np.maximum(k, 1e-12), n - k + 1, a), 0.0)
        high = np.where(k < n, special.betaincinv(k + 1, np.maximum(n - k, 1e-12), 1 - a), 1.0)
    bad = ~(n >= 1) | ~np.isfinite(share)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def _trim_bounds(n: int) -> tuple[int, int]:
    cut = int(math.floor(0.25 * n))
    return cut, n - cut


def iqm(values: ArrayLike):
    """Interquartile mean: the mean of the middle half (a quarter trimmed from each end, as
    ``scipy.stats.trim_mean(x, 0.25)``)."""
    x, one = _groups(values)
    if x.shape[1] == 0:
        return _out(np.full(x.shape[0], np.nan), one)
    lo, hi = _trim_bounds(x.shape[1])
    return _out(np.sort(x, axis=1)[:, lo:hi].mean(axis=1), one)


def iqm_ci(values: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 2000,
           random_state: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IQM, low, high) with a percentile bootstrap over seeds, from :data:`IQM_MIN_SEEDS` seeds on
    (NaN below). Vectorised: a resample is a count per *sorted* position (seeds are exchangeable, so
    counts drawn for positions have the resampling distribution), the trimmed mean is then a fixed
    weight per sorted position, and all groups of one size share the weight matrix: one matrix product.
    """
    x, one = _groups(values)
    g, n = x.shape
    est = np.full(g, np.nan)
    low = np.full(g, np.nan)
    high = np.full(g, np.nan)
    if n < IQM_MIN_SEEDS or g == 0:
        return _out(est, one), _out(low, one), _out(high, one)
    est = np.asarray(iqm(x), dtype=float).reshape(-1)
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, n, (n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1.0)
    lo_k, hi_k = _trim_bounds(n)
    upper = np.cumsum(counts, axis=1)
    lower = upper - counts
    weights = (np.clip(np.minimum(upper, hi_k) - np.maximum(lower, lo_k), 0, None) / (hi_k - lo_k)).T  # (n, B)
    xs = np.sort(x, axis=1)
    a = (1 - confidence) / 2
    chunk = max(1, _CHUNK_FLOATS // max(n_resamples, 1))
    for start in range(0, g, chunk):
        dist = xs[start:start + chunk] @ weights
        low[start:start + chunk], high[start:start + chunk] = np.quantile(dist, [a, 1 - a], axis=1)
    return _out(est, one), _out(low, one), _out(high, one)


@dataclass(frozen=True)
class McNemarResult:
    """Disagreements of two classifiers on one shared test set (descriptive: per-seed counts)."""

    n: int  # shared samples
    a_only: int  # A correct, B wrong
    b_only: int  # B correct, A wrong
    p: float  # two-sided exact binomial p on the discordant pairs (1 when there are none)
    accuracy_difference_pp: float  # (acc A − acc B) × 100 on the shared samples


def mcnemar(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike) -> McNemarResult:
    """Counts and the exact McNemar p of one seed. The report shows the counts only: a per-seed test
    treats one training run as the framework, so seed-to-seed training variance would read as a
    framework effect (in A/A simulations most reports contained a "significant" seed)."""
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


# --------------------------------------------------------------------------------------------- verdicts

VERDICT_EQUIVALENT = "equivalent"
VERDICT_INCONCLUSIVE = "inconclusive"
VERDICT_NO_PAIRS = "no paired seeds"
MARGIN_BEYOND = "exceeds the margin"
MARGIN_WITHIN = "within the margin"


def decide(a: ArrayLike, b: ArrayLike, *, a_ahead: ArrayLike, dec_low: ArrayLike, dec_high: ArrayLike,
           eq_low: ArrayLike, eq_high: ArrayLike, margin_low: float | ArrayLike, margin_high: float | ArrayLike,
           n: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verdict words, winner, margin words) of paired comparisons, element-wise, from intervals only.

    ``dec_*``: the decision interval (difference, at the Holm level); ``eq_*``: the equivalence
    interval (1 − 2·level). Analysis scale, "no difference" = 0.
    - decision interval excludes 0 ⇒ "<leader> better", leader = the side the interval lies on;
      margin words: "exceeds the margin" when the whole interval lies beyond it, "within the margin"
      when it lies inside it, else "" (the size relative to the margin is not settled);
    - else equivalence interval inside the margins ⇒ "equivalent";
    - else "inconclusive" (n = 0 ⇒ "no paired seeds").
    """
    a_arr, b_arr = np.atleast_1d(np.asarray(a, dtype=object)), np.atleast_1d(np.asarray(b, dtype=object))
    dl, dh, el, eh = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (dec_low, dec_high, eq_low, eq_high))
    ml, mh = np.broadcast_to(np.asarray(margin_low, dtype=float), dl.shape), np.broadcast_to(
        np.asarray(margin_high, dtype=float), dl.shape)
    ahead = np.atleast_1d(np.asarray(a_ahead, dtype=float))
    n_arr = np.atleast_1d(np.asarray(n, dtype=float))
    with np.errstate(invalid="ignore"):
        above, below = dl > 0, dh < 0
        differs = above | below
        equivalent = ~differs & (el > ml) & (eh < mh)
        beyond = (dl > mh) | (dh < ml)
        within = (dl > ml) & (dh < mh)
    leader = np.where(ahead == 1, a_arr, b_arr)
    words = np.where(differs, leader.astype(str) + " better",
                     np.where(equivalent, VERDICT_EQUIVALENT,
                              np.where(n_arr < 1, VERDICT_NO_PAIRS, VERDICT_INCONCLUSIVE))).astype(object)
    winner = np.where(differs, leader, "").astype(object)
    margin = np.where(differs & beyond, MARGIN_BEYOND, np.where(differs & within, MARGIN_WITHIN, "")).astype(object)
    return words, winner, margin
