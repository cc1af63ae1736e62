"""The local Ray head of a sweep: ``ray start --head --block`` on the loopback in a watched process of its
own, its token, and the clean-up of everything its session started (never another Ray's processes)."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from core.proc import die_with_parent

log = logging.getLogger("runner.sweep")

#: Where a local Ray listens: the loopback only (nothing of a local sweep is reachable from the network).
LOOPBACK = "127.0.0.1"

#: Where a user's own token for a local Ray would come from (then it is used as it is).
TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _session_token(env: dict[str, str]) -> None:
    """Token auth for the local head: ``ray start --head`` (Ray >= 2.5x) enables it but, unlike
    ``ray.init``, creates no token — on a fresh machine (a new container) it exits with "no
    authentication token was found". The head gets a fresh random token of its own in its environment
    (its raylet and workers inherit it), never written to disk and never shared with another Ray; a
    token the user set (``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``) or ``RAY_AUTH_MODE=disabled`` is kept."""
    if env.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    env["RAY_AUTH_MODE"] = "token"
    if not any(env.get(var) for var in TOKEN_VARS):
        import secrets

        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


class LocalHead:
    """``ray start --head --block`` on the loopback, in its own process; stopped with everything it started.

    Every port on 127.0.0.1 (node address = loopback with cluster mode off, dashboard off unless
    ``runner.dashboard``, then on 127.0.0.1). The head process gets SIGTERM if the driver dies
    (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the driver takes the local Ray down with it.
    """

    def __init__(self, runner_cfg: Mapping[str, Any], timeout_s: float) -> None:
        self.runner_cfg = runner_cfg
        self.timeout_s = timeout_s
        self.port = _free_loopback_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        _session_token(self.env)

    def command(self) -> list[str]:
        ray_cli = Path(sys.executable).with_name("ray")
        cmd = [str(ray_cli) if ray_cli.exists() else "ray", "start", "--head", "--block", f"--port={self.port}",
               f"--node-ip-address={LOOPBACK}", f"--dashboard-host={LOOPBACK}", "--disable-usage-stats",
               f"--include-dashboard={'true' if self.runner_cfg.get('dashboard') else 'false'}"]
        # Agent ports chosen here, free on the loopback, and passed explicitly.
        for flag in ("--dashboard-agent-grpc-port", "--dashboard-agent-listen-port", "--runtime-env-agent-port",
                     "--metrics-export-port"):
            cmd.append(f"{flag}={_free_loopback_port()}")
        if self.runner_cfg.get("num_cpus") is not None:
            cmd.append(f"--num-cpus={int(self.runner_cfg['num_cpus'])}")
        if self.runner_cfg.get("num_gpus") is not None:
            cmd.append(f"--num-gpus={int(self.runner_cfg['num_gpus'])}")
        return cmd

    def start(self) -> None:
        env = self.env
        # The raylet gives its Python agents a fixed ~15-30 s to register, then kills itself: on a
        # loaded 2-core machine they need ~50 s (measured), so every start failed. Give them the whole
        # start-up timeout instead (a user's own setting wins).
        env.setdefault("RAY_agent_register_timeout_ms", str(int(self.timeout_s * 1000)))
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, start_new_session=True, preexec_fn=_die_with_parent)
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        deadline = time.monotonic() + self.timeout_s
        checked = time.monotonic()
        while time.monotonic() < deadline:
            if any("Ray runtime started" in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                reader.join(timeout=2)
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self._cause()}")
            if time.monotonic() - checked > 2:  # a dead raylet: the head would wait for ever
                checked = time.monotonic()
                failure = raylet_failure(pid=self.proc.pid)
                if failure:
                    raise RuntimeError(f"the raylet died during start-up: {failure}")
            time.sleep(0.2)
        raise RuntimeError(f"the local Ray did not start within {self.timeout_s:.0f} s: {self._cause()}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if len(self.lines) > 400:
                del self.lines[:200]

    def _cause(self) -> str:
        failure = raylet_failure(pid=self.proc.pid if self.proc else None)
        if failure:
            return f"the raylet died: {failure}"
        errors = [line for line in self.lines if "error" in line.lower() or "failed" in line.lower()]
        return " ".join((errors or self.lines or ["no output"])[-2:])[:400]

    def stop(self) -> None:
        """SIGTERM the head (``ray start --block`` then stops its processes); what is left after 10 s of
        THIS session (its dir names the head's pid) is killed. Never another Ray instance's processes."""
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            except BaseException:  # a signal during clean-up: go on killing
                self.proc.kill()
        end_leftovers(wait_s=3.0, pid=pid)
        try:
            os.killpg(pid, signal.SIGKILL)  # anything still in the head's process group
        except OSError:
            pass


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    die_with_parent(signal.SIGTERM)


def _free_loopback_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def our_sessions(pid: int | None = None) -> "re.Pattern[str]":
    """Session dirs of the Ray instance started by process ``pid`` (this one by default): Ray names them
    ``session_<date>_<time>_<n>_<pid>`` — other Ray instances on the machine never match."""
    pid = os.getpid() if pid is None else pid
    return re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{pid}(?![0-9])")


def leftover_processes(wait_s: float = 5.0, pid: int | None = None) -> list[int]:
    """PIDs of processes of the Ray sessions this process started (their command line names the session
    dir) still alive after ``wait_s`` — e.g. ``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, or a
    half-started node's ``gcs_server``. Linux (/proc) only; elsewhere []."""
    if not os.path.isdir("/proc"):
        return []
    pattern = our_sessions(pid)
    deadline = time.time() + wait_s
    while True:
        found = [pid for pid in _pids() if pid != os.getpid() and pattern.search(_cmdline(pid))]
        if not found or time.time() >= deadline:
            return found
        time.sleep(0.2)


def end_leftovers(wait_s: float = 5.0, pid: int | None = None) -> list[int]:
    """SIGKILL what ``leftover_processes`` finds (after giving Ray ``wait_s`` to end them itself)."""
    pids = leftover_processes(wait_s, pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if pids:
        log.debug("ended %d leftover process(es) of our Ray: %s", len(pids), pids)
    return pids


def _our_session_dirs(pid: int | None = None) -> list[str]:
    pattern, found = our_sessions(pid), []
    for root in {os.environ.get("RAY_TMPDIR") or "/tmp/ray", "/tmp/ray"}:
        try:
            found += [e.path for e in os.scandir(root) if e.is_dir() and pattern.fullmatch(e.name)]
        except OSError:
            continue
    return found


def raylet_failure(ignore: frozenset[str] = frozenset(), pid: int | None = None) -> str | None:
    """The fatal line of a raylet of ours that died (its ``raylet.err``), e.g. a timed-out agent start;
    sessions in ``ignore`` (earlier attempts) are not looked at."""
    sessions = [d for d in _our_session_dirs(pid) if d not in ignore]
    for session in sorted(sessions, key=os.path.getmtime, reverse=True)[:1]:
        try:
            with open(os.path.join(session, "logs", "raylet.err"), errors="replace") as handle:
                for line in handle:
                    found = re.match(r"\[[^\]]* [CF] \d+ \d+\] \(raylet\) (.*)", line)
                    if found:
                        text = found.group(1)
                        text = text.split("Check failed:")[-1] if "Check failed:" in text else text
                        return " ".join(text.split())[:300]
        except OSError:
            continue
    return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
