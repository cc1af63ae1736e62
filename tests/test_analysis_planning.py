"""Adaptive seeds, analysis side: the stopping rule reads interval widths only."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.options import AnalysisOptions
from analysis.planning import decide_more_seeds, half_widths
from analysis.summary import summarize
from analysis_support import runs_frame as _runs

OPTS = AnalysisOptions(n_resamples=200)


def _summary(keras, pytorch, metric="median_epoch_seconds"):
    summary, _, _ = summarize(_runs({"keras": keras, "pytorch": pytorch}, metric), OPTS, metrics=[metric])
    return summary


def test_wide_intervals_ask_for_more_seeds_until_the_maximum():
    noisy = _summary([1.0, 1.3, 0.8], [1.0, 1.0, 1.0])
    more = decide_more_seeds(noisy, seeds_run=3, max_seeds=10, target=0.5)
    assert more.more and more.paired_seeds == 3 and len(more.unsettled) == 1
    assert "median_epoch_seconds · keras vs pytorch: half-width" in more.unsettled[0]
    done = decide_more_seeds(noisy, seeds_run=10, max_seeds=10, target=0.5)
    assert not done.more and "maximum of 10 seeds" in done.reason


def test_narrow_intervals_stop_whatever_the_estimate():
    # the same spread, centred on "no difference" and on a 2× difference: the same decision
    spread = np.array([1.0, 1.001, 0.999])
    same = decide_more_seeds(_summary(spread, np.ones(3)), seeds_run=3, max_seeds=10)
    twice = decide_more_seeds(_summary(2 * spread, np.ones(3)), seeds_run=3, max_seeds=10)
    assert not same.more and not twice.more
    h_same = half_widths(_summary(spread, np.ones(3)))["half_width"].iloc[0]
    h_twice = half_widths(_summary(2 * spread, np.ones(3)))["half_width"].iloc[0]
    assert h_same == pytest.approx(h_twice)  # log scale: the width does not see the ratio


def test_one_seed_has_no_interval_and_is_unsettled():
    one = decide_more_seeds(_summary([1.0], [1.0]), seeds_run=1, max_seeds=5)
    assert one.more and "no interval yet (n = 1)" in one.unsettled[0]
    with pytest.raises(ValueError):
        decide_more_seeds(_summary([1.0], [1.0]), seeds_run=1, max_seeds=5, target=0)
