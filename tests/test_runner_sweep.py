"""The sweep on a real local Ray: results, pinning, failures, actor death + retry, interrupt, resume.

One Ray instance serves the whole module (its start-up is the slow part on 2 cores); it declares
two fake GPUs, so GPU pinning is testable on a CPU machine — and, the node having GPUs, CPU cells
run on the node's exclusive CPU slot. Every sweep kills its own actors when done. Cells run the
numpy-only fake framework.
"""
from __future__ import annotations

import _thread
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow.parquet as pq
import pandas as pd
import pytest
from runner_support import compose_cfg, fragment_ids, runs

from runner import PROJECT_ROOT
from runner.errors import GridError
from core.results import RUNS_SCHEMA, read_metadata
from runner.store.fragments import consolidate, ok_cell_ids
from runner.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from runner.sweep.run import run_sweep

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # address="local": a new instance of our own, never another session's Ray found in /tmp/ray; the
    # agents get time to register on a loaded machine (the raylet's fixed default kills the start).
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    records, logger = _Records(), logging.getLogger("runner.sweep")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        outcome = run_sweep(compose_cfg(["grid.seed=[0,1,2]"]), out_dir=out)
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    return out, outcome, records.lines


def test_every_cell_gets_an_ok_row_and_the_tables_are_consolidated(finished_sweep):
    out, outcome, _ = finished_sweep
    assert outcome.exit_code == EXIT_OK, outcome.message
    assert len(outcome.planned) == 3 and sorted(outcome.ok) == sorted(outcome.planned)
    table = pq.read_table(out / "runs.parquet")
    assert table.schema.names == RUNS_SCHEMA.names
    df = table.to_pandas()
    assert sorted(df.seed) == [0, 1, 2] and set(df.status) == {"ok"}
    assert set(df.cell_id) == set(outcome.planned) == fragment_ids(out)
    assert set(df.sweep_id) == {outcome.sweep_id}
    assert (df.attempt == 1).all() and (df.concurrency == 1).all()
    assert df.node_id.notna().all() and df.host.notna().all() and df.gpu_index.isna().all()
    assert len(pq.read_table(out / "epochs.parquet")) == 3  # one epoch each
    assert len(pq.read_table(out / "predictions.parquet")) == df.test_samples.sum()
    meta = read_metadata(out / "runs.parquet")
    assert meta["sweep_id"] == outcome.sweep_id and meta["complete"] is True and meta["cells_planned"] == 3
    assert meta["config"]["grid"]["seed"] == [0, 1, 2] and meta["config"]["train"]["epochs"] == 1
    env = meta["environment"]
    assert env["ray_version"] == ray.__version__ and env["git_sha"] and env["hosts"] and env["devices"] == ["cpu"]
    assert env["cluster_resources"]["CPU"] == 2 and env["cluster_resources"]["GPU"] == 2
    assert read_metadata(out / "epochs.parquet")["sweep_id"] == outcome.sweep_id
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["sweep_id"] == outcome.sweep_id and sorted(manifest["cells"]) == sorted(outcome.planned)


def test_cells_are_logged_as_they_start_and_finish(finished_sweep):
    out, outcome, lines = finished_sweep
    for cid, seed in zip(runs(out).cell_id, runs(out).seed):
        assert any(line.startswith(f"start {cid} (fake seed={seed} batch=32 device=cpu) on fake@")
                   for line in lines), lines
        assert any(line.startswith(f"finish {cid} (fake seed={seed}") and ": ok in " in line for line in lines), lines
    assert "all 3 cells ok" in lines  # after every cell's finish line (then only where the files are)
    assert lines.index("all 3 cells ok") > max(i for i, line in enumerate(lines) if line.startswith("finish "))


def _intervals(df):
    return [(r.start_time.timestamp(), r.end_time.timestamp()) for r in df.itertuples()]


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_gpu_actors_are_pinned_and_no_two_cells_share_a_device_at_once(tmp_path):
    record = tmp_path / "record.jsonl"
    overrides = ["grid.device=[gpu,cpu]", "grid.seed=[0,1,2,3]", f"framework.fake.record_file={record}",
                 "framework.fake.step_sleep_s=0.1"]
    outcome = run_sweep(compose_cfg(overrides), out_dir=tmp_path / "out")
    assert outcome.exit_code == EXIT_OK, outcome.message
    assert outcome.slots == 3  # two GPUs + the node's CPU slot
    df = runs(tmp_path / "out")
    gpu, cpu = df[df.device == "gpu"], df[df.device == "cpu"]
    assert len(gpu) == len(cpu) == 4 and (df.concurrency == 1).all()
    assert set(gpu.gpu_index) == {0, 1} and cpu.gpu_index.isna().all()
    # Each actor saw only its own GPU, and the row's gpu_index is that GPU.
    events = [json.loads(line) for line in record.read_text().splitlines()]
    visible_by_pid = {}
    for e in events:
        visible_by_pid.setdefault(e["pid"], set()).add(e["cuda_visible_devices"])
    assert all(len(v) == 1 for v in visible_by_pid.values())
    assert sorted(v.pop() for v in visible_by_pid.values()) == ["", "0", "1"]  # the CPU actor sees no GPU
    # Actors run at the driver's priority (Ray's default worker niceness is +15; see runner/cluster/session.py).
    assert {e["niceness"] for e in events} == {os.nice(0)}
    # One timing cell per GPU at a time; a CPU cell on this (GPU) node runs alone.
    for index in (0, 1):
        spans = sorted(_intervals(gpu[gpu.gpu_index == index]))
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"cells overlapped on GPU {index}"
    for c in _intervals(cpu):
        assert not any(_overlap(c, g) for g in _intervals(gpu)), "a CPU cell overlapped a GPU cell on one node"
    starts = [e for e in events if e["cuda_visible_devices"] in ("0", "1")]
    for a in starts:
        for b in starts:
            if a is not b and a["cuda_visible_devices"] == b["cuda_visible_devices"]:
                assert not _overlap((a["start"], a["end"]), (b["start"], b["end"]))


def test_faults_killed_actors_are_retried_failures_are_rows_and_nothing_is_lost(tmp_path):
    # One sweep, four seeds, dispatched in seed order (one framework ⇒ blocks of one):
    #   seed 0: its actor is SIGKILLed once (the marker file says so) → retried, ok on attempt 2
    #   seed 1: kills its actor every time → failed after 1 + max_retries attempts
    #   seed 2: raises inside the cell → a failed row with the traceback, not retried
    #   seed 3: ok on attempt 1, after all that
    marker = tmp_path / "crashed-once"
    overrides = ["grid.seed=[0,1,2,3]", f"framework.fake.crash_once_file={marker}", "framework.fake.crash=[1]",
                 "framework.fake.fail=[2]", "runner.max_retries=1"]
    outcome = run_sweep(compose_cfg(overrides), out_dir=tmp_path / "out")
    assert marker.exists()  # the first cell really killed its actor's process
    assert outcome.exit_code == EXIT_FAILED
    df = runs(tmp_path / "out").set_index("seed").sort_index()
    assert sorted(df.index) == [0, 1, 2, 3]  # no loss
    assert list(df.status) == ["ok", "failed", "failed", "ok"]
    assert list(df.attempt) == [2, 2, 1, 1]
    assert "gave up after 2 attempt(s)" in df.loc[1, "error"] and "died" in df.loc[1, "error"]
    assert df.loc[1, "framework"] == "fake" and df.loc[1, "batch_size"] == 32  # identity columns filled
    assert "failure requested" in df.loc[2, "error"] and "Traceback" in df.loc[2, "traceback"]
    assert sorted(outcome.failed) == sorted(df.loc[[1, 2], "cell_id"])
    assert all(cid in outcome.message for cid in outcome.failed)


def test_deployments_are_consolidated_and_a_failed_export_is_a_row_not_a_stop(tmp_path):
    # Deployment on, and the stand-in's own format fails to export in every cell: the cells stay ok, the sweep
    # goes on, every cell has its failed npz row and its ONNX row (served in a fresh process), consolidated.
    overrides = ["grid.seed=[0,1]", "train.deploy.enabled=true", "framework.fake.export_fail=[npz]"]
    outcome = run_sweep(compose_cfg(overrides), out_dir=tmp_path)
    assert outcome.exit_code == EXIT_OK, outcome.message
    dep = pq.read_table(tmp_path / "deployments.parquet").to_pandas()
    assert sorted(dep.cell_id.unique()) == sorted(outcome.planned) and len(dep) == 4
    assert set(dep[dep.format == "npz"].status) == {"failed"}
    assert dep[dep.format == "npz"].error.str.startswith("export failed: RuntimeError: fake framework").all()
    onnx = dep[dep.format == "onnx"]
    assert set(onnx.status) == {"ok"} and (onnx.max_abs_prob_diff <= 1e-4).all()
    assert read_metadata(tmp_path / "deployments.parquet")["sweep_id"] == outcome.sweep_id


def test_a_sweep_where_everything_fails_says_why_in_one_line(tmp_path):
    outcome = run_sweep(compose_cfg(["grid.seed=[0]", "framework.fake.fail=true"]), out_dir=tmp_path)
    assert outcome.exit_code == EXIT_FAILED
    assert outcome.message.startswith("sweep failed: all 1 cells failed; first error: RuntimeError: fake framework")
    assert "\n" not in outcome.message


def test_interrupt_leaves_finished_cells_on_disk_and_resume_runs_exactly_the_missing_ones(tmp_path):
    # Ctrl-C in the driver (KeyboardInterrupt in the main thread) once the first fragment exists.
    out = tmp_path / "out"
    overrides = ["grid.seed=[0,1,2,3]", "framework.fake.step_sleep_s=0.3", "runner.max_retries=1",
                 "train.deploy.enabled=true", "train.deploy.formats=[npz]"]

    def interrupt_after_first_fragment():
        deadline = time.time() + 120
        while time.time() < deadline and not fragment_ids(out):
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_after_first_fragment, daemon=True).start()
    outcome = run_sweep(compose_cfg(overrides), out_dir=out, overrides=overrides)
    assert outcome.exit_code == EXIT_INTERRUPTED
    done = fragment_ids(out)
    assert 1 <= len(done) < 4 and set(outcome.missing) == set(outcome.planned) - done
    assert outcome.resume_command == f"python -m runner runner.resume={out} runner.max_retries=1"
    assert read_metadata(out / "runs.parquet")["complete"] is False

    lost = sorted(done)[0]  # and a finished cell whose fragment is gone counts as missing too
    shutil.rmtree(out / "fragments" / lost)
    resumed = run_sweep(compose_cfg(["runner.resume=true"]), out_dir=out)  # the grid comes from the saved sweep
    assert resumed.exit_code == EXIT_OK, resumed.message
    assert sorted(resumed.ran) == sorted([*outcome.missing, lost])  # exactly the missing cells
    df = runs(out)
    assert sorted(df.cell_id) == sorted(outcome.planned) and set(df.status) == {"ok"}
    assert resumed.sweep_id == outcome.sweep_id and set(df.sweep_id) == {outcome.sweep_id}
    assert read_metadata(out / "runs.parquet")["complete"] is True
    deployments = pq.read_table(out / "deployments.parquet").to_pandas()  # consolidated with the rest, each cell once
    assert sorted(deployments.cell_id) == sorted(outcome.planned) and set(deployments.status) == {"ok"}

    # Nothing missing: a resume by path runs nothing (and starts no actor).
    again = run_sweep(compose_cfg([f"runner.resume={out}"]), out_dir=tmp_path / "elsewhere")
    assert again.exit_code == EXIT_OK and again.ran == [] and again.out_dir == out
    invocations = json.loads((out / "sweep.json").read_text())["invocations"]
    assert [i["cells_to_run"] for i in invocations] == [4, 4 - len(done) + 1, 0]
    assert [i["interrupted"] for i in invocations] == [True, False, False]


def test_a_stop_signal_while_the_actors_start_is_a_stop_even_when_ray_reraises_it_as_its_own(tmp_path, monkeypatch):
    # A SIGTERM landing inside ray.get while the actors start: Ray replaces our StopRequested by a
    # plain KeyboardInterrupt. Found by benchmarks/chaos.py: the sweep then said "interrupted before the
    # sweep started; nothing was written" (exit 130, no resume command) although its dir existed.
    from runner.cluster.actors import ActorPool

    def start(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # our handler raises StopRequested here...
        time.sleep(5)
        raise AssertionError("the stop signal was not raised")

    def converted(self, *args, **kwargs):
        try:
            start(self, *args, **kwargs)
        except KeyboardInterrupt:
            raise KeyboardInterrupt from None  # ...which Ray turns into its own
    monkeypatch.setattr(ActorPool, "start", converted)
    out = tmp_path / "out"
    outcome = run_sweep(compose_cfg(["grid.seed=[0,1]"]), out_dir=out, overrides=["grid.seed=[0,1]"])
    assert outcome.exit_code == 128 + signal.SIGTERM, outcome.message
    assert outcome.resume_command == f"python -m runner runner.resume={out}"
    assert len(outcome.missing) == 2 and (out / "runs.parquet").exists()
    assert json.loads((out / "sweep.json").read_text())["invocations"][-1]["interrupted"] is True


def test_resume_refuses_a_different_grid_and_a_fresh_sweep_refuses_an_old_dir(finished_sweep, tmp_path):
    src, _, _ = finished_sweep
    with pytest.raises(GridError, match="resume with runner.\\* overrides only"):
        run_sweep(compose_cfg(["runner.resume=true"]), out_dir=src, overrides=["grid.seed=[7]"])
    with pytest.raises(GridError, match="already holds a sweep"):
        run_sweep(compose_cfg([]), out_dir=src)
    with pytest.raises(GridError, match="holds no sweep to resume"):
        run_sweep(compose_cfg(["runner.resume=true"]), out_dir=tmp_path)


def test_a_device_the_cluster_lacks_is_refused_before_any_cell_runs(tmp_path):
    with pytest.raises(GridError, match="'gpu:H100' requested but the cluster has no H100 GPU"):
        run_sweep(compose_cfg(["grid.device=[cpu,gpu:H100]"]), out_dir=tmp_path)
    assert not (tmp_path / "fragments").exists() and not (tmp_path / "sweep.json").exists()


# ---- atomic fragments ---------------------------------------------------------------------
_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import pyarrow.parquet as pq
    from runner.store import fragments as results
    real = pq.write_table
    calls = []
    def dying_write(table, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:  # the process dies half-way through the fragment (kill -9 / power loss)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(table, path, *a, **k)
    results.pq.write_table = dying_write
    results.write_fragment(sys.argv[1], "deadbeefdeadbeef", {"runs": [{"cell_id": "deadbeefdeadbeef", "status": "ok"}]})
""")


def test_a_crash_mid_write_leaves_no_partial_fragment(tmp_path, monkeypatch):
    from runner.store import fragments as results

    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], cwd=PROJECT_ROOT)
    assert proc.returncode == -signal.SIGKILL
    assert fragment_ids(tmp_path) == set()  # only a hidden temp dir may remain
    assert ok_cell_ids(tmp_path) == set()
    assert len(pq.read_table(consolidate(tmp_path)["runs"])) == 0
    # An exception half-way through (disk full) cleans up its temp dir too.
    real = results.pq.write_table
    calls = []

    def failing_write(table, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(table, path, *a, **k)

    monkeypatch.setattr(results.pq, "write_table", failing_write)
    with pytest.raises(OSError):
        results.write_fragment(tmp_path, "cafebabecafebabe",
                               {"runs": [{"cell_id": "cafebabecafebabe", "status": "ok"}]})
    assert fragment_ids(tmp_path) == set()
    assert not any(p.name.startswith(".cafebabe") for p in (tmp_path / "fragments").iterdir())


def test_a_native_crash_is_retried_its_signal_recorded_and_its_dump_goes_to_the_log_file_only(tmp_path, capfd):
    # seed 0 segfaults once (SIGSEGV in its actor): retried like kill -9, the row says attempt 2 and the signal.
    marker, log_file = tmp_path / "crashed-once", tmp_path / "sweep.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        overrides = ["grid.seed=[0,1]", f"framework.fake.crash_once_file={marker}", "framework.fake.crash_signal=SIGSEGV"]
        outcome = run_sweep(compose_cfg(overrides), out_dir=tmp_path / "out")
    finally:
        root.removeHandler(handler)
        handler.close()
    assert marker.exists() and outcome.exit_code == EXIT_OK, outcome.message
    df = runs(tmp_path / "out").set_index("seed").sort_index()
    assert list(df.attempt) == [2, 1]
    causes = json.loads(df.loc[0, "retry_causes"])
    assert [c["attempt"] for c in causes] == [1] and causes[0]["signal"] == "SIGSEGV", causes
    assert pd.isna(df.loc[1, "retry_causes"])  # a first attempt has no cause (null; pandas reads it as NaN)
    text = log_file.read_text()
    assert "crashed with SIGSEGV; its dump:" in text and "Fatal Python error: Segmentation fault" in text
    console = capfd.readouterr()
    assert "Fatal Python error" not in console.out + console.err  # the dump is not on the console
