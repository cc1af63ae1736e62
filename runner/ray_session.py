"""Ray for one sweep: start a local instance (or join ``runner.address``), shut down what we started,
and describe the cluster for the results' provenance."""
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
from typing import Any, Callable, Mapping, Sequence

from core.text import one_line
from runner import console
from runner.grid import GridError
from runner.outcome import SweepError
from runner.slots import Slot

# Under `uv run`, Ray (≥ 2.43) would otherwise rebuild the uv environment for every worker: upload the
# working directory (outputs and dataset caches included) and create a fresh venv per worker — minutes
# of start-up on each node. Workers use the driver's interpreter instead; a cluster runs one image
# everywhere, so that interpreter exists on every node. Ray reads it when it starts: the runner
# imports ray only inside functions, after this line has run.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

log = logging.getLogger("runner.sweep")


#: Where a local Ray listens: the loopback only (nothing of a local sweep is reachable from the network).
LOOPBACK = "127.0.0.1"


def _loopback_node(ray: Any) -> None:
    """Make a local Ray's node address the loopback, so that its servers listen on 127.0.0.1 only.

    Ray picks the node address from the route to the outside unless cluster support is off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ``ray`` is imported — hence also the
    constant, for this already-importing process); with the loopback as node address its gRPC servers
    bind 127.0.0.1 instead of every interface. Ray's processes inherit the variable. Only for a Ray we
    start: joining ``runner.address`` keeps the cluster's own settings.
    """
    _SAVED.setdefault("env", os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"))
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        _SAVED.setdefault("constant", ray._private.ray_constants.ENABLE_RAY_CLUSTER)
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    except AttributeError:  # pragma: no cover - another Ray version
        pass


_SAVED: dict[str, Any] = {}


def _undo_loopback_node(ray: Any) -> None:
    """After the local Ray: this process may join a cluster next (its own address is needed then)."""
    if "env" in _SAVED:
        previous = _SAVED.pop("env")
        if previous is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = previous
    if "constant" in _SAVED:
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = _SAVED.pop("constant")
    for key in [k for k in _SAVED if k.startswith("auth:")]:
        previous, var = _SAVED.pop(key), key.split(":", 1)[1]
        if previous is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = previous


#: Where a user's own token for a local Ray would come from (then it is used as it is).
_TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _session_token(env: dict[str, str]) -> None:
    """Token auth for the local head: ``ray start --head`` (Ray >= 2.5x) enables it but, unlike
    ``ray.init``, creates no token — on a fresh machine (a new container) it exits with "no
    authentication token was found". The head gets a fresh random token of its own in its environment
    (its raylet and workers inherit it), never written to disk and never shared with another Ray; a
    token the user set (``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``) or ``RAY_AUTH_MODE=disabled`` is kept."""
    if env.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    env["RAY_AUTH_MODE"] = "token"
    if not any(env.get(var) for var in _TOKEN_VARS):
        import secrets

        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def _join_with_token(head_env: Mapping[str, str]) -> None:
    """This driver sends the local head's token: its auth variables become the head's (restored by
    ``_undo_loopback_node``), and Ray's cached token is dropped (an earlier sweep of this process had
    another)."""
    for var in ("RAY_AUTH_MODE", *_TOKEN_VARS):
        _SAVED.setdefault(f"auth:{var}", os.environ.get(var))
        if head_env.get(var) is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = head_env[var]
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")  # Ray's cached config re-reads RAY_AUTH_MODE (as ray.init does for its own head)
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - a Ray without token auth
        pass


def init_kwargs(runner_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ray.init`` arguments of the sweep's driver — the ONE place they are decided (other concerns,
    e.g. the console's log routing, add theirs here). The driver always joins an address: the cluster's
    (``runner.address``, whose own settings are kept — securing one: README) or the local head's that
    ``LocalHead`` started on the loopback (``LocalHead.command`` holds the local node's settings)."""
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    kwargs.update(console.ray_init_kwargs(runner_cfg))  # quiet console unless runner.verbose (runner.console)
    if runner_cfg.get("address"):
        kwargs["address"] = str(runner_cfg["address"])
    return kwargs


class RaySession:
    """``with RaySession(runner_cfg) as session:`` — ``session.ray`` is ready; a Ray we started is shut down.

    A local Ray (``LocalHead``) start is retried (``runner.start_attempts``, default 3) with a start-up
    timeout of ``runner.start_timeout_s`` (default 180 s); ``on_started`` runs after Ray is up (the stop
    handlers are re-installed there: Ray's driver installs native ones). On every exit path — including
    a signal or an error during start-up — the Ray this sweep started is stopped, and any of its
    processes left behind are ended (``leftover_processes``).
    """

    def __init__(self, runner_cfg: Mapping[str, Any], on_started: Callable[[], None] | None = None) -> None:
        self.runner_cfg = runner_cfg
        self.on_started = on_started
        self.started = False  # this sweep started the local Ray (so it owns it whole)
        self.head: LocalHead | None = None
        self.ray: Any = None

    def __enter__(self) -> "RaySession":
        import ray

        self.ray = ray
        if ray.is_initialized():
            return self
        if self.runner_cfg.get("address"):
            self._join(str(self.runner_cfg["address"]))
        else:
            self._start_local()
        self.started = True
        if self.on_started is not None:
            self.on_started()
        return self

    def _join(self, address: str) -> None:
        try:
            self.ray.init(**init_kwargs(self.runner_cfg))
        except (KeyboardInterrupt, GridError):
            raise
        except Exception as exc:
            raise SweepError(f"could not join Ray ({address}): {one_line(exc, 2000)}{auth_hint(exc)}") from None

    def _start_local(self) -> None:
        """A local head in its own process (``ray start --head --block``), then this driver joins it.

        Ray's in-process start can hang for good inside native code when its raylet dies at start-up
        (its agents not up within ~15 s on a loaded machine): no signal is handled, no timeout fires.
        A separate head process can be watched and, on failure or timeout, ended and started again.
        """
        attempts = max(1, int(self.runner_cfg.get("start_attempts", 3)))
        timeout = float(self.runner_cfg.get("start_timeout_s", 180))
        for attempt in range(1, attempts + 1):
            try:
                self.head = LocalHead(self.runner_cfg, timeout)
                self.head.start()
                _loopback_node(self.ray)
                _join_with_token(self.head.env)  # the head's token auth (Ray >= 2.5x): this driver sends it
                kwargs = dict(init_kwargs(self.runner_cfg), address=self.head.address)
                self.ray.init(**kwargs)
                return
            except BaseException as exc:  # a half-started Ray must not outlive this attempt
                self._shutdown()
                if isinstance(exc, (KeyboardInterrupt, GridError)) or not isinstance(exc, Exception):
                    raise
                cause = one_line(exc, 400)
                if attempt < attempts:
                    log.warning("Ray did not start (attempt %d of %d): %s; retrying", attempt, attempts, cause)
                    continue
                raise SweepError(f"could not start Ray (a local instance): {cause} (tried {attempts}× with a "
                                 f"{timeout:.0f} s start-up timeout; a loaded machine? raise "
                                 "runner.start_timeout_s / runner.start_attempts)") from None

    def __exit__(self, *exc_info: Any) -> None:
        if self.started:
            self._shutdown()

    def _shutdown(self) -> None:
        """Disconnect; stop the local head this sweep started and end anything of its session left behind."""
        try:
            self.ray.shutdown()
        except BaseException:  # pragma: no cover - best effort at exit (a signal here must not stop clean-up)
            pass
        head, self.head = self.head, None
        if head is not None:
            head.stop()
            _undo_loopback_node(self.ray)


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
        errors = [l for l in self.lines if "Error" in l or "error" in l or "failed" in l.lower()]
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
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


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


def auth_hint(exc: BaseException) -> str:
    """What to do when joining failed for want of the cluster's token: Ray ≥ 2.5x enables token
    authentication on ``ray start --head``, and a driver without the right token only says it could not
    connect (the "Unauthenticated" reason goes to Ray's own log lines, not the exception)."""
    text = str(exc).lower()
    if not any(w in text for w in ("failed to connect", "unauthenticated", "token", "auth", "timed out", "timeout")):
        return ""
    return (" — if the cluster uses token authentication (the default of `ray start --head`), set "
            "RAY_AUTH_MODE=token and the head's token (RAY_AUTH_TOKEN=<token>, or RAY_AUTH_TOKEN_PATH=<file>; "
            "on the head it is in ~/.ray/auth_token) before running")


def environment(ray, slots: Sequence[Slot], devices: Sequence[str]) -> dict[str, Any]:
    """Driver, cluster and slot facts recorded in the results' metadata."""
    from runner import provenance

    nodes = [{"node_id": n["NodeID"], "host": n.get("NodeManagerHostname"), "address": n.get("NodeManagerAddress"),
              "resources": n.get("Resources", {})} for n in ray.nodes() if n.get("Alive", True)]
    return {"git_sha": provenance.git_sha(), "driver_host": provenance.host_name(),
            "driver_versions": provenance.library_versions(), "ray_version": ray.__version__,
            "hosts": sorted({n["host"] for n in nodes if n["host"]}), "nodes": nodes,
            "cluster_resources": ray.cluster_resources(), "devices": list(devices),
            "slots": [{"slot": s.label, "kind": s.kind, "gpu_index": s.index if s.kind == "gpu" else None,
                       "accelerator_type": s.accelerator_type, "concurrency": s.concurrency} for s in slots]}
