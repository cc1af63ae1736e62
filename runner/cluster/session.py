"""Ray for one sweep: start a local instance (or join ``runner.address``), shut down what we started,
and describe the cluster for the results' provenance."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Sequence

from core.text import one_line
from runner.console import logs as console
from runner.errors import GridError
from runner.cluster.local_head import TOKEN_VARS, LocalHead
from runner.errors import SweepError
from runner.cluster.slots import Slot

# Under `uv run`, Ray (≥ 2.43) would otherwise rebuild the uv environment for every worker: upload the
# working directory (outputs and dataset caches included) and create a fresh venv per worker — minutes
# of start-up on each node. Workers use the driver's interpreter instead; a cluster runs one image
# everywhere, so that interpreter exists on every node. Ray reads it when it starts: the runner
# imports ray only inside functions, after this line has run.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

log = logging.getLogger("runner.sweep")


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


def _join_with_token(head_env: Mapping[str, str]) -> None:
    """This driver sends the local head's token: its auth variables become the head's (restored by
    ``_undo_loopback_node``), and Ray's cached token is dropped (an earlier sweep of this process had
    another)."""
    for var in ("RAY_AUTH_MODE", *TOKEN_VARS):
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
    from runner.cell import provenance

    nodes = [{"node_id": n["NodeID"], "host": n.get("NodeManagerHostname"), "address": n.get("NodeManagerAddress"),
              "resources": n.get("Resources", {})} for n in ray.nodes() if n.get("Alive", True)]
    return {"git_sha": provenance.git_sha(), "driver_host": provenance.host_name(),
            "driver_versions": provenance.library_versions(), "ray_version": ray.__version__,
            "hosts": sorted({n["host"] for n in nodes if n["host"]}), "nodes": nodes,
            "cluster_resources": ray.cluster_resources(), "devices": list(devices),
            "slots": [{"slot": s.label, "kind": s.kind, "gpu_index": s.index if s.kind == "gpu" else None,
                       "accelerator_type": s.accelerator_type, "concurrency": s.concurrency} for s in slots]}
