"""Arms and history in the analysis (``analysis.arms``, ``analysis.history``), on planted results:
different versions are never merged; sweeps of one grid over time are compared step by step."""
from __future__ import annotations

import datetime as dt
import io
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from analysis_support import make_sweep

from analysis import arms, history
from analysis.load import load_results
from analysis.options import AnalysisOptions
from analysis.summary import summarize


def _day(d: int) -> dt.datetime:
    return dt.datetime(2026, 11, d, 12, tzinfo=dt.timezone.utc)


def test_two_directories_that_differ_only_in_the_framework_version_are_two_arms(tmp_path):
    # identical numbers, identical cell ids: only the version the cells report differs
    old = make_sweep(tmp_path / "old", frameworks=("keras",), versions={"keras": {"keras": "3.14.0"}})
    new = make_sweep(tmp_path / "new", frameworks=("keras",), versions={"keras": {"keras": "3.15.1"}})
    results = load_results([old, new])
    ok = results.ok_runs
    assert sorted(ok["framework"].unique()) == ["keras 3.14.0", "keras 3.15.1"]
    assert len(ok) == 10 and ok["cell_id"].is_unique  # neither directory replaced the other's cells
    assert (ok[arms.BASE_COLUMN] == "keras").all()
    assert any("keras ran at 2 sets of versions" in n for n in results.notes)
    summary, _, notes = summarize(ok, AnalysisOptions(), results.predictions, epochs=results.epochs)
    pair = summary[(summary["row_kind"] == "pair") & (summary["metric"] == "median_epoch_seconds")]
    # paired by seed across the two directories, newest first: "keras 3.15.1 vs keras 3.14.0"
    assert pair[["framework_a", "framework_b"]].values.tolist() == [["keras 3.15.1", "keras 3.14.0"]]
    assert int(pair["n"].iloc[0]) == 5 and pair["estimate"].iloc[0] == pytest.approx(1.0)
    assert not [n for n in notes if "averaged" in n]  # nothing merged
    # every epoch and prediction row follows its cell to its arm
    assert set(results.epochs["framework"]) == {"keras 3.14.0", "keras 3.15.1"}
    assert set(results.predictions["cell_id"]) == set(ok["cell_id"])


def test_the_same_versions_stay_one_framework_as_before(tmp_path):
    a = make_sweep(tmp_path / "a", frameworks=("keras", "pytorch"), seeds=range(3))
    b = make_sweep(tmp_path / "b", frameworks=("keras", "pytorch"), seeds=range(3), noise_key=1)
    results = load_results([a, b])
    assert sorted(results.ok_runs["framework"].unique()) == ["keras", "pytorch"]
    assert arms.BASE_COLUMN not in results.runs
    assert any("appear in more than one results directory" in n for n in results.notes)  # as before


def test_a_package_other_than_the_framework_names_the_arm_and_arms_sort_newest_first():
    runs = pd.DataFrame({"framework": ["keras_jax"] * 3, "framework_version": ["3.15.1", "3.15.1", "3.14.0"],
                         "versions": [json.dumps({"keras": "3.15.1", "jax": "0.10.2"}),
                                      json.dumps({"keras": "3.15.1", "jax": "0.9.0"}),
                                      json.dumps({"keras": "3.14.0", "jax": "0.10.2"})]})
    labels, split = arms.arm_labels(runs)
    assert labels.tolist() == ["keras_jax 3.15.1 (jax 0.10.2)", "keras_jax 3.15.1 (jax 0.9.0)",
                               "keras_jax 3.14.0 (jax 0.10.2)"]
    assert split["keras_jax"] == ["keras_jax 3.15.1 (jax 0.10.2)", "keras_jax 3.15.1 (jax 0.9.0)",
                                  "keras_jax 3.14.0 (jax 0.10.2)"]
    assert sorted(["keras_jax 3.9.0", "pytorch", "keras_jax 3.14.0", "keras"], key=arms.arm_sort_key) == [
        "keras", "pytorch", "keras_jax 3.14.0", "keras_jax 3.9.0"]


def _three_sweeps(tmp_path, middle_speed: float):
    """Three sweeps of one grid on three days; from the middle one on keras' epoch time is ×``middle_speed``."""
    dirs = []
    for i, speed in enumerate((1.0, middle_speed, middle_speed)):
        dirs.append(make_sweep(tmp_path / f"day{i + 1}", frameworks=("keras", "pytorch"), noise_key=i,
                               speed={"keras": speed, "pytorch": 1.0}, start_time=_day(i + 1),
                               git_sha=f"c0ffee{i}"))
    return dirs


def test_history_flags_exactly_the_planted_regression_step(tmp_path):
    day1, day2, day3 = _three_sweeps(tmp_path, 1.3)
    results = load_results([day3, day1, day2])  # the order given does not matter: time does
    assert history.has_history(results.history_cells)
    values, steps = history.analyse(results.history_cells, AnalysisOptions())
    flagged = steps[steps["flag"]]
    assert flagged[["series", "metric", "old_step", "step", "verdict"]].values.tolist() == [
        ["keras", "median_epoch_seconds", 1, 2, "regression"]]
    row = flagged.iloc[0]
    assert row["ci_low"] < 1.3 < row["ci_high"] and row["git_sha"] == "c0ffee0 → c0ffee1"
    assert len(steps) == 2 * 2 * 4  # 2 arms × 2 steps × 4 headline questions, each tested
    assert sorted(values["step"].unique()) == [1, 2, 3]
    assert values.loc[values["step"] == 1, "results_dir"].iloc[0] == str(day1)


def test_the_history_is_in_the_report_the_terminal_and_history_parquet(tmp_path):
    from analysis import build_report, print_history

    dirs = _three_sweeps(tmp_path, 1.3)
    paths = build_report(dirs, tmp_path / "out")
    html = paths["report"].read_text()
    assert 'id="history"' in html and "HISTORY: 1 step flagged" in html and "c0ffee0 → c0ffee1" in html
    table = pq.read_table(paths["history"])
    assert all(f.metadata and f.metadata[b"description"] for f in table.schema)
    buf = io.StringIO()
    print_history(paths["history"], file=buf)
    text = buf.getvalue()
    assert "1 of 16 steps flagged" in text and "regression" in text and "1 → 2" in text
    # one sweep alone has no history: no section, and an earlier history.parquet is removed
    paths = build_report([dirs[0]], tmp_path / "out")
    assert "history" not in paths and not (tmp_path / "out" / "history.parquet").exists()
    assert 'id="history"' not in paths["report"].read_text()
