"""Deployment (``runner.cell.deploy``, ``frameworks.serving``): every ok cell exports, a fresh serving process
reloads each artifact, the check proves it predicts what the trained model predicted, and it is timed.

The default suite uses the numpy stand-in, whose ONNX export is a real ONNX graph served by the real ONNX
Runtime; the real frameworks' exports are the slow tests at the end (``-m slow``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from runner_support import compose_cfg

from core.registry import DEPLOY_FORMATS, FRAMEWORK_MODULES
from core.results import DEPLOYMENTS_SCHEMA, to_table
from runner import PROJECT_ROOT
from runner.cell.deploy import compare
from runner.cell.run import cell_from_config, run_cell

DEPLOY_ON = ["train.deploy.enabled=true"]  # FAKE turns deployment off; every format of the adapter


def _cell(*overrides: str):
    result = run_cell(cell_from_config(compose_cfg([*DEPLOY_ON, *overrides])))
    assert result.status == "ok", result.error
    return result, {r["format"]: r for r in result.tables["deployments"]}


def test_a_cell_exports_serves_each_artifact_in_a_fresh_process_and_proves_it_equal():
    result, rows = _cell()
    assert list(rows) == ["npz", "onnx"]  # the stand-in's own format first, then ONNX
    to_table("deployments", result.tables["deployments"])  # every key a column of the schema
    predictions = result.tables["predictions"]
    for fmt, row in rows.items():
        assert row["status"] == "ok", row["error"]
        assert row["runtime"] == DEPLOY_FORMATS[fmt].runtime and row["role"] == DEPLOY_FORMATS[fmt].role
        assert row["cell_id"] == result.cell_id and row["framework"] == "fake" and row["seed"] == 0
        assert row["max_abs_prob_diff"] <= row["max_abs_prob_diff_limit"] == 1e-4
        assert row["argmax_agreement"] == row["min_argmax_agreement_limit"] == 1.0
        assert row["test_samples"] == len(predictions)
        assert row["runtime_threads"] == result.run["cpu_threads"] == 2  # the threads training had
        assert row["served_latency_calls"] >= 2 and row["served_throughput_calls"] >= 2  # train.inference.min_calls
        assert row["throughput_batch_size"] == result.run["batch_size"]  # the cell's batch size
        assert row["served_latency_p50_ms"] > 0 and row["served_throughput_images_per_second"] > 0
        assert row["artifact_mib"] > 0 and row["export_seconds"] >= 0 and row["load_seconds"] >= 0
        assert 0 < row["serving_peak_rss_mib"] < 500  # its own process's peak (not the runner's, inherited)
    # The fresh process is real: ONNX Runtime served without any training framework, numpy with nothing at all.
    assert json.loads(rows["onnx"]["serving_imports"]) == ["onnxruntime"]
    assert json.loads(rows["npz"]["serving_imports"]) == []
    assert json.loads(rows["onnx"]["runtime_detail"])["intra_op_num_threads"] == 2
    assert not set(json.loads(rows["onnx"]["serving_imports"])) & FRAMEWORK_MODULES


def test_a_planted_wrong_artifact_fails_the_check_with_its_numbers():
    # The ONNX file's weights are perturbed after export (framework.fake.export_perturb): the served model is
    # wrong, the row says so with both numbers, the cell and the other format stay ok.
    result, rows = _cell("framework.fake.export_perturb=[onnx]")
    bad = rows["onnx"]
    assert bad["status"] == "failed" and "perturbed" in bad["exporter"]
    assert "does not predict what the trained model predicted" in bad["error"]
    assert bad["max_abs_prob_diff"] > 1e-4 and f"{bad['max_abs_prob_diff']:.3g}" in bad["error"]
    assert 0 <= bad["argmax_agreement"] <= 1 and bad["served_latency_p50_ms"] > 0  # measured all the same
    assert rows["npz"]["status"] == "ok" and result.run["status"] == "ok"


def test_an_export_failure_is_a_failed_row_and_the_next_format_goes_on():
    result, rows = _cell("framework.fake.export_fail=[npz]")
    assert rows["npz"]["status"] == "failed" and rows["npz"]["error"].startswith("export failed: RuntimeError")
    assert "Traceback" in rows["npz"]["traceback"] and rows["npz"]["served_latency_p50_ms"] is None
    assert rows["onnx"]["status"] == "ok"


def test_formats_off_and_a_precision_the_check_does_not_cover():
    result = run_cell(cell_from_config(compose_cfg([])))  # FAKE: deploy=off
    assert result.tables["deployments"] == []
    _, rows = _cell("train.deploy.formats=[onnx]")
    assert list(rows) == ["onnx"]
    _, rows = _cell("train.deploy.formats=[torch_export]")  # not a format of this framework: no row
    assert rows == {}
    _, rows = _cell("parity.precision=tf32")
    assert {r["status"] for r in rows.values()} == {"skipped"} and "fp32" in rows["onnx"]["error"]


def test_a_bad_deploy_setting_is_refused_naming_the_key():
    from core.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"train.deploy.formats: 'saved_model' is not one of \['tf_saved_model'"):
        validate(compose_cfg(["train.deploy.formats=[saved_model]"]))
    with pytest.raises(ConfigError, match="train.deploy.max_abs_prob_diff: must be > 0"):
        validate(compose_cfg(["train.deploy.max_abs_prob_diff=0"]))


def test_the_check_by_hand():
    trained = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    assert compare(trained, trained, 1e-4, 1.0) == {"max_abs_prob_diff": 0.0, "argmax_agreement": 1.0, "status": "ok"}
    off = compare(trained + [[0, 5e-4], [0, 0]], trained, 1e-4, 1.0)
    assert off["status"] == "failed" and "max |Δ probability| 0.0005 > 0.0001" in off["error"]
    flipped = compare(trained[::-1], trained, 1.0, 1.0)  # within any |Δ|, but the classes differ
    assert flipped["argmax_agreement"] == 0.0 and "same arg-max on 0.00 % of 2 test samples < 100 %" in flipped["error"]
    assert compare(trained[:1], trained, 1e-4, 1.0)["status"] == "failed"  # a shape mismatch is a failed check


def test_every_deployment_column_is_described_and_every_format_names_its_runtime():
    for field in DEPLOYMENTS_SCHEMA:
        assert field.metadata[b"description"] and field.metadata[b"unit"], field.name
    from frameworks.serving import RUNTIMES

    assert {f.runtime for f in DEPLOY_FORMATS.values()} <= set(RUNTIMES)


def test_a_serving_process_that_fails_is_a_failed_row(tmp_path):
    from runner.cell.deploy import ServingError, serve_in_fresh_process

    request = {"artifact": str(tmp_path / "missing.onnx"), "runtime": "onnxruntime", "input_layout": "NHWC",
               "binary": False, "images": str(tmp_path / "x.npy"), "mean": [0.5], "std": [0.25], "threads": 1,
               "device": "cpu", "inference": {"warmup_calls": 0, "min_calls": 1, "min_seconds": 0, "max_seconds": 1},
               "throughput_batch_size": 2, "eval_batch_size": 2, "probs_out": str(tmp_path / "p.npy"),
               "result_out": str(tmp_path / "r.json")}
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(ServingError, match="exited with code 1") as info:
        serve_in_fresh_process(request, tmp_path / "req.json", timeout_s=120)
    assert "missing.onnx" in info.value.output


def test_a_serving_process_dies_with_the_process_that_started_it(tmp_path):
    # An actor killed mid-deployment (SIGKILL: no clean-up runs) must not leave its serving process behind.
    import os
    import signal
    import time

    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 1), np.uint8))
    request = {"parent_pid": None, "artifact": "unused", "runtime": "numpy", "images": str(tmp_path / "x.npy")}
    starter = textwrap.dedent(f"""
        import json, os, subprocess, sys, time
        request = json.loads({json.dumps(json.dumps(request))})
        request["parent_pid"] = os.getpid()
        # a request that blocks: the serving process reads a FIFO nobody writes
        os.mkfifo({str(tmp_path / "fifo")!r})
        request["artifact"] = {str(tmp_path / "fifo")!r}
        request.update(input_layout="NHWC", binary=False, mean=[0.5], std=[0.25], threads=1, device="cpu",
                       inference={{"warmup_calls": 0, "min_calls": 1, "min_seconds": 0, "max_seconds": 1}},
                       throughput_batch_size=2, eval_batch_size=2, probs_out="p.npy", result_out="r.json")
        open({str(tmp_path / "req.json")!r}, "w").write(json.dumps(request))
        child = subprocess.Popen([sys.executable, "-m", "frameworks.serving", {str(tmp_path / "req.json")!r}])
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    starter_proc = subprocess.Popen([sys.executable, "-c", starter], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    child = int(starter_proc.stdout.readline())
    time.sleep(1.0)  # the serving process is up and blocked in its load
    os.kill(child, 0)  # alive
    starter_proc.send_signal(signal.SIGKILL)
    starter_proc.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our zombie (it is not: its parent was the starter)
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    pytest.fail(f"serving process {child} outlived the process that started it")


# ---- the real frameworks (slow: one fresh framework process each) -------------------------------------
_REAL_CELL = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, "tests")
    from runner_support import compose_cfg
    from runner.cell.run import cell_from_config, run_cell
    framework = sys.argv[1]
    # The layout forced, not measured: the tuner's pick on a model this small is a coin toss, and Keras (TF)
    # channels_first → LiteRT does not pass the check (max |Δ probability| 6.3e-4 on an AMD EPYC; README Deploys).
    layout = {"pytorch": "framework.memory_format=channels_last"}.get(framework, "framework.data_format=channels_last")
    cfg = compose_cfg([f"framework={framework}", layout, "data=synthetic", "data.samples_per_class=24", "train=tiny",
                       "model.filters=[4,8]", "model.dense_units=8", "device=cpu", "deploy=full",
                       "train.inference.min_calls=3", "train.inference.warmup_calls=1"], fake=False)
    result = run_cell(cell_from_config(cfg))
    print("RESULT", json.dumps({"status": result.status, "error": result.error,
                                "rows": {r["format"]: r for r in result.tables["deployments"]},
                                "modules": sorted(m for m in ("tensorflow", "torch", "jax", "keras") if m in sys.modules)},
                               default=str))
""")


def _real(framework: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _REAL_CELL, framework], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0 and "RESULT " in proc.stdout, proc.stderr[-4000:]
    out = json.loads(proc.stdout.rsplit("RESULT ", 1)[1])
    assert out["status"] == "ok", out["error"]
    return out


def _assert_ok(row: dict) -> None:
    assert row["status"] == "ok", row["error"]
    assert row["max_abs_prob_diff"] <= 1e-4 and row["argmax_agreement"] == 1.0
    assert row["served_latency_p50_ms"] > 0 and row["load_seconds"] > 0 and row["artifact_mib"] > 0


@pytest.mark.slow  # ~1 min each: a fresh framework process, exports, and one serving process per format
@pytest.mark.parametrize("framework, native, onnx_via, skipped", [
    ("pytorch", "torch_export", "dynamo=True", {"litert": "litert-torch"}),
    ("keras", "tf_saved_model", "tf2onnx", {}),
    ("keras_torch", "torch_export", "TorchScript exporter", {"tf_saved_model": "torch_xla", "litert": "litert-torch"}),
])
def test_real_frameworks_export_their_native_format_and_onnx_and_serve_them_equal(framework, native, onnx_via, skipped):
    out = _real(framework)
    rows = out["rows"]
    assert next(iter(rows)) == native  # the framework's own serving format comes first
    _assert_ok(rows[native])
    _assert_ok(rows["onnx"])
    assert onnx_via in rows["onnx"]["exporter"]
    assert json.loads(rows["onnx"]["serving_imports"]) == ["onnxruntime"]  # no training framework to serve ONNX
    for fmt, needle in skipped.items():
        assert rows[fmt]["status"] == "skipped" and needle in rows[fmt]["error"]
    if framework == "keras":
        _assert_ok(rows["litert"])
        assert json.loads(rows["litert"]["serving_imports"]) == ["ai_edge_litert"]  # LiteRT without TensorFlow
    if framework == "keras_torch":
        assert "tensorflow" not in out["modules"]  # exporting did not pull TensorFlow into a keras_torch process
    if framework == "pytorch":
        assert json.loads(rows["torch_export"]["serving_imports"]) == ["torch"]


@pytest.mark.slow  # ~1 min: keras_jax's ONNX goes through jax2onnx (no TensorFlow); the rest cannot be made
def test_keras_jax_names_what_it_cannot_export_and_never_imports_tensorflow():
    out = _real("keras_jax")
    rows = out["rows"]
    assert rows["tf_saved_model"]["status"] == "skipped" and "jax2tf" in rows["tf_saved_model"]["error"]
    assert rows["litert"]["status"] == "skipped" and "TensorFlow or torch backend" in rows["litert"]["error"]
    onnx = rows["onnx"]
    assert "jax2onnx" in (onnx["exporter"] or "") and onnx["status"] in ("ok", "failed")
    if onnx["status"] == "failed":  # jax2onnx 0.17.1 writes a MaxPool ONNX Runtime refuses: a row that says so
        assert "serving failed" in onnx["error"] and "MaxPool" in onnx["error"]
    assert "tensorflow" not in out["modules"]


@pytest.mark.slow  # ~1 min: the real exporter, then its artifact's weights perturbed before serving
def test_a_perturbed_pytorch_onnx_artifact_fails_the_check(tmp_path):
    code = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, "tests")
        import onnx
        from onnx import numpy_helper
        from frameworks.pytorch_adapter import PyTorchAdapter
        from runner_support import compose_cfg
        from runner.cell.run import cell_from_config, run_cell
        real_export = PyTorchAdapter.export
        def export_then_perturb(self, fmt, directory):
            artifact = real_export(self, fmt, directory)
            model = onnx.load(artifact.path)
            init = max(model.graph.initializer, key=lambda i: numpy_helper.to_array(i).size)
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
            onnx.save(model, artifact.path)
            return artifact
        PyTorchAdapter.export = export_then_perturb
        cfg = compose_cfg(["framework=pytorch", "data=synthetic", "train=tiny", "model.filters=[4,8]",
                           "model.dense_units=8", "device=cpu", "deploy=onnx"], fake=False)
        result = run_cell(cell_from_config(cfg))
        print("RESULT", json.dumps(result.tables["deployments"], default=str))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (row,) = json.loads(proc.stdout.rsplit("RESULT ", 1)[1])
    assert row["format"] == "onnx" and row["status"] == "failed" and row["max_abs_prob_diff"] > 1e-4
    assert "does not predict what the trained model predicted" in row["error"]
