"""runner.cell: cell ids, one cell end to end with the fake framework, failures, timing, and the CLI."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from runner import PROJECT_ROOT
from runner.cell.run import run_cell
from runner.cell.identity import cell_id, cell_identity
from core.results import EPOCHS_SCHEMA, PREDICTIONS_SCHEMA, RUNS_SCHEMA, read_metadata, to_table
from cell_support import TINY, compose_cell

CONTEXT = {"host": "node-a", "node_id": "abc123", "gpu_index": 0, "attempt": 1, "concurrency": 1, "git_sha": "deadbeef"}


@pytest.fixture(scope="module")
def tiny_cell(tmp_path_factory) -> dict:
    os.environ["KVP_CACHE_DIR"] = str(tmp_path_factory.mktemp("cell-cache"))  # module-scoped: compose once
    return compose_cell("train.epochs=2")


# ---- identity ----------------------------------------------------------------------------
def test_cell_id_is_stable_and_ignores_order_and_locations(tiny_cell):
    cid = cell_id(tiny_cell)
    assert len(cid) == 16 and int(cid, 16) >= 0
    reordered = dict(reversed(list(copy.deepcopy(tiny_cell).items())))
    assert cell_id(reordered) == cid
    moved = copy.deepcopy(tiny_cell)
    moved["data"]["cache_dir"] = "/somewhere/else"  # where the cache lives is not what the cell computes
    moved["runner"] = {"concurrency": 4}  # nor are runner/report settings
    assert cell_id(moved) == cid
    out = subprocess.run([sys.executable, "-c", "import json,sys; from runner.cell.identity import cell_id; "
                          "print(cell_id(json.load(sys.stdin)))"], input=json.dumps(tiny_cell),
                         capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert out.stdout.strip() == cid  # same across processes (no hash randomisation, no id())


@pytest.mark.parametrize("path, value", [
    (("seed",), 1), (("device",), "cpu"), (("framework", "name"), "pytorch"), (("train", "batch_size"), 16),
    (("train", "learning_rate"), 0.01), (("train", "augment", "rot90"), False),
    (("parity", "batchnorm_epsilon"), 1e-5), (("model", "filters"), [4, 8]),
    (("data", "samples_per_class"), 41),
])
def test_cell_id_changes_with_every_identity_field(tiny_cell, path, value):
    changed = copy.deepcopy(tiny_cell)
    node = changed
    for key in path[:-1]:
        node = node[key]
    assert node[path[-1]] != value
    node[path[-1]] = value
    assert cell_id(changed) != cell_id(tiny_cell)


def test_paths_inside_the_checkout_are_hashed_relative_to_it():
    cell = compose_cell("data=eurosat_mini", base=())
    assert cell_identity(cell)["data"]["path"] == "${project_root:}/data/eurosat_mini"


# ---- one cell end to end ------------------------------------------------------------------
# import_seconds: null when the framework was already imported in this (test) process; import_note says so
NULLABLE_ON_CPU = {"error", "traceback", "import_seconds", "retry_causes",  # first attempt
                   "gpu_uuid", "accelerator_type", "node_ip",  # placement facts: the actor's context, null on CPU
                   "packages"}  # an arm's pins (core.arms): null in the base environment
#: Null without a target (``train.target.threshold: null``): nothing was measured against one.
NO_TARGET = {"target", "stop_at_target", "reached_target", "epochs_to_target", "train_seconds_to_target",
             "wall_seconds_to_target"}


def test_fake_cell_fills_every_column(tiny_cell):
    """Every column has a value, or is null by design (first attempt, no target), or says why (``unmeasured``)."""
    result = run_cell(tiny_cell, sweep_id="sweep-1", context=CONTEXT)
    assert result.status == "ok", result.run.get("traceback")
    run = result.run
    unmeasured = json.loads(run["unmeasured"] or "{}")
    empty = [c for c in RUNS_SCHEMA.names if run.get(c) is None and c not in NULLABLE_ON_CPU | NO_TARGET
             and c not in unmeasured]
    assert empty == []
    assert all(why.startswith("not measured: ") for why in unmeasured.values()), unmeasured
    assert "peak_device_memory_mib" in unmeasured and "energy_joules" in unmeasured  # CPU, no powercap here
    for table, schema in (("runs", RUNS_SCHEMA), ("epochs", EPOCHS_SCHEMA), ("predictions", PREDICTIONS_SCHEMA)):
        assert to_table(table, result.tables[table]).schema.equals(schema)  # rows match the schema exactly
    assert run["cell_id"] == cell_id(tiny_cell) == result.cell_id
    assert {k: run[k] for k in CONTEXT} == CONTEXT
    assert (run["framework"], run["backend"], run["model"], run["data"]) == ("fake", "numpy", "small_cnn", "synthetic")
    assert (run["num_classes"], run["image_size"], run["seed"], run["batch_size"], run["epochs"]) == (4, 16, 0, 32, 2)
    assert run["start_time"] <= run["end_time"]
    assert run["sweep_id"] == "sweep-1" and run["device_kind"] == "cpu"
    assert run["error"] is None and run["traceback"] is None
    knobs = json.loads(run["parity_knobs"])
    assert knobs["adam_epsilon"] == pytest.approx(1e-7) and knobs["framework"] == "fake"  # strict parity applied
    assert json.loads(run["versions"])["numpy"] == np.__version__
    # The fake reports its own softmax-regression weights (4×4 grid × 3 channels × 4 classes + 4).
    assert run["param_count"] == run["param_count_total"] == 4 * 4 * 3 * 4 + 4
    # Quality: a learnable task, so well above chance (0.25); JSON columns decode to full-size tables.
    assert run["accuracy"] > 0.5
    classes = json.loads(run["classes"])
    matrix = np.array(json.loads(run["confusion_matrix"]))
    assert matrix.shape == (4, 4) and matrix.sum() == run["test_samples"]
    per_class = json.loads(run["per_class"])
    assert list(per_class) == classes and [v["support"] for v in per_class.values()] == matrix.sum(axis=1).tolist()
    # Epoch rows: one per epoch; speed columns agree with them.
    epochs = result.tables["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]  # 1..N, as in the logs
    assert all(e["cell_id"] == run["cell_id"] and 0 <= e["val_accuracy"] <= 1 for e in epochs)
    assert run["first_epoch_seconds"] == epochs[0]["epoch_seconds"]
    assert run["median_epoch_seconds"] == epochs[1]["epoch_seconds"]
    assert run["train_seconds"] == pytest.approx(sum(e["epoch_seconds"] for e in epochs))
    # Predictions: one per test sample, scores are probabilities, y_pred their argmax.
    preds = result.tables["predictions"]
    assert len(preds) == run["test_samples"] == int(matrix.sum())
    assert len({p["sample_index"] for p in preds}) == len(preds)
    scores = np.array([p["scores"] for p in preds])
    assert scores.shape == (len(preds), 4) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert [p["y_pred"] for p in preds] == scores.argmax(axis=1).tolist()
    assert np.mean([p["y_pred"] == p["y_true"] for p in preds]) == pytest.approx(run["accuracy"])


def test_same_cell_twice_gives_identical_results_and_reuses_the_adapter(tiny_cell):
    cache: dict = {}
    first = run_cell(tiny_cell, adapter_cache=cache)
    adapter = next(iter(cache.values()))
    second = run_cell(tiny_cell, adapter_cache=cache)
    assert first.status == second.status == "ok"
    assert next(iter(cache.values())) is adapter and len(cache) == 1
    assert second.run["import_seconds"] is None  # no import happened: not a 0-second measurement
    assert second.run["import_note"].startswith("not measured: adapter reused")
    assert [p["scores"] for p in first.tables["predictions"]] == [p["scores"] for p in second.tables["predictions"]]
    assert first.run["split_hash"] == second.run["split_hash"]
    other_seed = run_cell({**tiny_cell, "seed": 1}, adapter_cache=cache)
    assert other_seed.run["split_hash"] != first.run["split_hash"]


def test_timing_reports_warm_up_apart(tiny_cell):
    cell = copy.deepcopy(tiny_cell)
    # The fake sleeps 0.4 s in its first training call (a JIT stand-in) and 0.4 s in its first predict
    # call; neither may leak into the steady-state epoch time or the latency percentiles.
    cell["framework"]["fake"] = {"compile_sleep_s": 0.4, "predict_warmup_s": 0.4}
    run = run_cell(cell).run
    assert run["status"] == "ok"
    assert run["first_epoch_seconds"] >= 0.4
    assert run["time_to_first_step_seconds"] >= 0.4
    assert run["median_epoch_seconds"] < 0.2
    assert run["images_per_second"] == pytest.approx(_train_samples(cell) / run["median_epoch_seconds"])
    assert run["latency_p50_ms"] < 100
    # train=tiny times 3 calls: a 99th percentile of 3 calls is their maximum, so it is not reported as one
    assert run["latency_p99_ms"] is None and "needs ≥ 100" in json.loads(run["unmeasured"])["latency_p99_ms"]
    assert run["throughput_images_per_second"] > 0


def test_epochs_carry_per_step_times_and_inference_repeats_follow_the_settings(tiny_cell):
    cell = copy.deepcopy(tiny_cell)
    cell["train"]["inference"] = {"warmup_calls": 1, "min_calls": 10, "min_seconds": 0.0, "max_seconds": 5.0}
    result = run_cell(cell)
    assert result.status == "ok", result.error
    batches = -(-_train_samples(cell) // cell["train"]["batch_size"])
    for row in result.tables["epochs"]:
        assert row["steps"] == batches  # epoch 0 is timed in two calls; their steps are joined
        assert 0 < row["step_seconds_p10"] <= row["step_seconds_median"] <= row["step_seconds_p90"] <= row["step_seconds_p99"]
    run = result.run
    assert run["latency_calls"] == 10 and run["throughput_calls"] == 10
    assert run["throughput_images_per_second_p10"] <= run["throughput_images_per_second"] <= run["throughput_images_per_second_p90"]
    assert run["latency_p50_ms"] <= run["latency_p90_ms"]  # 10 calls estimate a p90, not a p99
    assert run["latency_p99_ms"] is None and "10 timed batch-1 calls" in json.loads(run["unmeasured"])["latency_p99_ms"]
    assert (run["pipeline"], run["execution_mode"], run["deterministic"]) == ("device", "default", False)
    # time-driven: with min_seconds, calls continue past min_calls until the time is reached
    cell["train"]["inference"] = {"warmup_calls": 0, "min_calls": 1, "min_seconds": 0.05, "max_seconds": 5.0}
    cell["framework"]["fake"] = {"step_sleep_s": 0.0}
    assert run_cell(cell).run["latency_calls"] > 1


def test_a_combination_the_framework_cannot_honour_is_skipped_with_its_reason(tiny_cell):
    cell = copy.deepcopy(tiny_cell)
    cell["framework"] = {"name": "keras", "backend": "tensorflow"}
    cell["parity"].update(execution="compiled", deterministic=True)
    result = run_cell(cell)  # refused before the framework is imported
    assert result.status == "skipped" and "XLA" in result.error
    assert result.tables["epochs"] == [] and "tensorflow" not in sys.modules


def test_bad_inference_settings_fail_the_cell_with_a_clear_error(tiny_cell):
    cell = copy.deepcopy(tiny_cell)
    cell["train"]["inference"]["min_calls"] = 0
    result = run_cell(cell)
    assert result.status == "failed" and "train.inference.min_calls" in result.error


def _train_samples(cell) -> int:
    import runner.data

    return len(runner.data.prepare(cell["data"], cell["seed"]).train_idx)


def test_a_step_sleep_is_charged_to_training_time(tiny_cell):
    cell = copy.deepcopy(tiny_cell)
    cell["framework"]["fake"] = {"step_sleep_s": 0.02}
    run = run_cell(cell).run
    steps = -(-_train_samples(cell) // run["batch_size"])
    assert run["median_epoch_seconds"] >= 0.02 * steps


def test_a_failing_cell_returns_a_failed_row(tiny_cell):
    cell = copy.deepcopy(tiny_cell)
    cell["framework"]["fake"] = {"fail": [0]}  # seed 0 only
    cache: dict = {}
    result = run_cell(cell, sweep_id="s", context=CONTEXT, adapter_cache=cache)
    run = result.run
    assert result.status == run["status"] == "failed"
    assert run["error"].startswith("RuntimeError: fake framework: failure requested") and "\n" not in run["error"]
    assert "train_epoch" in run["traceback"] and "Traceback" in run["traceback"]
    assert (run["framework"], run["seed"], run["host"], run["cell_id"]) == ("fake", 0, "node-a", cell_id(cell))
    assert result.tables["epochs"] == [] and result.tables["predictions"] == []
    assert cache == {}  # a failed adapter is not reused
    to_table("runs", result.tables["runs"])  # still a valid row
    assert run_cell({**cell, "seed": 1}).status == "ok"  # other seeds unaffected


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c.pop("model"), "lacks \\['model'\\]"),
    (lambda c: c["train"].update(batch_size=0), "train.batch_size: must be >= 1, got 0"),
    (lambda c: c["parity"].update(bn_momentum=0.1), "parity.bn_momentum: unknown key"),
    (lambda c: c["framework"].update(name="tensorflow2"), "framework.name: .tensorflow2. is not one of"),
    (lambda c: c["framework"]["fake"].update(explode=True), "framework.fake.explode: unknown key"),
])
def test_bad_cell_configs_fail_with_a_clear_error(tiny_cell, mutate, match):
    cell = copy.deepcopy(tiny_cell)
    mutate(cell)
    result = run_cell(cell)
    assert result.status == "failed"
    import re
    assert re.search(match, result.error), result.error


def test_unknown_context_key_fails_the_cell(tiny_cell):
    result = run_cell(tiny_cell, context={"hostname": "x"})
    assert result.status == "failed" and "context: unknown key(s) ['hostname']" in result.error


def test_param_count_mismatch_fails_the_cell(tiny_cell, monkeypatch):
    from frameworks.fake_adapter import FakeAdapter

    monkeypatch.setattr(FakeAdapter, "builds_spec", True)  # pretend the fake claims to build the spec
    result = run_cell(tiny_cell)
    assert result.status == "failed" and "does not match the spec" in result.error


# ---- fake hooks the runner's tests rely on -------------------------------------------------------
def test_fake_record_and_crash_once_hooks(tiny_cell, tmp_path):
    record, marker = tmp_path / "record.jsonl", tmp_path / "crashed"
    cell = copy.deepcopy(tiny_cell)
    cell["framework"]["fake"] = {"record_file": str(record), "crash_once_file": str(marker)}
    script = textwrap.dedent("""
        import json, sys
        from runner.cell.run import run_cell
        print(run_cell(json.load(sys.stdin)).status)
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3"}
    runs = [subprocess.run([sys.executable, "-c", script], input=json.dumps(cell), capture_output=True, text=True,
                           cwd=PROJECT_ROOT, env=env, timeout=120) for _ in range(2)]
    assert runs[0].returncode == -signal.SIGKILL and marker.exists()  # first attempt: the process dies
    assert runs[1].returncode == 0 and runs[1].stdout.strip() == "ok", runs[1].stderr  # the retry succeeds
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(lines) == 3  # epoch 0 = first step + the rest (two calls), then epoch 1
    assert len({ln["pid"] for ln in lines}) == 1  # all from the retry: the crash came before any record
    assert {ln["cuda_visible_devices"] for ln in lines} == {"3"} and all(ln["start"] <= ln["end"] for ln in lines)


# ---- CLI ---------------------------------------------------------------------------------------
def _cli(tmp_path: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "runner.cell", *overrides, f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=timeout)


def test_cli_writes_three_parquet_files(tmp_path):
    proc = _cli(tmp_path, "framework=fake", *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "→ OK" in proc.stdout and "test accuracy" in proc.stdout
    runs = pq.read_table(tmp_path / "runs.parquet").to_pylist()
    assert len(runs) == 1 and runs[0]["status"] == "ok"
    assert pq.read_table(tmp_path / "epochs.parquet").num_rows == 1
    assert pq.read_table(tmp_path / "predictions.parquet").num_rows == runs[0]["test_samples"]
    meta = read_metadata(tmp_path / "runs.parquet")
    assert meta["config"]["framework"]["name"] == "fake" and cell_id(meta["config"]) == runs[0]["cell_id"]


def test_cli_exits_1_with_the_error_when_the_cell_fails(tmp_path):
    proc = _cli(tmp_path, "framework=fake", *TINY, "framework.fake.fail=true")
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout and "error: RuntimeError: fake framework: failure requested" in proc.stdout
    assert pq.read_table(tmp_path / "runs.parquet").to_pylist()[0]["status"] == "failed"


def test_cli_names_a_missing_config_value(tmp_path):
    proc = _cli(tmp_path, "framework=fake", "data=eurosat", "train=tiny")
    assert proc.returncode == 2 and "data.path is required" in proc.stderr
    assert not (tmp_path / "runs.parquet").exists()


@pytest.mark.slow  # ~1 min each; the default suite runs real frameworks through the whole sweep (integration test)
@pytest.mark.parametrize("framework, module", [("pytorch", "frameworks.pytorch_adapter"),
                                               ("keras", "frameworks.keras_adapter")])
def test_cli_with_a_real_framework(tmp_path, framework, module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet (FRAMEWORKS helper)")
    proc = _cli(tmp_path, f"framework={framework}", *TINY, "model.filters=[4,8]", "device=cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    run = pq.read_table(tmp_path / "runs.parquet").to_pylist()[0]
    assert run["framework"] == framework and run["status"] == "ok"
    assert run["param_count"] > 0 and run["import_seconds"] > 0 and run["first_epoch_seconds"] > 0
    assert run["import_note"].startswith("cold start")
    assert 0 <= run["accuracy"] <= 1 and run["latency_p50_ms"] > 0
    assert json.loads(run["parity_knobs"])["batchnorm_epsilon"] == pytest.approx(1e-3)
    assert pq.read_table(tmp_path / "predictions.parquet").num_rows == run["test_samples"]
