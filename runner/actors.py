"""The actors: one long-lived Ray actor per (slot, framework), and the driver's record of each.

``CellWorker`` is the body of an actor: it runs cells of one framework on one slot, keeping
adapters warm, so imports and compilation are paid once per actor. Its environment
(``KERAS_BACKEND``, TF memory growth, JAX no-preallocation, thread counts) is set through
``runtime_env`` before any import (``actor_env``). The actors of one slot share the slot's
resources (each asks ``1/F`` of its GPU or CPUs).

``ActorPool`` starts them, records where each really runs (following Ray if it packed one onto
another GPU), re-probes one that Ray is restarting after a death, and stops them.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pathlib import Path

from core.text import one_line
from runner.console import log_name
from runner.outcome import SweepError
from runner.slots import Slot

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
    uses it (``runner.cell.COLD_START_KEY``)."""
    from frameworks.base import ParitySettings, get_adapter

    try:
        parity = ParitySettings.from_config(cold_start["parity"])
        device = str(cold_start["device"])
        t0 = time.perf_counter()
        adapter = get_adapter(framework, parity, device)
        seconds = time.perf_counter() - t0
    except Exception as exc:  # the cells will import it themselves (and say why there is no cold figure)
        adapter_cache["cold_start"] = {"key": None, "seconds": None,
                                       "note": f"cold-start probe failed: {one_line(exc, 200)}"}
        return
    key = (framework, parity, device)
    adapter_cache[key] = adapter
    adapter_cache["cold_start"] = {"key": key, "seconds": seconds,
                                   "note": "cold start: measured in a fresh actor process before anything else"}


def _cell_words(cell: Mapping[str, Any]) -> str:
    from runner.cell import cell_id

    try:
        return (f"{cell_id(dict(cell))} ({cell['framework']['name']} seed={cell['seed']} "
                f"batch={cell['train']['batch_size']} device={cell['device']})")
    except Exception:
        return ""


def _where() -> dict[str, Any]:
    import ray

    gpu_ids = []
    for g in ray.get_gpu_ids():
        try:
            gpu_ids.append(int(g))
        except (TypeError, ValueError):
            pass
    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
            "gpu_ids": gpu_ids, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


class CellWorker:
    """The body of an actor: runs cells of one framework on one slot, keeping adapters warm."""

    def __init__(self, framework: str, slot_key: str, cold_start: dict[str, Any] | None = None,
                 log_file: str | None = None) -> None:
        from runner import crashes

        self.framework = framework
        self.slot_key = slot_key
        self.adapter_cache: dict = {}
        self.log_file = None
        if log_file:  # quiet console: everything this process writes (C++ included) goes to the sweep's logs
            from runner.console import redirect_process_output

            self.log_file = redirect_process_output(log_file)
        # A native crash (SIGSEGV, SIGABRT, …) dumps to a node-local file, not the console; the restarted
        # actor reports it (where()) and the driver puts it in the sweep log and the cell's row.
        self.crash_dump = crashes.enable_crash_dump()
        if cold_start is not None:  # first, while this process has imported no framework: a cold start
            _measure_cold_start(framework, cold_start, self.adapter_cache)
        import runner.cell  # noqa: F401  (its metrics stack loads while the actor starts, not in a cell's time)

    def where(self) -> dict[str, Any]:
        from runner import crashes

        return dict(_where(), crashes=crashes.collect_crashes(self.crash_dump))

    def read_log(self) -> str:
        """This actor's log file (for a driver on another node)."""
        try:
            return self.log_file.read_text(errors="replace") if self.log_file else ""
        except OSError:
            return ""

    def run(self, cell: dict[str, Any], sweep_id: str, context: dict[str, Any]) -> dict[str, Any]:
        from runner.cell import run_cell

        here = _where()
        if self.log_file:
            print(f"=== cell {_cell_words(cell)} ===", flush=True)
        ctx = dict(context, node_id=here["node_id"], host=here["host"],
                   gpu_index=here["gpu_ids"][0] if here["gpu_ids"] else None)
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
    framework: str
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
    """Starts one actor per (slot, framework), tracks where each runs, re-probes restarting ones."""

    def __init__(self, ray, slots: Sequence[Slot], runner_cfg: Mapping[str, Any], log_dir: Path | None = None) -> None:
        self.ray = ray
        self.log_dir = log_dir  # quiet console: each actor's output goes to <log_dir>/<framework>@<slot>.log
        self.slots = list(slots)
        self.runner_cfg = runner_cfg
        self.actors: list[ActorRecord] = []
        self.probes: dict[Any, ActorRecord] = {}  # ObjectRef of where() → actor
        self.reprobe: dict[ActorRecord, float] = {}  # restarting actor → when to ask again

    def start(self, cells: Sequence[Mapping[str, Any]], parity_cfg: Mapping[str, Any]) -> None:
        """One actor per framework per slot that has a cell for it; waits until all are placed."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote_cls = self.ray.remote(CellWorker)
        framework_cfgs = {c["framework"]["name"]: c["framework"] for c in cells}
        # Slot-major creation order: with fractional GPU requests, Ray fills one GPU before the next,
        # so each GPU ends up with one actor per framework (checked below against where()).
        for slot in self.slots:
            names = sorted({c["framework"]["name"] for c in cells if slot.accepts(c["device"])})
            if not names:
                continue
            share = math.floor(1e4 / len(names)) / 1e4  # Ray's resource granularity is 1e-4
            for name in names:
                options: dict[str, Any] = {
                    "max_restarts": int(self.runner_cfg.get("max_actor_restarts", 10)), "max_task_retries": 0,
                    "runtime_env": {"env_vars": actor_env(framework_cfgs[name], parity_cfg, slot.kind)},
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(slot.node_id, soft=False),
                }
                if slot.kind == "gpu":
                    options.update(num_gpus=share, num_cpus=0)
                else:
                    options.update(num_gpus=0, num_cpus=math.floor(slot.cpus * share * 1e4) / 1e4)
                cold = {"parity": parity_cfg, "device": "gpu" if slot.kind == "gpu" else "cpu"}
                log_file = str(self.log_dir / log_name(f"{name}@{slot.label}")) if self.log_dir else None
                handle = remote_cls.options(**options).remote(name, slot.key, cold, log_file)
                self.actors.append(ActorRecord(handle, name, slot))
        self._wait_placed()

    def _wait_placed(self) -> None:
        timeout = float(self.runner_cfg.get("actor_start_timeout_s", 600))
        refs = {a.handle.where.remote(): a for a in self.actors}
        ready, pending = self.ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if pending:
            stuck = ", ".join(refs[r].label for r in pending)
            raise SweepError(f"actors not placed within {timeout:.0f}s: {stuck} (cluster resources: "
                             f"{self.ray.available_resources()}); raise runner.actor_start_timeout_s or free resources")
        for ref in ready:
            self.placed(refs[ref], ref)
        alive = [a for a in self.actors if a.state == "ready"]
        if not alive:
            raise SweepError("no actor could start: " + "; ".join(a.where.get("error", "?") for a in self.actors))
        log.info("actors ready: %s", ", ".join(f"{a.label} (pid {a.where.get('pid')}"
                                                 + (f", CUDA_VISIBLE_DEVICES={a.where.get('cuda_visible_devices')}"
                                                    if a.slot.kind == "gpu" else "") + ")" for a in alive))

    def placed(self, actor: ActorRecord, ref) -> None:
        """Record where an actor runs (after start or restart); follow it if Ray put it on another GPU."""
        try:
            actor.where = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError as exc:
            actor.probe_failures += 1  # restarting: ask again shortly, within reason
            if actor.probe_failures <= MAX_PROBES:
                actor.state = "probing"
                self.reprobe[actor] = time.time() + 0.5
                return
            actor.state = "dead"
            actor.where = {"error": f"{actor.label}: {one_line(exc, 500)}"}
            log.error("actor %s did not come back: %s", actor.label, one_line(exc, 500))
            return
        except self.ray.exceptions.RayError as exc:
            actor.state = "dead"
            actor.where = {"error": f"{actor.label}: {one_line(exc, 500)}"}
            log.error("actor %s is gone: %s", actor.label, one_line(exc, 500))
            return
        actor.probe_failures = 0
        actor.state = "ready"
        self._record_crashes(actor, actor.where.pop("crashes", None) or [])
        if actor.slot.kind == "gpu":
            self._follow_gpu(actor)

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

    def _follow_gpu(self, actor: ActorRecord) -> None:
        gpu_ids = actor.where.get("gpu_ids") or []
        slot = next((s for s in self.slots if s.node_id == actor.where["node_id"] and s.kind == "gpu"
                     and gpu_ids and s.index == gpu_ids[0]), None)
        if slot is None:
            log.warning("actor %s reports GPU %s on node %s, which is no known slot; not used",
                        actor.label, gpu_ids, actor.where.get("node_id"))
            actor.state = "unusable"
            return
        if slot.key != actor.slot.key:  # Ray packed it elsewhere: follow the GPU it really holds
            log.warning("actor %s runs on %s (GPU %s)", actor.label, slot.label, gpu_ids)
            actor.slot = slot

    def probe(self, actor: ActorRecord) -> None:
        """Ask a (possibly restarting) actor where it runs; no cell goes to it until it answers."""
        actor.state = "probing"
        self.probes[actor.handle.where.remote()] = actor

    def submit_due_probes(self) -> None:
        now = time.time()
        for actor, due in list(self.reprobe.items()):
            if due <= now:
                del self.reprobe[actor]
                self.probe(actor)

    def stop(self, kill: bool) -> None:
        """Stop the actors and what they run (on a shared cluster they must not outlive the sweep).

        A local Ray that this sweep started is shut down whole instead (``kill=False``).
        """
        if kill:
            for actor in self.actors:
                try:
                    self.ray.kill(actor.handle, no_restart=True)
                except Exception:
                    pass
