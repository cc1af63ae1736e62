"""Ray for one sweep: start a local instance (or join ``runner.address``), shut down what we started,
and describe the cluster for the results' provenance."""
from __future__ import annotations

import logging
import os
import re
import signal
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

from core.text import one_line
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
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    except AttributeError:  # pragma: no cover - another Ray version: _node_ip_address still asks for it
        pass


def init_kwargs(runner_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ray.init`` arguments of a sweep — the ONE place they are decided (other concerns, e.g. the
    console's log routing, add theirs here).

    Local Ray (``runner.address`` null): the node's address is the loopback, the dashboard is off unless
    ``runner.dashboard=true`` (then on 127.0.0.1 only), and the Prometheus metrics export has no fixed
    port. Joining a cluster (``runner.address``): only the address — the cluster keeps its own settings
    (securing one: README, "Securing a Ray cluster").
    """
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if runner_cfg.get("address"):
        kwargs["address"] = str(runner_cfg["address"])
        return kwargs
    kwargs.update(num_cpus=runner_cfg.get("num_cpus"), num_gpus=runner_cfg.get("num_gpus"),
                  include_dashboard=bool(runner_cfg.get("dashboard", False)), dashboard_host=LOOPBACK,
                  _node_ip_address=LOOPBACK)
    return kwargs


class RaySession:
    """``with RaySession(runner_cfg) as session:`` — ``session.ray`` is ready; a Ray we started is shut down.

    A local Ray start is retried (``runner.start_attempts``, default 3) with a start-up timeout of
    ``runner.start_timeout_s`` (default 180 s, Ray's own is 30 s, which a loaded machine misses);
    ``on_started`` runs after Ray is up (the stop handlers are re-installed there: Ray's driver installs
    native ones). On every exit path — including a signal or an error during start-up — the Ray this
    sweep started is shut down, and any of its processes left behind are ended (``leftover_processes``).
    """

    def __init__(self, runner_cfg: Mapping[str, Any], on_started: Callable[[], None] | None = None) -> None:
        self.runner_cfg = runner_cfg
        self.on_started = on_started
        self.started = False  # this sweep started the local Ray (so it owns it whole)
        self.session_dir: str | None = None
        self.ray: Any = None

    def __enter__(self) -> "RaySession":
        import ray

        self.ray = ray
        if ray.is_initialized():
            return self
        kwargs = init_kwargs(self.runner_cfg)
        where = self.runner_cfg.get("address") or "a local instance"
        local = not self.runner_cfg.get("address")
        attempts = max(1, int(self.runner_cfg.get("start_attempts", 3))) if local else 1
        timeout = float(self.runner_cfg.get("start_timeout_s", 180))
        if local:
            # The raylet's own waits (for the GCS, for the agents' port files) — Ray config read from the env.
            os.environ.setdefault("RAY_raylet_start_wait_time_s", str(int(timeout)))
            os.environ.setdefault("RAY_agent_register_timeout_ms", str(int(timeout * 1000)))
            _loopback_node(ray)
        for attempt in range(1, attempts + 1):
            try:
                with _patient_node_start(timeout if local else 0):
                    context = ray.init(**kwargs)
                break
            except BaseException as exc:  # a half-started Ray must not outlive this attempt
                self._shutdown()
                if isinstance(exc, (KeyboardInterrupt, GridError)) or not isinstance(exc, Exception):
                    raise
                cause = one_line(exc, 400)
                if attempt < attempts:
                    log.warning("Ray did not start (attempt %d of %d): %s; retrying", attempt, attempts, cause)
                    continue
                hint = (f" (tried {attempts}× with a {timeout:.0f} s start-up timeout; a loaded machine? raise "
                        "runner.start_timeout_s / runner.start_attempts)" if local else "")
                raise SweepError(f"could not start/join Ray ({where}): {cause}{hint}") from None
        self.started = True
        try:
            self.session_dir = (getattr(context, "address_info", None) or {}).get("session_dir")
        except Exception:  # pragma: no cover
            self.session_dir = None
        if self.on_started is not None:
            self.on_started()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.started:
            self._shutdown()

    def _shutdown(self) -> None:
        """Shut down the Ray this sweep started; end any of its processes that outlive that."""
        try:
            self.ray.shutdown()
        except BaseException:  # pragma: no cover - best effort at exit (a signal here must not stop clean-up)
            pass
        if not self.runner_cfg.get("address"):
            end_leftovers()


def our_sessions() -> "re.Pattern[str]":
    """Session dirs of the Ray instances THIS process started: Ray names them ``session_<date>_<time>_<n>_<pid>``
    after the driver's pid — so other Ray instances on the machine (other users, other sweeps) never match."""
    return re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{os.getpid()}(?![0-9])")


def leftover_processes(wait_s: float = 5.0, pattern: "re.Pattern[str] | None" = None) -> list[int]:
    """PIDs of processes of the Ray sessions this process started (their command line names the session
    dir) still alive after ``wait_s`` — e.g. ``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, or a
    half-started node's ``gcs_server``. Linux (/proc) only; elsewhere []."""
    if not os.path.isdir("/proc"):
        return []
    pattern = pattern or our_sessions()
    deadline = time.time() + wait_s
    while True:
        found = [pid for pid in _pids() if pid != os.getpid() and pattern.search(_cmdline(pid))]
        if not found or time.time() >= deadline:
            return found
        time.sleep(0.2)


def end_leftovers(wait_s: float = 5.0) -> list[int]:
    """SIGKILL what ``leftover_processes`` finds (after giving Ray ``wait_s`` to end them itself)."""
    pids = leftover_processes(wait_s)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if pids:
        log.debug("ended %d leftover process(es) of our Ray: %s", len(pids), pids)
    return pids


def _our_session_dirs() -> list[str]:
    pattern, found = our_sessions(), []
    for root in {os.environ.get("RAY_TMPDIR") or "/tmp/ray", "/tmp/ray"}:
        try:
            found += [e.path for e in os.scandir(root) if e.is_dir() and pattern.fullmatch(e.name)]
        except OSError:
            continue
    return found


def raylet_failure(ignore: frozenset[str] = frozenset()) -> str | None:
    """The fatal line of a raylet of ours that died (its ``raylet.err``), e.g. a timed-out agent start;
    sessions in ``ignore`` (earlier attempts) are not looked at."""
    sessions = [d for d in _our_session_dirs() if d not in ignore]
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


@contextmanager
def _patient_node_start(timeout_s: float) -> Iterator[None]:
    """Let a local Ray node take up to ``timeout_s`` to register at start-up.

    Ray's ``Node`` waits a fixed 30 s for its raylet to appear in the GCS, polling
    ``ray._private.services.get_node``; on a loaded 2-core machine that is often too short. Inside
    this block that poll itself waits (0.5 s steps) up to ``timeout_s``. Without that private function
    (another Ray version) nothing changes: the bounded retries remain.
    """
    try:
        from ray._private import services
    except ImportError:  # pragma: no cover
        services = None
    original = getattr(services, "get_node", None) if services is not None else None
    if not timeout_s or original is None:
        yield
        return
    deadline = time.monotonic() + timeout_s

    def patient_get_node(*args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                failure = raylet_failure()
                if failure:  # the raylet died: waiting longer cannot help
                    raise RuntimeError(f"the raylet died during start-up: {failure}") from None
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    services.get_node = patient_get_node
    params_cls = _fixed_agent_ports()
    try:
        yield
    finally:
        services.get_node = original
        if params_cls is not None:
            params_cls.update_pre_selected_port = params_cls._kvp_original_update
            del params_cls._kvp_original_update


#: The agents' ports a local node would otherwise choose at random and announce through port files —
#: which its raylet waits for only ~15 s, then dies (seen on a loaded 2-core machine).
_AGENT_PORTS = ("metrics_agent_port", "dashboard_agent_listen_port", "runtime_env_agent_port", "metrics_export_port")


def _free_loopback_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _fixed_agent_ports() -> Any:
    """Give a starting local node fixed (free, loopback) agent ports, so its raylet need not wait for the
    agents' port files. Private Ray API: without it, nothing changes."""
    try:
        from ray._private.parameter import RayParams
    except ImportError:  # pragma: no cover
        return None
    original = getattr(RayParams, "update_pre_selected_port", None)
    if original is None or hasattr(RayParams, "_kvp_original_update"):
        return None

    def update_pre_selected_port(self: Any) -> Any:
        for name in _AGENT_PORTS:
            if hasattr(self, name) and not getattr(self, name):
                setattr(self, name, _free_loopback_port())
        return original(self)

    RayParams._kvp_original_update = original
    RayParams.update_pre_selected_port = update_pre_selected_port
    return RayParams


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
