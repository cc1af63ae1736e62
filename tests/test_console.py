"""Quiet by default, complete on disk, the answer in the terminal.

- ``python -m runner`` (the real CLI, fake framework: the console policy is the point, not the
  framework) writes nothing on stderr; its actors' output is in ``<out>/logs/``; it ends with the
  verdict, then the paths.
- A real framework's start-up chatter (TensorFlow's C++ notices, absl, warnings) written after
  ``redirect_process_output`` lands in the file, none of it on the process's stderr.
- ``python -m analysis`` prints the report's verdict table (from summary.parquet) before the paths.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from analysis_support import make_sweep
from runner_support import FAKE, cli_env

from runner import PROJECT_ROOT

NOISE = ("WARNING", "authentication_token", "oneDNN", "cuInit", "cudart", "absl", "retracing", "Fatal Python",
         "(raylet)", "(CellWorker", "pid=")


def test_a_default_run_writes_no_stderr_line_and_keeps_actor_output_on_disk(tmp_path):
    out = tmp_path / "out"
    args = [*FAKE, "grid.seed=[0,1]", "report.enabled=true", f"hydra.run.dir={out}"]
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=PROJECT_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    noisy = [line for line in proc.stderr.splitlines() if line.strip()]
    assert noisy == [], "stderr lines:\n" + "\n".join(noisy[:20])
    assert not [n for n in NOISE if n in proc.stdout and n != "WARNING"], proc.stdout
    logs = list((out / "logs").glob("*.log"))
    assert [p.name for p in logs] == ["fake@cpu.log"] or logs and all(p.name.startswith("fake@") for p in logs)
    text = "".join(p.read_text() for p in logs)
    assert text.count("=== cell ") == 2  # each cell's output is found by its id
    lines = proc.stdout.splitlines()
    verdict = next(i for i, line in enumerate(lines) if "verdict" in line)
    paths = [i for i, line in enumerate(lines) if f"summary: {out}" in line or f"report: {out}/" in line]
    assert paths and verdict < min(paths), proc.stdout  # the answer first, then where the files are


def test_runner_verbose_is_a_config_option():
    from runner_support import compose_cfg

    assert compose_cfg().runner.verbose is False


@pytest.mark.slow  # ~40 s with a real framework; the default-run stderr test above stays in the default suite
def test_a_real_frameworks_chatter_goes_to_the_file_not_stderr(tmp_path):
    pytest.importorskip("keras")
    log = tmp_path / "actor.log"
    script = textwrap.dedent(f"""
        import os, sys, warnings
        os.environ["KERAS_BACKEND"] = "tensorflow"
        from runner.console.logs import redirect_process_output
        redirect_process_output({str(log)!r})
        from core.config import ParityConfig
        from frameworks.base import get_adapter
        get_adapter("keras", ParityConfig(), "cpu")
        import tensorflow as tf
        tf.get_logger().warning("a tf python warning")
        os.write(2, b"E0000 a C++ error line\\n")
        warnings.warn("a python warning")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "" and proc.stdout == ""
    text = log.read_text()
    assert "a tf python warning" in text and "E0000 a C++ error line" in text and "a python warning" in text


def test_analysis_prints_the_verdict_table_then_the_paths(tmp_path):
    make_sweep(tmp_path / "sweep", frameworks=("keras", "pytorch"), seeds=range(3))
    proc = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "sweep")], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for words in ("question", "A vs B", "estimate [95 % CI]", "verdict", "Trains faster", "More accurate",
                  "keras vs pytorch"):
        assert words in out, out
    assert out.index("Trains faster") < out.index("summary: ") < out.index("report: ")


def test_the_actor_body_measures_a_cold_start_once_and_writes_its_output_to_its_log(tmp_path):
    """``CellWorker`` without Ray (its placement probe stubbed): the first thing it does is the cold
    start; the first cell reports it, the next one null + why; its prints land in its log file."""
    log = tmp_path / "logs" / "fake@cpu.log"
    script = textwrap.dedent(f"""
        import json, sys
        from runner_support import compose_cfg
        from omegaconf import OmegaConf
        import runner.cluster.actors as actors
        actors._where = lambda: {{"node_id": "n", "host": "h", "pid": 1, "gpu_ids": [], "cuda_visible_devices": None,
                                  "node_ip": None, "gpu_uuid": None, "git_sha": None}}
        cfg = OmegaConf.to_container(compose_cfg(), resolve=True)
        cell = {{k: cfg[k] for k in ("data", "model", "framework", "parity", "train", "seed")}}
        cell["device"] = "cpu"
        worker = actors.CellWorker("fake", "cpu", {{"parity": cfg["parity"], "device": "cpu"}}, {str(log)!r})
        print("hello from the actor")
        first = worker.run(cell, "s", {{}})
        second = worker.run(dict(cell, seed=1), "s", {{}})
        out = [r["tables"]["runs"][0] for r in (first, second)]
        open({str(tmp_path / "result.json")!r}, "w").write(json.dumps([[r["import_seconds"], r["import_note"]] for r in out]))
    """)
    env = cli_env(PYTHONPATH=str(PROJECT_ROOT / "tests"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:] if log.exists() else proc.stderr[-3000:]
    import json

    (first_s, first_note), (second_s, second_note) = json.loads((tmp_path / "result.json").read_text())
    assert first_s is not None and first_s >= 0 and first_note.startswith("cold start: measured in a fresh actor")
    assert second_s is None and second_note.startswith("not measured: adapter reused")
    text = log.read_text()
    assert "hello from the actor" in text and text.count("=== cell ") == 2
    assert proc.stderr == "" and proc.stdout == ""  # fd 1 and 2 both go to the log


def run_in_terminal(args: list[str], columns: int = 100, timeout: float = 300) -> tuple[int, str]:
    """``python -m runner <args>`` on a pseudo-terminal of ``columns`` columns (stdout and stderr both a tty,
    as in an interactive shell); returns the exit code and everything it wrote."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = cli_env(COLUMNS=str(columns), LINES="50", TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=PROJECT_ROOT, env=env, stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode(errors="replace")


def visible_lines(raw: str) -> list[str]:
    """What a terminal shows, line by line: escape sequences removed, carriage returns start a line anew."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]", "", raw)
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        lines += line.split("\r")
    return lines


def test_in_a_100_column_terminal_no_line_wraps_and_each_says_the_time_and_what_happened(tmp_path):
    out = tmp_path / "out"
    code, raw = run_in_terminal([*FAKE, "grid.framework=[fake,fake_twin]", "grid.seed=[0,1]", "report.enabled=true",
                                 "runner.progress=true", f"hydra.run.dir={out}"], columns=100)
    assert code == 0, raw[-3000:]
    lines = [line for line in visible_lines(raw) if line.strip()]
    too_long = [line for line in lines if len(line) > 100]
    assert too_long == [], "\n".join(too_long)
    import re

    logged = [line for line in lines if re.match(r"\d\d:\d\d:\d\d  ", line)]
    assert any(re.match(r"\d\d:\d\d:\d\d  ok +fake · seed 0 · batch 32 · cpu in [\d.]+ s · \d/4", line) for line in logged), lines
    assert not any("[runner.sweep][INFO]" in line for line in lines)  # the full logging format stays in the log file
    assert "[runner.sweep][INFO]" in (out / "sweep.log").read_text()
    assert any(line.startswith("verdict") for line in lines)
