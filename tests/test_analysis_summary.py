"""The summary table from synthetic sweeps: planted effects are found, identical runs are equivalent."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.load import load_results, require_ok
from analysis.options import AnalysisError, AnalysisOptions
from analysis.summary import SUMMARY_COLUMNS, summarize
from analysis_support import make_sweep, runs_frame as _runs

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
    assert row.p < 1e-6  # paired t on log ratios
    assert row.family == "headline" and row.family_size == 1 and row.p_holm == pytest.approx(row.p)
    assert row.dec_low > 1.3 and row.decision_level == pytest.approx(0.05)
    assert row.verdict == "pytorch better" and row.winner == "pytorch"
    assert row.margin_words == "exceeds the margin"
    assert row.prob_a_better == 0.0 and row.prob_low == 0.0 and 0.2 < row.prob_high < 0.35  # 0 of 10, exact
    assert row.phrase == f"pytorch {row.estimate:.2f}× faster"
    thr = _pair(summary, "images_per_second")  # samples / epoch time: a duplicate, so secondary (descriptive)
    assert thr.family == "secondary" and not thr.verdict and np.isnan(thr.p_holm) and thr.estimate < 1
    assert thr.phrase.startswith("pytorch")


def test_identical_inputs_are_equivalent_everywhere(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=range(4), identical=True)
    summary, _, _ = _summary(root)
    pairs = summary[summary["row_kind"] == "pair"]
    assert len(pairs) >= 10
    head = pairs[pairs["family"] == "headline"]
    assert sorted(head["metric"]) == ["accuracy", "latency_p50_ms", "median_epoch_seconds", "peak_host_rss_mib"]
    assert set(head["verdict"]) == {"equivalent"}, head[["metric", "verdict"]]
    assert set(pairs.loc[pairs["family"] == "secondary", "verdict"].dropna()) <= {""}
    np.testing.assert_allclose(pairs["p"].astype(float), 1.0)
    assert (pairs["seeds_needed"].isna()).all()
    mc = summary[summary["row_kind"] == "mcnemar"]
    assert len(mc) == 4 and (mc["estimate"] == 0).all() and (mc["disagree_a"] == 0).all()
    assert mc["verdict"].isna().all() and mc["p"].isna().all()  # descriptive: no test, no verdict


def test_accuracy_difference_in_percentage_points_gets_a_verdict_at_three_seeds(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=range(3), skill={"keras": 0.95, "pytorch": 0.5}, n_samples=200)
    summary, _, _ = _summary(root, metrics=["accuracy"])
    row = _pair(summary, "accuracy")
    fw = summary[summary["row_kind"] == "framework"].set_index("framework")
    assert row.estimate == pytest.approx(100 * (fw.loc["keras", "estimate"] - fw.loc["pytorch", "estimate"]))
    assert row.estimate > 30 and row.unit == "pp"
    assert row.verdict == "keras better" and row.dec_low > 0  # an exact rank test could not (its minimum p is 0.25)


def test_one_seed_gives_point_estimates_and_no_interval(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=[0])
    summary, _, _ = _summary(root)
    stat_rows = summary[summary["row_kind"] != "mcnemar"]
    assert (stat_rows["n"] == 1).all()
    assert stat_rows["ci_low"].isna().all() and stat_rows["ci_high"].isna().all()
    assert (stat_rows["note"] == "no interval (1 seed)").all()
    head = stat_rows[stat_rows["family"] == "headline"]
    assert set(head["verdict"]) == {"inconclusive"}
    assert stat_rows["p"].isna().all()
    assert head["seeds_needed"].isna().all()  # no spread, no plan (the report says "run ≥ 3 seeds")


def test_direction_never_contradicts_the_interval():
    # the case: keras 5 % faster on 11 of 12 seeds and 3× slower on one
    from analysis.summary import summarize

    ratios = np.r_[np.full(11, 0.95), 3.0]
    runs = _runs({"keras": 10 * ratios, "pytorch": np.full(12, 10.0)}, "median_epoch_seconds")
    summary, _, _ = summarize(runs, OPTS, metrics=["median_epoch_seconds"])
    row = _pair(summary, "median_epoch_seconds")
    assert row.ci_low < 1 < row.ci_high and row.verdict == "inconclusive" and not row.winner
    assert row.ci_low < row.estimate < row.ci_high and row.dec_low < row.estimate < row.dec_high


def test_unpaired_seeds_are_a_visible_warning_not_a_silent_drop():
    from analysis.summary import WARNING_PREFIX, summarize

    runs = _runs({"keras": [1.0, 1.1, 1.2], "pytorch": [2.0, 2.1, 2.2]}, "median_epoch_seconds",
                 seeds={"keras": [0, 1, 2], "pytorch": [3, 4, 5]})
    summary, _, notes = summarize(runs, OPTS, metrics=["median_epoch_seconds"])
    row = _pair(summary, "median_epoch_seconds")
    assert row.n == 0 and row.verdict == "no paired seeds" and (row.seeds_only_a, row.seeds_only_b) == (3, 3)
    warnings = [n for n in notes if n.startswith(WARNING_PREFIX)]
    assert len(warnings) == 1 and "keras seed(s) 0, 1, 2 have no pytorch partner" in warnings[0]
    assert "0 paired seed(s) remain" in warnings[0]


def test_duplicated_cells_are_a_visible_warning():
    from analysis.summary import WARNING_PREFIX, summarize

    runs = _runs({"keras": [1.0, 1.1, 1.2, 1.3], "pytorch": [2.0, 2.1, 2.2]}, "median_epoch_seconds",
                 seeds={"keras": [0, 1, 2, 2], "pytorch": [0, 1, 2]})
    summary, _, notes = summarize(runs, OPTS, metrics=["median_epoch_seconds"])
    assert _pair(summary, "median_epoch_seconds").n == 3
    warning = next(n for n in notes if n.startswith(WARNING_PREFIX))
    assert "keras · seed 2 (2 cells: keras-2-2, keras-2-3)" in warning and "averaged" in warning


def test_epoch_times_are_the_within_cell_second_level():
    import pandas as pd

    from analysis.summary import summarize

    runs = _runs({"keras": [9.0] * 3, "pytorch": [9.0] * 3}, "median_epoch_seconds")  # medians say "equal"
    rng = np.random.default_rng(0)
    epochs = []
    for r in runs.itertuples(index=False):
        base = 2.0 if r.framework == "keras" else 1.0
        for e in range(1, 6):  # epoch 1 is the warm-up: huge, must be ignored
            secs = 50.0 if e == 1 else base * float(np.exp(rng.normal(0, 0.05)))
            epochs.append({"cell_id": r.cell_id, "epoch": e, "epoch_seconds": secs, "steps": 10,
                           "step_seconds_median": secs / 10 * 0.9})
    summary, _, _ = summarize(runs, OPTS, epochs=pd.DataFrame(epochs))
    row = _pair(summary, "median_epoch_seconds")
    assert row.estimate == pytest.approx(2.0, rel=0.05) and row.verdict == "pytorch better"
    assert row.n == 3  # seeds, not seeds × epochs
    assert 0.2 < row.within_share  # the spread between seeds here is all epoch-to-epoch noise
    keras = summary[(summary["row_kind"] == "framework") & (summary["framework"] == "keras")
                    & (summary["metric"] == "median_epoch_seconds")].iloc[0]
    assert keras.estimate == pytest.approx(2.0, rel=0.05)  # framework rows use the same per-cell values
    step = _pair(summary, "step_seconds")  # per-step medians (when the runner records them): secondary
    assert step.family == "secondary" and step.estimate == pytest.approx(row.estimate) and step.n == 3


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
    row = _pair(summary, "accuracy")
    assert row.n == 4 and (row.seeds_only_a, row.seeds_only_b) == (0, 1)
    assert row.note == "dropped from pairing: pytorch 1 seed(s) without keras"


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


def test_two_seeds_get_a_t_interval_not_the_range():
    from analysis.summary import summarize

    runs = _runs({"keras": [0.80, 0.84], "pytorch": [0.82, 0.83]}, "accuracy")
    summary, _, _ = summarize(runs, OPTS, metrics=["accuracy"])
    keras = summary[(summary["row_kind"] == "framework") & (summary["framework"] == "keras")].iloc[0]
    # mean 0.82 ± t(0.975, 1) · sd/√2 = 0.82 ± 12.71 · 0.02: far wider than [min, max], clipped to [0, 1]
    assert keras.ci_low == pytest.approx(max(0.0, 0.82 - 12.706 * 0.02), abs=1e-3) and keras.ci_high == 1.0


def test_one_framework_has_framework_rows_and_no_pairs():
    from analysis.summary import summarize

    summary, _, notes = summarize(_runs({"fake": [1.0, 1.1, 1.2]}, "median_epoch_seconds"), OPTS)
    assert set(summary["row_kind"]) == {"framework"} and not notes


def test_speed_pairs_only_within_one_accelerator_type():
    from analysis.summary import WARNING_PREFIX, summarize

    runs = _runs({"keras": [1.0, 1.1, 1.2, 1.3], "pytorch": [2.0, 2.1, 2.2, 2.3]}, "median_epoch_seconds")
    runs["accuracy"] = 0.9
    # seed 3: keras on an H100, pytorch on an A100 — not a speed pair (it stays a quality pair).
    runs["accelerator_type"] = ["H100", "H100", "A100", "H100", "H100", "H100", "A100", "A100"]
    summary, _, notes = summarize(runs, OPTS, metrics=["median_epoch_seconds", "accuracy"])
    assert _pair(summary, "median_epoch_seconds").n == 3 and _pair(summary, "accuracy").n == 4
    warning = next(n for n in notes if n.startswith(WARNING_PREFIX))
    assert "1 seed pair(s) ran on different accelerator types" in warning
