"""Real frameworks end to end: ``python -m runner +sweep=seeds grid.seed=[0,1]`` on tiny synthetic data.

Keras (TensorFlow) and PyTorch each run in their own Ray actor; this test process imports neither.
In the default run on purpose (~1 min): it is the one test of the real product path, Ray and both frameworks.
"""
from __future__ import annotations

import json

import pyarrow.parquet as pq
from runner_support import run_cli, runs

from core.results import RUNS_SCHEMA, read_metadata



def test_seeds_sweep_with_real_frameworks_gives_one_ok_row_per_cell(tmp_path):
    proc = run_cli(["+sweep=seeds", "grid.seed=[0,1]", "data=synthetic", "train=tiny", "train.epochs=2",
                    "model.filters=[4,8]", "model.dense_units=16", "runner.progress=false", "deploy=onnx",
                    f"hydra.run.dir={tmp_path}"],
                   timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    df = runs(tmp_path)
    assert len(df) == 2 * 2 and set(df.status) == {"ok"}
    assert sorted(df.framework) == ["keras", "keras", "pytorch", "pytorch"]
    assert list(df.columns) == RUNS_SCHEMA.names
    ok = df.iloc[0]
    for column in ("accuracy", "f1", "train_seconds", "median_epoch_seconds", "images_per_second", "latency_p50_ms",
                   "throughput_images_per_second", "peak_host_rss_mib", "peak_host_rss_fresh_mib", "param_count",
                   "split_hash", "git_sha", "framework_version", "node_id", "host", "device_name"):
        for row in df.itertuples():
            value = getattr(row, column)
            assert value is not None and value == value, (row.framework, column)  # present and not NaN
    # each framework's layout measured on this CPU, by its actor's first cell, reused by the other seed
    for fw, layout in (("keras", "data_format"), ("pytorch", "memory_format")):
        tuned = [json.loads(t)[layout] for t in df.loc[df.framework == fw, "tuning"]]
        assert sorted(t["measured_in"] == "this cell" for t in tuned) == [False, True], tuned
        assert len({t["choice"] for t in tuned}) == 1 and len(tuned[0]["seconds_per_step"]) == 2
    assert df.groupby("seed").split_hash.nunique().eq(1).all()  # both frameworks saw the same split
    # Both frameworks share the one CPU slot: their cells never overlapped.
    spans = sorted((r.start_time, r.end_time) for r in df.itertuples())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    gate = json.loads((tmp_path / "parity_gate.json").read_text())
    assert gate["status"] == "passed", gate.get("summary")
    assert read_metadata(tmp_path / "runs.parquet")["parity_gate"]["status"] == "passed"
    assert f"results: {tmp_path} (4 ok, 0 failed of 4 cells)" in proc.stdout
    # deploy=onnx (the default job runs deploy=off; the one real-path test turns it on): each trained model exported
    # to ONNX, served by ONNX Runtime in a fresh process (no training framework loaded there) and proven to predict
    # what the trained model predicted.
    dep = pq.read_table(tmp_path / "deployments.parquet").to_pandas()
    assert sorted(dep.framework) == ["keras", "keras", "pytorch", "pytorch"] and set(dep.format) == {"onnx"}
    assert set(dep.status) == {"ok"}, dep.error.tolist()
    assert (dep.max_abs_prob_diff <= 1e-4).all() and (dep.argmax_agreement == 1.0).all()
    assert set(dep.serving_imports) == {'["onnxruntime"]'}
