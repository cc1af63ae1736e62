"""How a sweep stops: SIGTERM, a double Ctrl-C, Ctrl-C during the report, a full disk, bad data and
same-second sweeps — each through the real ``python -m runner`` in a subprocess (fake framework, tiny
synthetic data), since the behaviour is the command's. Also: the local Ray listens on the loopback
only, and none of its processes outlives the driver.

Each test starts its own local Ray in its subprocess (≈ 20–90 s on a loaded 2-core machine).
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_support import FAKE, cli_env, fragment_ids, run_cli, runs

from runner import PROJECT_ROOT

SLOW_CELLS = [*FAKE, "grid.seed=[0,1,2,3,4,5]", "framework.fake.step_sleep_s=0.4"]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=PROJECT_ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.1)
    output = proc.communicate(timeout=30)[0] if proc.poll() is not None else ""
    pytest.fail(f"{what} did not happen in time (exit {proc.poll()}): {output[-3000:]}")


def _finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()


def _session_of(pid: int) -> re.Pattern[str]:
    """Ray session dirs of the process ``pid`` that started it (Ray names them after that pid)."""
    return re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{pid}(?![0-9])")


def _head_of(driver_pid: int) -> int:
    """The local Ray head the sweep started (``ray start --head``, a child of the driver)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == driver_pid and " start --head" in cmd:
                return int(entry.name)
    raise AssertionError(f"no local Ray head under the driver {driver_pid}")


def _processes(pattern: re.Pattern[str]) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern.search(cmd):
                found[int(entry.name)] = cmd[:120]
    return found


def _descendants(roots: set[int]) -> set[int]:
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, grew = set(roots), True
    while grew:
        new = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= new
        grew = bool(new)
    return found


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process) of every listening TCP socket of ``pids`` (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append((line.split()[3], ",".join(re.findall(r'\("([^"]+)"', line))))
    return found


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")


def _assert_resumable(output: str, out: Path, code: int, signame: str) -> None:
    assert "Traceback" not in output, output
    assert re.search(r"resume with: python -m runner runner.resume=\S+", output), output
    assert (out / "runs.parquet").is_file()  # consolidated
    invocation = json.loads((out / "sweep.json").read_text())["invocations"][-1]
    assert invocation["interrupted"] is True and invocation["signal"] == signame
    done = fragment_ids(out)
    assert set(runs(out).cell_id) == done  # everything finished on disk is in the consolidated table


def test_sigterm_stops_in_order_exit_143_ray_on_loopback_and_nothing_of_ours_survives(tmp_path):
    out = tmp_path / "out"
    proc = _start([*SLOW_CELLS, f"hydra.run.dir={out}"])
    try:
        _wait_for(lambda: fragment_ids(out), proc, "a first finished cell")
        head = _head_of(proc.pid)
        ours = _processes(_session_of(head))
        assert ours, "no Ray process of this sweep found"
        if shutil.which("ss"):
            family = _descendants({proc.pid, head, *ours})
            sockets = _listening(family)
            assert sockets, "the sweep's Ray listens nowhere?"
            outside = [s for s in sockets if not _is_loopback(s[0])]
            assert not outside, f"Ray sockets outside 127.0.0.0/8: {outside}"
        proc.send_signal(signal.SIGTERM)  # what docker stop / Kubernetes / a scheduler sends
        output = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, output
    _assert_resumable(output, out, 143, "SIGTERM")
    assert "SIGTERM: stopping" in output
    time.sleep(1)
    assert _processes(_session_of(head)) == {}, "a Ray process of the sweep outlived the driver"
    assert not Path(f"/proc/{head}").exists()


@pytest.mark.skipif(not shutil.which("ss"), reason="needs `ss` (iproute2) to list listening sockets")
def test_ss_is_available_for_the_loopback_check():
    subprocess.run(["ss", "-Hltn"], capture_output=True, check=True)


def test_a_second_ctrl_c_during_the_stop_keeps_the_consolidation_and_the_message(tmp_path):
    out = tmp_path / "out"
    proc = _start([*SLOW_CELLS, "runner.stop_grace_s=30", f"hydra.run.dir={out}"])
    try:
        _wait_for(lambda: fragment_ids(out), proc, "a first finished cell")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # impatient: cuts the grace period short, must not lose anything
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        output = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    _assert_resumable(output, out, 130, "SIGINT")
    assert "SIGINT again" in output or "already stopping" in output, output


def test_ctrl_c_during_the_report_ends_it_with_a_hint_and_no_traceback(tmp_path):
    out = tmp_path / "out"
    args = [a for a in FAKE if a != "report.enabled=false"] + ["grid.seed=[0,1]", f"hydra.run.dir={out}"]
    proc = _start(args)
    lines: list[str] = []
    try:
        for line in proc.stdout:  # read until the report starts
            lines.append(line)
            if "report: building" in line:
                proc.send_signal(signal.SIGINT)
                break
        output = "".join(lines) + _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any("report: building" in line for line in lines), output
    assert proc.returncode == 130, output
    assert "Traceback" not in output, output
    assert f"build the report with: python -m analysis {out}" in output
    assert set(runs(out).status) == {"ok"} and len(runs(out)) == 2  # the results are complete


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_is_one_line_naming_the_path_and_the_cause(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "160k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-OSError unit test covers the logic")
    try:
        # 8 cells of ~20 KiB of fragments each cannot fit in 160 KiB
        proc = run_cli([*FAKE, "grid.seed=[0,1,2,3,4,5,6,7]", f"hydra.run.dir={disk / 'out'}"], timeout=400)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    output = proc.stdout
    assert proc.returncode == 1, output
    assert "Traceback" not in output and "Logging error" not in output, output
    line = next(l for l in output.splitlines() if "No space left on device (ENOSPC)" in l)
    assert re.search(rf"sweep failed: cannot write {re.escape(str(disk / 'out'))}/\S+: No space left", line), line


def test_injected_disk_full_during_consolidation_consolidates_nothing_half_and_says_so(tmp_path, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    from runner.store import fragments as results
    from runner.store.io_errors import SweepIOError

    (tmp_path / "fragments").mkdir()
    real = pq.write_table

    def full(table, where, *a, **k):
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(SweepIOError) as info:
        results.consolidate(tmp_path)
    assert str(info.value) == f"cannot write {tmp_path / 'runs.parquet'}: No space left on device (ENOSPC)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fragments"]  # no temporary file left behind
    monkeypatch.setattr(pq, "write_table", real)
    (tmp_path / "gone").mkdir()
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(SweepIOError, match=r"cannot write \S*/gone: No such file or directory \(ENOENT\)$"):
        results.write_fragment(tmp_path / "gone", "c1", {"runs": []})
    assert not (tmp_path / "gone").exists()  # a vanished output dir is not recreated
    assert errno.ENOSPC == 28


def test_the_stop_path_by_phase_with_real_signals_and_no_ray():
    """runner.sweep.stopping on its own: real signals to this process, one stop path whatever the signal."""
    import os

    from runner.sweep.stopping import StopRequested, StopState, exit_code_for

    assert [exit_code_for(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopState()
    with stop.handling():
        # dispatch: the first signal only asks to stop (cells in flight get their grace period) ...
        with stop.dispatching():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert stop.interrupted and stop.signum == signal.SIGTERM and not stop.abandon
            assert not stop.grace_over(time.time(), 30)
            os.kill(os.getpid(), signal.SIGINT)  # ... a second one ends the grace period at once
            time.sleep(0.05)
            assert stop.abandon and stop.grace_over(time.time(), 30)
        # clean-up: signals are acknowledged, never raised (the consolidation must happen)
        assert stop.phase == "cleanup"
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
        assert stop.exit_code == 143  # the first signal decides the exit status
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored

    fresh = StopState()
    with fresh.handling(), pytest.raises(StopRequested):  # outside dispatch (Ray start, the gate): leave at once
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(1)
    assert fresh.exit_code == 129 and fresh.phase == "cleanup"
    report = StopState()
    with report.handling():
        report.reporting()
        with pytest.raises(StopRequested):  # the report step: a signal ends it
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert report.exit_code == 130


def test_only_our_ray_sessions_processes_are_found_and_ended_and_a_dead_raylet_is_named(tmp_path, monkeypatch):
    from runner.cluster import local_head

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    ours, theirs = 4242420, 4242421  # the pids in the session names (Ray names a session after its starter)
    sleeper = "import sys, time; time.sleep(60)"
    procs = {pid: subprocess.Popen([sys.executable, "-c", sleeper, f"--session-dir=/tmp/ray/session_2026-01-01_00-00-00_1_{pid}"])
             for pid in (ours, theirs)}
    try:
        found = local_head.leftover_processes(wait_s=0, pid=ours)
        assert found == [procs[ours].pid]  # never the other session's process
        assert local_head.end_leftovers(wait_s=0, pid=ours) == [procs[ours].pid]
        procs[ours].wait(timeout=10)
        assert procs[theirs].poll() is None
    finally:
        for proc in procs.values():
            proc.kill()
    logs = tmp_path / f"session_2026-01-01_00-00-00_1_{ours}" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.err").write_text("[2026-01-01 00:00:18,000 C 7 7] (raylet) node_manager.cc:3576: An unexpected "
                                     "system state ... Check failed: x Timed out waiting for file /tmp/x/metrics\n")
    assert local_head.raylet_failure(pid=ours) == "x Timed out waiting for file /tmp/x/metrics"
    assert local_head.raylet_failure(pid=theirs) is None
