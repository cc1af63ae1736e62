"""The summary table from synthetic sweeps: planted effects are found, identical runs are equivalent."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.load import load_results, require_ok
from analysis.options import AnalysisError, AnalysisOptions
from analysis.summary import SUMMARY_COLUMNS, summarize
from analysis_support import make_sweep

OPTS = AnalysisOptions(n_resamples=200)


def _summary(root, metrics=None):
    res = load_results([root])
    require_ok(res)
    summary, conditions, notes = summarize(res.ok_runs, OPTS, res.predictions, metrics=metrics)
    return summary, conditions, notes


def _pair(summary, metric):
    rows = summary[(summary["row_kind"] == "pair") & (summary["metric"] == metric)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_planted_speed_difference_names_the_faster_framework(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=range(10), speed={"keras": 1.0, "pytorch": 0.7}, noise=0.02,
                      skill={"keras": 0.8, "pytorch": 0.8}, predictions=False)
    summary, _, _ = _summary(root, metrics=["median_epoch_seconds", "images_per_second"])
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    row = _pair(summary, "median_epoch_seconds")
    assert (row.framework_a, row.framework_b) == ("keras", "pytorch")
    assert row.estimate == pytest.approx(1 / 0.7, rel=0.03)  # keras/pytorch ≈ 1.43
    assert row.ci_low < row.estimate < row.ci_high
    assert row.ci_low > 1.3
    assert row.p == pytest.approx(2 / 2 ** 10)  # every seed agrees: exact signed-rank minimum
    assert row.p_holm == pytest.approx(2 * 2 / 2 ** 10)  # family of two comparisons
    assert row.verdict == "pytorch better" and row.winner == "pytorch"
    assert row.prob_a_better == 0.0
    assert row.phrase == f"pytorch {row.estimate:.2f}× faster"
    thr = _pair(summary, "images_per_second")  # higher is better: the same framework wins
    assert thr.verdict == "pytorch better" and thr.estimate < 1


def test_identical_inputs_are_equivalent_everywhere(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=range(4), identical=True)
    summary, _, _ = _summary(root)
    pairs = summary[summary["row_kind"] == "pair"]
    assert len(pairs) >= 10
    assert set(pairs["verdict"]) == {"equivalent"}, pairs[["metric", "verdict"]]
    np.testing.assert_allclose(pairs["p"].astype(float), 1.0)
    assert (pairs["seeds_needed"].isna()).all()
    mc = summary[summary["row_kind"] == "mcnemar"]
    assert len(mc) == 4 and (mc["p"] == 1.0).all() and (mc["estimate"] == 0).all()


def test_accuracy_difference_in_percentage_points(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=range(3), skill={"keras": 0.95, "pytorch": 0.5}, n_samples=200)
    summary, _, _ = _summary(root, metrics=["accuracy"])
    row = _pair(summary, "accuracy")
    fw = summary[summary["row_kind"] == "framework"].set_index("framework")
    assert row.estimate == pytest.approx(100 * (fw.loc["keras", "estimate"] - fw.loc["pytorch", "estimate"]))
    assert row.estimate > 30 and row.unit == "pp"
    # three seeds: the signed-rank test cannot reach p < 0.05 (its minimum is 0.25) — say so, and how many
    assert row.verdict == "inconclusive — need more seeds"
    assert row.seeds_needed >= 6


def test_one_seed_gives_point_estimates_and_no_interval(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=[0])
    summary, _, _ = _summary(root)
    assert (summary["n"].dropna() == 1).all() or (summary["row_kind"] == "mcnemar").any()
    stat_rows = summary[summary["row_kind"] != "mcnemar"]
    assert (stat_rows["n"] == 1).all()
    assert stat_rows["ci_low"].isna().all() and stat_rows["ci_high"].isna().all()
    assert (stat_rows["note"] == "no interval (1 seed)").all()
    pairs = stat_rows[stat_rows["row_kind"] == "pair"]
    assert set(pairs["verdict"]) == {"inconclusive — need more seeds"}
    assert pairs["p"].isna().all()
    assert (pairs["seeds_needed"] >= 6).all()


def test_all_failed_is_refused_with_the_first_error(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=[0, 1], failed=[(fw, s) for fw in ("keras", "pytorch") for s in (0, 1)],
                      gate=None)
    res = load_results([root])
    with pytest.raises(AnalysisError, match=r"no successful cells — all 4 failed.*synthetic failure"):
        require_ok(res)


def test_failed_cells_leave_the_rest_paired(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=range(5), failed=[("keras", 4)])
    summary, _, _ = _summary(root, metrics=["accuracy"])
    fw = summary[summary["row_kind"] == "framework"].set_index("framework")
    assert (fw.loc["keras", "n"], fw.loc["pytorch", "n"]) == (4, 5)
    assert _pair(summary, "accuracy").n == 4


def test_mcnemar_flags_different_sample_sets(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=[0, 1], sample_offset={"pytorch": 1})
    summary, _, notes = _summary(root, metrics=["accuracy"])
    mc = summary[summary["row_kind"] == "mcnemar"]
    assert len(mc) == 2
    assert mc["note"].str.contains("sample sets differ").all()
    assert any("sample sets differ" in n for n in notes)
    assert (mc["n"] < 60).all()


def test_conditions_pair_only_within_their_condition(tmp_path):
    cpu = make_sweep(tmp_path / "cpu", seeds=range(3), batch_sizes=(32, 64))
    gpu = make_sweep(tmp_path / "gpu", seeds=range(3), devices=(("gpu", "Test GPU"),))
    res = load_results([cpu, gpu])
    summary, conditions, _ = summarize(res.ok_runs, OPTS, None, metrics=["median_epoch_seconds"])
    assert len(conditions) == 3
    assert sorted(conditions["condition"]) == ["batch 32 · Test CPU", "batch 64 · Test CPU", "batch 64 · Test GPU"]
    pairs = summary[summary["row_kind"] == "pair"]
    assert len(pairs) == 3 and (pairs["n"] == 3).all()


def test_repeated_cells_are_averaged_not_double_counted(tmp_path):
    a = make_sweep(tmp_path / "a", seeds=range(3))
    b = make_sweep(tmp_path / "b", seeds=range(3))
    res = load_results([a, b])  # same cell ids: the later directory wins
    assert len(res.runs) == 6
    assert any("more than one results directory" in n for n in res.notes)
    summary, _, _ = summarize(res.ok_runs, OPTS, None, metrics=["accuracy"])
    assert _pair(summary, "accuracy").n == 3


def test_options_validation():
    assert AnalysisOptions.from_mapping({"enabled": True, "n_resamples": "300"}).n_resamples == 300
    with pytest.raises(AnalysisError, match="unknown key"):
        AnalysisOptions.from_mapping({"confidance": 0.9})
    with pytest.raises(AnalysisError, match="confidence"):
        AnalysisOptions.from_mapping({"confidence": 95})
    assert math.isclose(AnalysisOptions().log_ratio_margin, math.log(1.05))
