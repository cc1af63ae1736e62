"""benchmarks/bench_repeat.py's agreement rule, on planted summaries (the benchmark itself runs three jobs)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_repeat  # noqa: E402


def _summary(tmp_path: Path, name: str, estimate: float, low: float, high: float, verdict: str) -> dict:
    rows = pd.DataFrame([{"row_kind": "pair", "family": "headline", "metric": "median_epoch_seconds",
                          "metric_label": "Epoch time", "comparison": "ratio", "condition": "all runs",
                          "framework_a": "keras", "framework_b": "pytorch", "estimate": estimate, "ci_low": low,
                          "ci_high": high, "n": 3, "verdict": verdict}])
    path = tmp_path / f"{name}.parquet"
    rows.to_parquet(path)
    return bench_repeat.headline(path)


def test_the_standard_error_is_recovered_from_the_interval_on_the_analysis_scale(tmp_path):
    row = next(iter(_summary(tmp_path, "a", 0.6, 0.5, 0.72, "keras better").values()))
    t = 4.302652729911275  # t(0.975, 2)
    assert row["est"] == pytest.approx(math.log(0.6))
    assert row["se"] == pytest.approx((math.log(0.72) - math.log(0.5)) / (2 * t))


def test_agreement_within_sampling_error_and_a_flip_is_a_disagreement(tmp_path):
    a = _summary(tmp_path, "a", 0.60, 0.50, 0.72, "keras better")
    b = _summary(tmp_path, "b", 0.62, 0.52, 0.74, "keras better")
    far = _summary(tmp_path, "c", 1.60, 1.50, 1.72, "pytorch better")
    rows, ok = bench_repeat.compare({"run1": a, "run2": b})
    assert ok and all(good for _, good, _ in rows[0]["checks"])
    rows, ok = bench_repeat.compare({"run1": a, "reversed": far})
    assert not ok and "FLIP" in rows[0]["checks"][0][2]
