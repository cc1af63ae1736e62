"""The actors: one long-lived Ray actor per (slot, framework), and the driver's record of each.

Over 400 lines on purpose: the actor body and the driver's record of it change together (placement, cold start, crash dumps).

``CellWorker`` is the body of an actor: it runs cells of one framework on one slot, keeping
adapters warm, so imports and compilation are paid once per actor. Its environment
(``KERAS_BACKEND``, TF memory growth, JAX no-preallocation, thread counts) is set through
``runtime_env`` before any import (``actor_env``). The actors of one slot live in the slot's
placement-group bundle (``runner.cluster.slots``) and share it (each asks ``1/F`` of its GPU and CPUs), so
both frameworks of a GPU slot run on the same physical GPU by construction.

``ActorPool`` reserves the bundles, starts the actors in them, records where each runs (node, IP,
GPU id and UUID, the code version it imported), re-probes one that Ray is restarting after a death,
adds the slots of a node that joined mid-sweep, retires the slots of a node that was lost, and
stops them all.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pathlib import Path

from core.arms import arm_of
from core.text import one_line
from runner.cell.identity import cell_label
from runner.console.logs import log_name
from runner.errors import SweepError
from runner.cluster.slots import Slot

log = logging.getLogger("runner.sweep")

#: How many times a restarting actor is asked where it runs (every 0.5 s) before it counts as dead.
MAX_PROBES = 600


def actor_env(framework_cfg: Mapping[str, Any], parity_cfg: Mapping[str, Any], kind: str) -> dict[str, str]:
    """Environment of a framework's actor: read by the frameworks at import, so it is set at process start."""
    env = {
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        # Ray starts workers at niceness +15 (`worker_niceness`), read by the worker process at start.
        # The actors run the timed cells: at a lower priority than the driver and everything else on
        # the node they would lose CPU to them and report it as framework time. 0 = normal priority
        # (what Ray's own job supervisor sets for the same reason); works on any cluster node.
        "RAY_worker_niceness": "0",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # TF would otherwise grab all GPU memory at start
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # JAX likewise (75 % by default)
        "TF_CPP_MIN_LOG_LEVEL": "1",
        "PYTHONUNBUFFERED": "1",
    }
    name = str(framework_cfg.get("name"))
    if name.startswith("keras"):
        env["KERAS_BACKEND"] = str(framework_cfg.get("backend"))
    threads = parity_cfg.get("cpu_threads")
    if threads:
        # Ray sets OMP_NUM_THREADS to the actor's (fractional → 1) CPU request; parity says otherwise.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            env[var] = str(int(threads))
    if kind == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU cell on a GPU node must not touch the GPUs
    return env


def to_log_file_only(level: int, message: str) -> None:
    """A record for the sweep log (the root logger's file handlers) that the console does not show."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    handlers += [h for h in log.handlers if isinstance(h, logging.FileHandler)]
    for handler in handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


def _measure_cold_start(framework: str, cold_start: Mapping[str, Any], adapter_cache: dict) -> None:
    """Time the framework's import + runtime set-up (``get_adapter``) in this fresh actor process, before
    anything else is imported; the adapter is kept for the cells, the figure goes to the first cell that
    uses it (``runner.cell.run.COLD_START_KEY``)."""
    from core.config import ParityConfig, check_node
    from frameworks.base import get_adapter
    from runner.cell.run import COLD_START_KEY

    try:
        parity = check_node(ParityConfig, cold_start["parity"], "parity")
        device = str(cold_start["device"])
        t0 = time.perf_counter()
        adapter = get_adapter(framework, parity, device)
        seconds = time.perf_counter() - t0
    except Exception as exc:  # the cells will import it themselves (and say why there is no cold figure)
        adapter_cache[COLD_START_KEY] = {"key": None, "seconds": None,
                                       "note": f"cold-start probe failed: {one_line(exc, 200)}"}
        return
    key = (framework, parity, device)
    adapter_cache[key] = adapter
    adapter_cache[COLD_START_KEY] = {"key": key, "seconds": seconds,
                                   "note": "cold start: measured in a fresh actor process before anything else"}


@functools.lru_cache(maxsize=None)
def _gpu_uuids() -> dict[str, str]:
    """``nvidia-smi``'s GPU index → UUID on this node; empty without ``nvidia-smi`` (fake GPUs, CPU nodes)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(",", 1) for line in out.splitlines() if "," in line)
    return {i.strip(): u.strip() for i, u in pairs}


def gpu_uuid(cuda_visible_devices: str | None) -> str | None:
    """The UUID of the (first) GPU this process sees, or ``None`` where it cannot be known without error."""
    first = (cuda_visible_devices or "").split(",")[0].strip()
    if not first:
        return None
    if first.startswith(("GPU-", "MIG-")):
        return first
    return _gpu_uuids().get(first)


def _where() -> dict[str, Any]:
    """Where this actor runs and what code it imported (read in the actor, not on the driver)."""
    import ray
    from runner.cell import provenance

    gpu_ids = []
    for g in ray.get_gpu_ids():
        try:
            gpu_ids.append(int(g))
        except (TypeError, ValueError):
            pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        node_ip = ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover - provenance never crashes a cell
        node_ip = None
    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
            "node_ip": node_ip, "gpu_ids": gpu_ids, "cuda_visible_devices": visible,
            "gpu_uuid": gpu_uuid(visible) if gpu_ids else None, "git_sha": provenance.git_sha()}


def data_problems(data_cfgs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What stops this node from preparing the sweep's data: a missing ``data.path``, an unwritable
    ``data.cache_dir`` (each node decodes and caches its own copy; nothing is shipped from the driver)."""
    problems = []
    for cfg in data_cfgs:
        name = cfg.get("name")
        path = cfg.get("path")
        if isinstance(path, str) and path and not os.path.exists(path):
            problems.append(f"data {name}: data.path {path} does not exist")
        cache = cfg.get("cache_dir")
        if isinstance(cache, str) and cache:
            try:
                os.makedirs(cache, exist_ok=True)
                ok = os.access(cache, os.W_OK | os.X_OK)
            except OSError as exc:
                ok, cache = False, f"{cache} ({exc.strerror})"
            if not ok:
                problems.append(f"data {name}: data.cache_dir {cache} is not writable")
    return sorted(set(problems))


class CellWorker:
    """The body of an actor: runs cells of one framework on one slot, keeping adapters warm."""

    def __init__(self, framework: str, slot_key: str, cold_start: dict[str, Any] | None = None,
                 log_file: str | None = None) -> None:
        from runner.cluster import crashes

        self.framework = framework
        self.slot_key = slot_key
        self.adapter_cache: dict = {}
        self.log_file = None
        if log_file:  # quiet console: everything this process writes (C++ included) goes to the sweep's logs
            from runner.console.logs import redirect_process_output

            self.log_file = redirect_process_output(log_file)
        # A native crash (SIGSEGV, SIGABRT, …) dumps to a node-local file, not the console; the restarted
        # actor reports it (where()) and the driver puts it in the sweep log and the cell's row.
        self.crash_dump = crashes.enable_crash_dump()
        if cold_start is not None:  # first, while this process has imported no framework: a cold start
            _measure_cold_start(framework, cold_start, self.adapter_cache)
        import runner.cell.run  # noqa: F401  (its metrics stack loads while the actor starts, not in a cell's time)

    def where(self, data_cfgs: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        from runner.cluster import crashes

        return dict(_where(), crashes=crashes.collect_crashes(self.crash_dump), data_problems=data_problems(data_cfgs))

    def read_log(self) -> str:
        """This actor's log file (for a driver on another node)."""
        try:
            return self.log_file.read_text(errors="replace") if self.log_file else ""
        except OSError:
            return ""

    def run(self, cell: dict[str, Any], sweep_id: str, context: dict[str, Any]) -> dict[str, Any]:
        from runner.cell.run import run_cell

        here = _where()
        if self.log_file:
            try:
                label = cell_label(cell)
            except Exception:  # a malformed cell: run_cell turns it into a failed row with the reason
                label = "(malformed cell config)"
            print(f"=== cell {label} ===", flush=True)
        # The code version is the one this actor imported (its node's image/checkout), not the driver's.
        ctx = dict(context, node_id=here["node_id"], host=here["host"],
                   gpu_index=here["gpu_ids"][0] if here["gpu_ids"] else None, gpu_uuid=here["gpu_uuid"],
                   git_sha=here["git_sha"])
        t0 = time.time()
        result = run_cell(cell, sweep_id=sweep_id, context=ctx, adapter_cache=self.adapter_cache)
        return {"cell_id": result.cell_id, "status": result.status, "error": result.error,
                "tables": result.tables, "where": here, "seconds": time.time() - t0}

    def gate(self, model_cfg: dict, data_cfg: dict, parity_cfg: dict, seed: int, device: str) -> dict[str, Any]:
        from frameworks.parity import gate_outputs
        from runner.data import prepare

        ds = prepare(data_cfg, seed)  # the real class count and image size (the cells need this cache anyway)
        return gate_outputs(self.framework, model_cfg, int(ds.num_classes), int(ds.image_size), parity_cfg,
                            seed=seed, device=device)


@dataclass(eq=False)
class ActorRecord:
    """The driver's record of one actor: its Ray handle, framework, slot and lifecycle state."""

    handle: Any  # Ray's actor handle
    framework: str  # the arm it runs (core.arms): a framework name, or keras_jax@keras==3.14.0
    slot: Slot
    where: dict[str, Any] = field(default_factory=dict)
    state: str = "starting"  # starting | ready | probing (restarting after a death) | dead | unusable
    probe_failures: int = 0
    restarts: int = 0  # deaths Ray restarted it after (bounded by runner.max_actor_restarts)
    pending_causes: list[dict[str, Any]] = field(default_factory=list)  # deaths whose signal is not known yet

    @property
    def label(self) -> str:
        return f"{self.framework}@{self.slot.label}"

    @property
    def usable(self) -> bool:
        """Can run a cell now or soon."""
        return self.state in ("starting", "ready", "probing")


class ActorPool:
    """Reserves one bundle per slot, starts one actor per (slot, framework) in it, tracks them."""

    def __init__(self, ray, slots: Sequence[Slot], runner_cfg: Mapping[str, Any], log_dir: Path | None = None,
                 arm_envs: Mapping[str, Any] | None = None) -> None:
        self.ray = ray
        #: arm → its environment (runner.planning.arms.ArmEnv), built per node before its actors start
        self.arm_envs = dict(arm_envs or {})
        self.pythons: dict[tuple[str, str], str] = {}  # (arm, node id) → the interpreter of its environment there
        self.log_dir = log_dir  # quiet console: each actor's output goes to <log_dir>/<framework>@<slot>.log
        self.slots = list(slots)
        self.runner_cfg = runner_cfg
        self.actors: list[ActorRecord] = []
        self.groups: dict[str, Any] = {}  # slot key → its placement group
        self.lost: dict[str, str] = {}  # node id → why its slots were retired
        self.probes: dict[Any, ActorRecord] = {}  # ObjectRef of where() → actor
        self.reprobe: dict[ActorRecord, float] = {}  # restarting actor → when to ask again
        self._cells: Sequence[Mapping[str, Any]] = ()
        self._parity: Mapping[str, Any] = {}
        self._data: list[dict[str, Any]] = []  # the distinct data configs, checked on every node

    def start(self, cells: Sequence[Mapping[str, Any]], parity_cfg: Mapping[str, Any]) -> None:
        """A bundle per slot that has a cell, one actor per framework in it; waits until all are placed."""
        self._cells, self._parity = cells, parity_cfg
        for cell in cells:
            if cell["data"] not in self._data:
                self._data.append(cell["data"])
        slots, self.slots = self.slots, []
        new = self._reserve(slots)
        self._wait_placed(new)

    def add_slots(self, slots: Sequence[Slot]) -> list[Slot]:
        """Slots of nodes that joined mid-sweep: reserved and started without waiting; usable once placed."""
        known = {s.key for s in self.slots}
        fresh = [s for s in slots if s.key not in known and s.node_id not in self.lost]
        fresh = [s for s in fresh if any(s.accepts(c["device"]) for c in self._cells)]
        for actor in self._reserve(fresh):
            self.probe(actor)
        if fresh:
            log.info("node joined: new slot(s) %s", ", ".join(s.label for s in fresh))
        return fresh

    def _reserve(self, slots: Sequence[Slot]) -> list[ActorRecord]:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        remote_cls = self.ray.remote(CellWorker)
        framework_cfgs = {arm_of(c["framework"]): c["framework"] for c in self._cells}
        unbuilt = self._build_arm_envs(slots, framework_cfgs)
        new: list[ActorRecord] = []
        for slot in slots:
            names = sorted({arm_of(c["framework"]) for c in self._cells if slot.accepts(c["device"])})
            names = [n for n in names if (n, slot.node_id) not in unbuilt]
            if not names:
                continue
            # One bundle per slot, pinned to its node (a hard label constraint, not a hint): Ray picks
            # the bundle's GPU when it reserves it, and every actor of the slot shares that GPU.
            pg = placement_group([slot.bundle()], strategy="STRICT_PACK",
                                 bundle_label_selector=[{"ray.io/node-id": slot.node_id}])
            self.groups[slot.key] = pg
            self.slots.append(slot)
            share = math.floor(1e4 / len(names)) / 1e4  # Ray's resource granularity is 1e-4
            for name in names:
                runtime_env: dict[str, Any] = {"env_vars": actor_env(framework_cfgs[name], self._parity, slot.kind)}
                if name in self.arm_envs:  # an arm with pins: its node's environment (runner.cluster.arm_envs)
                    runtime_env["py_executable"] = self.pythons[(name, slot.node_id)]
                options: dict[str, Any] = {
                    "max_restarts": int(self.runner_cfg.get("max_actor_restarts", 10)), "max_task_retries": 0,
                    "runtime_env": runtime_env,
                    "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0),
                    "num_gpus": share if slot.kind == "gpu" else 0,
                    "num_cpus": math.floor(slot.cpus * share * 1e4) / 1e4,
                }
                cold = {"parity": self._parity, "device": "gpu" if slot.kind == "gpu" else "cpu"}
                log_file = str(self.log_dir / log_name(f"{name}@{slot.label}")) if self.log_dir else None
                handle = remote_cls.options(**options).remote(framework_cfgs[name]["name"], slot.key, cold, log_file)
                record = ActorRecord(handle, name, slot)
                self.actors.append(record)
                new.append(record)
        return new

    def _build_arm_envs(self, slots: Sequence[Slot], framework_cfgs: Mapping[str, Any]) -> set[tuple[str, str]]:
        """Build the environments of the arms with pins on the nodes of ``slots`` (once per node; cached).

        At the start of a sweep a failure stops it (``SweepError`` naming the arm, the pin, the node and
        uv's cause), before any cell runs; for a node that joins later it is logged and that node runs
        none of the arm's cells. Returns the (arm, node) pairs left without an environment."""
        from runner.cluster import arm_envs

        unresolved = sorted(a for a, cfg in framework_cfgs.items() if cfg.get("packages") and a not in self.arm_envs)
        if unresolved:  # never run pinned cells in the base environment under the pins' name
            raise SweepError(f"arms {unresolved} have no environment: their pins were not resolved "
                             "(runner.planning.checks.check_sweep resolves them before Ray starts)")
        wanted = {a: self.arm_envs[a] for a in framework_cfgs if a in self.arm_envs}
        nodes = {s.node_id: f"{s.host} ({s.node_ip}, id {s.node_id[:12]})" for s in slots
                 if any(s.accepts(c["device"]) and arm_of(c["framework"]) in wanted for c in self._cells)}
        todo = {a: e for a, e in wanted.items() if any((a, n) not in self.pythons for n in nodes)}
        if not todo or not nodes:
            return set()
        t0 = time.time()
        timeout = float(self.runner_cfg.get("arm_env_timeout_s", 900))
        built, failed = arm_envs.prepare(self.ray, todo, nodes, timeout)
        self.pythons.update(built)
        if failed and not self.actors:  # the sweep's start: stop before any cell runs
            raise SweepError(arm_envs.failure_message(failed, todo, nodes))
        for line in arm_envs.failure_message(failed, todo, nodes).split("; ") if failed else []:
            log.error("%s — that node runs none of the arm's cells", line)
        if built:
            ready_nodes = {n for _, n in built}
            log.info("arm environments ready: %s (%.1f s)", ", ".join(sorted(f"{a} on {nodes[n]}" for a, n in built)),
                     time.time() - t0, extra={"console": f"environments ready: {', '.join(sorted({a for a, _ in built}))} "
                                                         f"on {len(ready_nodes)} node{'s' if len(ready_nodes) != 1 else ''} "
                                                         f"({time.time() - t0:.0f} s)"})
        return set(failed)

    def _wait_placed(self, actors: Sequence[ActorRecord]) -> None:
        timeout = float(self.runner_cfg.get("actor_start_timeout_s", 600))
        refs = {a.handle.where.remote(self._data): a for a in actors}
        ready, pending = self.ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if pending:
            stuck = ", ".join(f"{refs[r].label} (bundle {refs[r].slot.bundle()})" for r in pending)
            raise SweepError(f"actors not placed within {timeout:.0f}s: {stuck} (cluster resources: "
                             f"{self.ray.available_resources()}); raise runner.actor_start_timeout_s or free resources")
        for ref in ready:
            self.placed(refs[ref], ref)
        unreachable = {a.slot.node_id: a for a in self.actors if a.where.get("data_problems")}
        if unreachable:
            raise SweepError("the data is not reachable on every node (each node prepares it from its own "
                             "data.path and data.cache_dir): " + "; ".join(
                                 f"node {a.where.get('host')} ({a.where.get('node_ip')}, id {node[:12]}): "
                                 + ", ".join(a.where["data_problems"]) for node, a in unreachable.items())
                             + " — put the data at that path on every node (or in the image), or set data.path / "
                             "KVP_CACHE_DIR to paths that exist everywhere")
        alive = [a for a in self.actors if a.state == "ready"]
        if not alive:
            raise SweepError("no actor could start: " + "; ".join(a.where.get("error", "?") for a in self.actors))
        slots = {a.slot.key for a in alive}
        log.info("actors ready: %s", ", ".join(f"{a.label} (pid {a.where.get('pid')}"
                                                 + (f", CUDA_VISIBLE_DEVICES={a.where.get('cuda_visible_devices')}"
                                                    if a.slot.kind == "gpu" else "") + ")" for a in alive),
                 extra={"console": f"actors ready: {', '.join(sorted({a.framework for a in alive}))} on "
                                   f"{len(slots)} slot{'s' if len(slots) != 1 else ''}"})

    def placed(self, actor: ActorRecord, ref) -> None:
        """Record where an actor runs (after start or restart)."""
        if actor.state == "dead":  # its node was lost meanwhile
            return
        try:
            actor.where = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError as exc:
            actor.probe_failures += 1  # restarting: ask again shortly, within reason
            if actor.probe_failures <= MAX_PROBES:
                actor.state = "probing"
                self.reprobe[actor] = time.time() + 0.5
                return
            self._dead(actor, f"{actor.label} did not come back: {one_line(exc, 100_000)}")
            return
        except self.ray.exceptions.RayError as exc:
            self._dead(actor, f"{actor.label} is gone: {one_line(exc, 100_000)}")
            return
        actor.probe_failures = 0
        actor.state = "ready"
        self._record_crashes(actor, actor.where.pop("crashes", None) or [])
        if actor.where.get("data_problems"):  # at start the sweep stops on it (_wait_placed); later: skip the node
            log.error("actor %s not used: the data is not reachable on its node: %s", actor.label,
                      ", ".join(actor.where["data_problems"]))
            actor.state = "unusable"
            return
        if actor.where.get("node_id") != actor.slot.node_id:  # the bundle's label pins the node: a Ray bug
            log.warning("actor %s runs on node %s, not its slot's node; not used", actor.label,
                        actor.where.get("node_id"))
            actor.state = "unusable"

    def _record_crashes(self, actor: ActorRecord, crashes: list[dict[str, Any]]) -> None:
        """A restarted actor's report of its predecessors' native crashes: the dump to the sweep log
        only (not the console), the signal to the cells' ``retry_causes``."""
        for crash in crashes:
            if actor.pending_causes:
                actor.pending_causes.pop(0)["signal"] = crash.get("signal")
            to_log_file_only(logging.ERROR, f"actor {actor.label} (pid {crash.get('pid')}) crashed with "
                             f"{crash.get('signal') or 'a fatal signal'}; its dump:\n{crash.get('dump', '').rstrip()}")
            log.warning("actor %s (pid %s) crashed with %s; the crash dump is in the sweep log", actor.label,
                        crash.get("pid"), crash.get("signal") or "a fatal signal")
        actor.pending_causes.clear()  # no dump for the rest: kill -9 / OOM (signal unknown)

    def _dead(self, actor: ActorRecord, why: str) -> None:
        actor.state = "dead"
        actor.where = dict(actor.where, error=why)
        log.error("actor %s", why)

    def node_lost(self, node_id: str, why: str) -> list[ActorRecord]:
        """Retire the slots of a node that left the cluster; returns its actors (now dead)."""
        self.lost[node_id] = why
        gone = [a for a in self.actors if a.slot.node_id == node_id and a.state != "dead"]
        for actor in gone:
            actor.state = "dead"
            actor.where = dict(actor.where, error=why)
            self.reprobe.pop(actor, None)
            try:
                self.ray.kill(actor.handle, no_restart=True)
            except Exception:
                pass
        for slot in [s for s in self.slots if s.node_id == node_id]:
            self._remove_group(slot.key)
        return gone

    def _remove_group(self, key: str) -> None:
        pg = self.groups.pop(key, None)
        if pg is None:
            return
        try:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(pg)
        except Exception:  # the cluster is going away too, or the group already is
            pass

    def probe(self, actor: ActorRecord) -> None:
        """Ask a (possibly restarting) actor where it runs; no cell goes to it until it answers."""
        if actor.state == "dead":
            return
        actor.state = "probing"
        self.probes[actor.handle.where.remote(self._data)] = actor

    def submit_due_probes(self) -> None:
        now = time.time()
        for actor, due in list(self.reprobe.items()):
            if due <= now:
                del self.reprobe[actor]
                self.probe(actor)

    def stop(self, kill: bool) -> None:
        """Stop the actors and release their bundles (on a shared cluster they must not outlive the sweep).

        A local Ray that this sweep started is shut down whole instead (``kill=False``).
        """
        if kill:
            for actor in self.actors:
                try:
                    self.ray.kill(actor.handle, no_restart=True)
                except Exception:
                    pass
            for key in list(self.groups):
                self._remove_group(key)
