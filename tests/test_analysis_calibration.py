"""A small, seeded run of benchmarks/bench_calibration.py: simulated sweeps in the result schema,
through ``analysis.summary.summarize``. The bounds are loose (few replications) but fail on the
procedures the issue measured: Wilcoxon + Holm over every row (0 % power at 3 seeds), BCa intervals
(72 % coverage at 3 seeds), epochs counted as seeds (~80 %)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.options import AnalysisOptions

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_calibration.py"
_spec = importlib.util.spec_from_file_location("bench_calibration", _PATH)
calib = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_calibration", calib)  # dataclasses look their module up by name
_spec.loader.exec_module(calib)

OPTS = AnalysisOptions()


def test_aa_reports_rarely_name_a_winner():
    rate = calib.false_better_rate(3, 300, np.random.default_rng(1), OPTS)
    assert rate <= 0.09  # true rate ≈ 4.9 % (Holm over 4 independent tests); Holm over every row or none: > 15 %


def test_a_large_speed_difference_gets_a_verdict_at_three_seeds():
    rate = calib.power(calib.Scenario(3, time_factor=1.5, time_cv=0.03), "median_epoch_seconds", "pytorch", 200,
                       np.random.default_rng(2), OPTS)
    assert rate >= 0.9  # the exact signed-rank test + Holm over 19 rows: 0 %


def test_intervals_cover_at_three_seeds():
    time_cov, acc_cov = calib.coverage(3, 300, np.random.default_rng(3), OPTS)
    assert 0.91 <= time_cov <= 0.985 and 0.91 <= acc_cov <= 0.985  # BCa: 72 %; epochs as seeds: ~79 %
    assert calib.naive_epoch_coverage(3, 300, np.random.default_rng(3)) < 0.88  # the contrast really is worse


def test_vectorised_replications_equal_one_report_each():
    from analysis.summary import summarize

    sc = calib.Scenario(3, time_factor=1.1, acc_diff_pp=1.0)
    runs, epochs = calib.simulate(sc, np.random.default_rng(4), reps=4)
    together, _, _ = summarize(runs, OPTS, None, metrics=calib.METRICS, epochs=epochs, family_by="data")
    cols = ["metric", "family", "n", "estimate", "ci_low", "ci_high", "p", "p_holm", "dec_low", "dec_high", "verdict"]
    for rep in range(4):
        mask = runs["data"] == f"rep{rep}"
        alone, _, _ = summarize(runs[mask], OPTS, None, metrics=calib.METRICS,
                                epochs=epochs[epochs["cell_id"].isin(runs.loc[mask, "cell_id"])])
        a = alone[alone["row_kind"] == "pair"][cols].reset_index(drop=True)
        t = together[(together["row_kind"] == "pair") & (together["data"] == f"rep{rep}")][cols].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, t)


def test_simulated_tables_have_the_result_schema_columns():
    from analysis.load import REQUIRED_COLUMNS

    runs, epochs = calib.simulate(calib.Scenario(3), np.random.default_rng(0))
    assert set(REQUIRED_COLUMNS["runs"]) - {"error"} <= set(runs.columns)
    assert {"cell_id", "epoch", "epoch_seconds"} <= set(epochs.columns)
    assert len(runs) == 6 and len(epochs) == 6 * calib.EPOCHS
    # the cell's epoch time varies by the stated CV across seeds (σ_seed² + σ_epoch²/k = cv²)
    _, big = calib.simulate(calib.Scenario(4000, time_cv=0.03), np.random.default_rng(0))
    timed = big[big["epoch"] >= 2]  # epoch 1 is the warm-up
    cell_log = np.log(timed["epoch_seconds"]).groupby(timed["cell_id"]).mean()
    assert cell_log.std() == pytest.approx(0.03, rel=0.05)  # one condition, no planted factor: all cells alike
