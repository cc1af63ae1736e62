"""The sweep: a validated grid fanned out to Ray actors, one per (device slot, framework).

``run_sweep(cfg)`` is the whole product command minus argument parsing (``runner/__main__.py``):

1. ``runner.grid.plan`` validates the grid without a cluster (exit 2 on a bad grid).
2. Ray starts (or joins ``runner.address``); the cluster's nodes become **slots**: one per GPU, and
   ``runner.concurrency`` per CPU-only node (on a cluster with no CPU-only node, one CPU slot per
   GPU node that, while busy, holds every GPU of its node). ``auto``/``all`` devices are resolved
   and a device the cluster lacks is one clear error — still before any cell runs.
3. Per slot, one long-lived actor per framework, its environment (``KERAS_BACKEND``, TF memory
   growth, JAX no-preallocation, thread counts) set through ``runtime_env`` before any import.
   The actors of one slot share the slot's resources (each asks ``1/F`` of its GPU or CPUs), and
   the driver holds a per-slot lock, so one timing cell runs per device at a time.
4. The equivalence gate (``frameworks.parity``) once per (model, data) over the real frameworks.
5. Cells leave a queue in a seeded, framework-interleaved order (``runner.grid.interleave``); each
   result travels back to the driver, which writes it at once as an atomic fragment (no shared
   filesystem needed). A dead actor (kill -9, OOM) is restarted by Ray and its cell retried up to
   ``runner.max_retries`` times. Ctrl-C leaves every finished cell on disk and prints the resume
   command.
6. ``runner.results.consolidate`` with the config, environment and gate in the Parquet metadata,
   then the analysis report.
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shlex
import socket
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from runner import grid as gridlib
from runner import results
from runner.grid import GridError
from runner.progress import ProgressState, progress_view

log = logging.getLogger("runner.sweep")

# Under `uv run`, Ray (≥ 2.43) would otherwise rebuild the uv environment for every worker: upload the
# working directory (outputs and dataset caches included) and create a fresh venv per worker — minutes
# of start-up on each node. Workers use the driver's interpreter instead; a cluster runs one image
# everywhere, so that interpreter exists on every node. Ray reads it when it starts: this module
# imports ray only inside functions, after this line has run.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

MANIFEST = "sweep.json"
PARITY_GATE_FILE = "parity_gate.json"
#: Task overrides that only say how/where to run, so a resume may change them freely.
_RUN_ONLY_PREFIXES = ("runner.", "report.", "hydra.")
#: Frameworks the equivalence gate skips: the fake one builds no ModelSpec.
_GATE_SKIP = {"fake"}
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class SweepError(RuntimeError):
    """The sweep cannot go on (Ray unavailable, actors unplaceable, failed gate): one line, exit 1."""


# ---------------------------------------------------------------------------------------------
# slots
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """One place where one timing cell runs at a time."""

    key: str  # "<node id>/gpu<i>" | "<node id>/cpu<j>"
    node_id: str
    host: str
    kind: str  # cpu | gpu
    index: int  # Ray's GPU id on the node, or the CPU slot number
    accelerator_type: str | None
    cpus: float  # CPUs reserved for the slot (split among its actors); 0 for GPU slots
    locks: frozenset[str]  # the slot runs only while none of these is held by another slot
    concurrency: int  # timing cells sharing the node (CPU) or device (GPU) at once

    @property
    def label(self) -> str:
        return f"{self.host}:{self.node_id[:6]}/{self.kind}{self.index}"

    def accepts(self, device: str) -> bool:
        if device == "cpu":
            return self.kind == "cpu"
        if device == "gpu":
            return self.kind == "gpu"
        if device.startswith("gpu:"):
            return self.kind == "gpu" and (self.accelerator_type or "").lower() == device[4:].lower()
        return False


def _accelerator_type(resources: Mapping[str, float]) -> str | None:
    types = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
    return types[0] if len(types) == 1 else None


def discover_slots(nodes: Sequence[Mapping[str, Any]], *, concurrency: int, cpus_per_actor: float | None) -> list[Slot]:
    """Slots from ``ray.nodes()``: one per GPU; ``concurrency`` per CPU-only node (see the module doc)."""
    if concurrency < 1:
        raise GridError(f"runner.concurrency must be >= 1, got {concurrency}")
    alive = sorted((n for n in nodes if n.get("Alive", True)), key=lambda n: n["NodeID"])
    slots: list[Slot] = []
    gpu_nodes = []
    for node in alive:
        res = node.get("Resources", {})
        node_id, host = node["NodeID"], node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?")
        gpus, cpus = int(res.get("GPU", 0)), float(res.get("CPU", 0))
        if gpus:
            gpu_nodes.append((node, gpus, cpus))
            atype = _accelerator_type(res)
            slots += [Slot(f"{node_id}/gpu{i}", node_id, host, "gpu", i, atype, 0.0,
                           frozenset({f"{node_id}/gpu{i}"}), 1) for i in range(gpus)]
        elif cpus > 0:
            share = min(float(cpus_per_actor or cpus), cpus / concurrency)
            slots += [Slot(f"{node_id}/cpu{j}", node_id, host, "cpu", j, None, share,
                           frozenset({f"{node_id}/cpu{j}"}), concurrency) for j in range(concurrency)]
    if not any(s.kind == "cpu" for s in slots):
        # No CPU-only node: a CPU cell runs on a GPU node alone (it holds every GPU lock of that node),
        # so CPU timings never share the machine with a GPU cell's input pipeline.
        for node, gpus, cpus in gpu_nodes:
            if cpus <= 0:
                continue
            node_id = node["NodeID"]
            host = node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?")
            locks = frozenset({f"{node_id}/cpu0"} | {f"{node_id}/gpu{i}" for i in range(gpus)})
            slots.append(Slot(f"{node_id}/cpu0", node_id, host, "cpu", 0, None,
                              min(float(cpus_per_actor or cpus), cpus), locks, 1))
    return slots


def inventory(slots: Sequence[Slot]) -> gridlib.DeviceInventory:
    gpus: dict[str | None, int] = {}
    for s in slots:
        if s.kind == "gpu":
            gpus[s.accelerator_type] = gpus.get(s.accelerator_type, 0) + 1
    return gridlib.DeviceInventory(cpu=any(s.kind == "cpu" for s in slots), gpus=gpus)


# ---------------------------------------------------------------------------------------------
# actors
# ---------------------------------------------------------------------------------------------
def actor_env(framework_cfg: Mapping[str, Any], parity_cfg: Mapping[str, Any], kind: str) -> dict[str, str]:
    """Environment of a framework's actor: read by the frameworks at import, so it is set at process start."""
    env = {
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
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

    def __init__(self, framework: str, slot_key: str) -> None:
        self.framework = framework
        self.slot_key = slot_key
        self.adapter_cache: dict = {}
        import runner.cell  # noqa: F401  (its metrics stack loads while the actor starts, not in a cell's time)

    def where(self) -> dict[str, Any]:
        return _where()

    def run(self, cell: dict[str, Any], sweep_id: str, context: dict[str, Any]) -> dict[str, Any]:
        from runner.cell import run_cell

        here = _where()
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
class ActorHandle:
    handle: Any
    framework: str
    slot: Slot
    where: dict[str, Any] = field(default_factory=dict)
    state: str = "starting"  # starting | ready | probing (restarting after a death) | dead | unusable
    probe_failures: int = 0

    @property
    def label(self) -> str:
        return f"{self.framework}@{self.slot.label}"

    @property
    def usable(self) -> bool:
        """Can run a cell now or soon."""
        return self.state in ("starting", "ready", "probing")


# ---------------------------------------------------------------------------------------------
# outcome, manifest
# ---------------------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    exit_code: int
    out_dir: Path
    sweep_id: str = ""
    planned: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell id → error
    missing: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # cells run by this invocation
    message: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    slots: int = 0
    wall_seconds: float = 0.0
    dispatch_seconds: float = 0.0  # first dispatch → last result
    resume_command: str = ""


def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _sweep_overrides(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(_RUN_ONLY_PREFIXES)]


def _run_overrides(overrides: Sequence[str]) -> list[str]:
    keys = [o.lstrip("+~") for o in overrides]
    return [o for o, k in zip(overrides, keys) if k.startswith("runner.") and not k.startswith("runner.resume")]


def resume_command(out_dir: Path, overrides: Sequence[str]) -> str:
    try:
        shown = out_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = out_dir.resolve()
    return " ".join(["python -m runner", shlex.quote(f"runner.resume={shown}"),
                     *(shlex.quote(o) for o in _run_overrides(overrides))])


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------
def _hydra_context() -> tuple[Path | None, list[str]]:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            return Path(hc.runtime.output_dir), list(hc.overrides.task)
    except Exception:  # pragma: no cover - hydra not in use
        pass
    return None, []


def _truthy_resume(value: Any) -> bool | str:
    if value is None or value is False:
        return False
    if value is True:
        return True
    text = str(value).strip()
    if text.lower() in ("", "false", "no", "0", "off", "null", "none"):
        return False
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    return text


def prepare_sweep(cfg: Any, out_dir: Path, overrides: Sequence[str]) -> tuple[DictConfig, dict[str, Any], bool]:
    """The config that defines the sweep, its manifest, and whether this is a resume. Raises GridError."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    resume = _truthy_resume(OmegaConf.select(cfg, "runner.resume"))
    if not resume:
        if (out_dir / MANIFEST).exists():
            raise GridError(f"{out_dir} already holds a sweep; continue it with runner.resume=true "
                            f"(or runner.resume={out_dir}), or choose a new hydra.run.dir")
        manifest = {"sweep_id": f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
                    "created": _utcnow(), "overrides": list(overrides),
                    "config": OmegaConf.to_container(cfg, resolve=False), "invocations": []}
        return cfg, manifest, False
    path = (out_dir / MANIFEST) if resume is True else Path(resume) / MANIFEST
    if not path.is_file():
        raise GridError(f"runner.resume: {path.parent} holds no sweep to resume (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    ours = _sweep_overrides(overrides)
    theirs = _sweep_overrides(manifest.get("overrides", []))
    if ours and ours != theirs:
        raise GridError(f"runner.resume: the sweep in {path.parent} was defined by {theirs or 'the defaults'}, "
                        f"not {ours}; resume with runner.* overrides only, or start a new sweep")
    saved = OmegaConf.create(manifest["config"])
    # What to run comes from the saved sweep; how to run it (runner.*, report.*) from this invocation.
    saved.runner = cfg.runner
    saved.report = cfg.report
    return saved, manifest, True


def run_sweep(cfg: Any, out_dir: str | Path | None = None, overrides: Sequence[str] | None = None) -> SweepOutcome:
    """Run (or resume) the sweep described by ``cfg``; results land in ``out_dir`` (Hydra's run dir by default).

    Raises ``GridError`` for an invalid grid/config (before any cell runs); every other outcome —
    success, failed cells, a failed sweep, Ctrl-C — is a ``SweepOutcome`` with its exit code.
    """
    t_start = time.time()
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    hydra_dir, hydra_overrides = _hydra_context()
    out_dir = Path(out_dir) if out_dir is not None else hydra_dir
    if out_dir is None:
        raise GridError("run_sweep: no output directory (pass out_dir, or run under Hydra)")
    overrides = list(overrides) if overrides is not None else hydra_overrides
    resume_arg = _truthy_resume(OmegaConf.select(cfg, "runner.resume"))
    if isinstance(resume_arg, str):
        out_dir = Path(resume_arg)
    sweep_cfg, manifest, resuming = prepare_sweep(cfg, out_dir, overrides)
    plan = gridlib.plan(sweep_cfg)  # GridError ⇒ exit 2, before Ray starts
    runner_cfg = OmegaConf.to_container(sweep_cfg.runner, resolve=True)
    _check_runner_cfg(runner_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_id = manifest["sweep_id"]
    outcome = SweepOutcome(exit_code=EXIT_FAILED, out_dir=out_dir, sweep_id=sweep_id,
                           resume_command=resume_command(out_dir, overrides))
    log.info("sweep %s%s → %s", sweep_id, " (resume)" if resuming else "", out_dir)
    # Written before anything runs, so the printed resume command works whenever it is interrupted.
    manifest_before = (out_dir / MANIFEST).read_text() if resuming else None
    manifest["invocations"].append({"started": _utcnow(), "resume": resuming, "overrides": list(overrides)})
    _write_json(out_dir / MANIFEST, manifest)

    import ray

    started_ray = False
    interrupted = False
    env: dict[str, Any] = {}
    gate: dict[str, Any] | None = None
    cells: list[dict[str, Any]] = []
    try:
        try:
            if not ray.is_initialized():
                init_kwargs: dict[str, Any] = {"include_dashboard": bool(runner_cfg.get("dashboard", False)),
                                               "logging_level": logging.WARNING}
                if runner_cfg.get("address"):
                    init_kwargs["address"] = str(runner_cfg["address"])
                else:
                    init_kwargs.update(num_cpus=runner_cfg.get("num_cpus"), num_gpus=runner_cfg.get("num_gpus"))
                ray.init(**init_kwargs)
                started_ray = True
        except (KeyboardInterrupt, GridError):
            raise
        except Exception as exc:
            where = runner_cfg.get("address") or "a local instance"
            raise SweepError(f"could not start/join Ray ({where}): {_one_line(exc)}") from None
        slots = discover_slots(ray.nodes(), concurrency=int(runner_cfg["concurrency"]),
                               cpus_per_actor=runner_cfg.get("cpus_per_actor"))
        devices = gridlib.resolve_devices(plan.device_values, inventory(slots))  # GridError ⇒ exit 2
        cells = gridlib.interleave(plan.cells(devices), int(runner_cfg["interleave_seed"]))
        from runner.cell import cell_id

        outcome.planned = ids = [cell_id(c) for c in cells]
        done_ok = results.ok_cell_ids(out_dir) if resuming else set()
        todo = [c for c, i in zip(cells, ids) if i not in done_ok]
        if resuming:
            unknown = set(manifest.get("cells", [])) - set(ids)
            if unknown:
                log.warning("resume: %d cell(s) of the original plan are not in this expansion (different "
                            "cluster devices?); they are not re-run", len(unknown))
            log.info("resume: %d of %d cells already ok; running the %d missing", len(set(ids) & done_ok),
                     len(ids), len(todo))
        manifest["cells"] = ids
        manifest["devices"] = devices
        manifest["invocations"][-1]["cells_to_run"] = len(todo)
        _write_json(out_dir / MANIFEST, manifest)
        env = _environment(ray, slots, devices)
        used = [s for s in slots if any(s.accepts(d) for d in devices)]
        outcome.slots = len(used)
        log.info("%d cells (%s) on %d slot(s): %s", len(ids), _grid_summary(plan, devices), len(used),
                 ", ".join(s.label for s in used))
        dispatcher = None
        try:
            if todo:
                dispatcher = Dispatcher(ray, slots, todo, sweep_cfg, runner_cfg, sweep_id, out_dir, env["git_sha"])
                dispatcher.start_actors()
                if runner_cfg.get("parity_gate", True):
                    gate = dispatcher.parity_gate(sweep_cfg)
                    _write_json(out_dir / PARITY_GATE_FILE, gate)
                    _check_gate(gate, sweep_cfg, runner_cfg)
                dispatcher.run()
        finally:
            if dispatcher is not None:
                dispatcher.stop(kill=not started_ray)
                outcome.ran = dispatcher.finished
                outcome.dispatch_seconds = dispatcher.dispatch_seconds
    except GridError:  # invalid for this cluster (e.g. a device it lacks): leave the dir as it was
        if manifest_before is None:
            (out_dir / MANIFEST).unlink(missing_ok=True)
        else:
            (out_dir / MANIFEST).write_text(manifest_before)
        raise
    except KeyboardInterrupt:
        interrupted = True
    except SweepError as exc:
        outcome.message = f"sweep failed: {exc}"
    finally:
        if started_ray:
            try:
                ray.shutdown()
            except Exception:  # pragma: no cover - best effort at exit
                pass
    if gate is None and (out_dir / PARITY_GATE_FILE).exists():
        gate = json.loads((out_dir / PARITY_GATE_FILE).read_text())
    _finish_counts(outcome, out_dir)
    complete = not interrupted and not outcome.message and not outcome.missing
    metadata = {"sweep_id": sweep_id, "config": _resolved(sweep_cfg), "overrides": manifest.get("overrides", []),
                "environment": env, "parity_gate": gate or {"status": "not run"},
                "cells_planned": len(outcome.planned), "complete": complete}
    outcome.files = results.consolidate(out_dir, metadata=metadata)
    manifest["invocations"][-1].update(finished=_utcnow(), interrupted=interrupted, ok=len(outcome.ok),
                                       failed=len(outcome.failed), missing=len(outcome.missing))
    _write_json(out_dir / MANIFEST, manifest)
    outcome.wall_seconds = time.time() - t_start

    if outcome.message:  # the sweep itself failed (Ray, actors, gate)
        log.info("results so far: %s (%d ok, %d failed of %d cells)", out_dir, len(outcome.ok),
                 len(outcome.failed), len(outcome.planned))
        log.error(outcome.message)
        return outcome
    if interrupted:
        outcome.exit_code = EXIT_INTERRUPTED
        log.warning("interrupted: %d of %d cells finished (%d ok, %d failed), %d missing; finished cells are in %s",
                    len(outcome.ok) + len(outcome.failed), len(outcome.planned), len(outcome.ok),
                    len(outcome.failed), len(outcome.missing), out_dir)
        labels = {cid: _cell_label(c) for c, cid in zip(cells, outcome.planned)}
        for cid in outcome.missing[:20]:
            log.warning("  missing %s", labels.get(cid, cid))
        if len(outcome.missing) > 20:
            log.warning("  … and %d more", len(outcome.missing) - 20)
        log.warning("resume with: %s", outcome.resume_command)
        what = f"{len(outcome.missing)} cell(s) missing" if outcome.planned else "before any cell was planned"
        outcome.message = f"interrupted: {what}; resume with: {outcome.resume_command}"
        return outcome

    report_ok = _report(sweep_cfg, out_dir, outcome)
    log.info("results: %s (%d ok, %d failed of %d cells)", out_dir, len(outcome.ok), len(outcome.failed),
             len(outcome.planned))
    labels = {cid: _cell_label(c) for c, cid in zip(cells, outcome.planned)}
    for cid, err in list(outcome.failed.items())[:20]:
        log.error("  failed %s: %s", labels.get(cid, cid), err)
    if not outcome.ok and outcome.planned:
        first = next(iter(outcome.failed.values()), "no result")
        outcome.message = f"sweep failed: all {len(outcome.planned)} cells failed; first error: {first}"
    elif outcome.failed or outcome.missing:
        outcome.message = (f"{len(outcome.failed)} of {len(outcome.planned)} cells failed: "
                           + ", ".join(list(outcome.failed)[:10]) + (" …" if len(outcome.failed) > 10 else ""))
    elif not report_ok:
        outcome.message = "all cells ok, but the report step failed (see above); results are intact"
    else:
        outcome.message = f"all {len(outcome.planned)} cells ok"
        outcome.exit_code = EXIT_OK
    (log.info if outcome.exit_code == EXIT_OK else log.error)(outcome.message)
    return outcome


def _check_runner_cfg(runner_cfg: Mapping[str, Any]) -> None:
    for key, minimum in (("concurrency", 1), ("max_retries", 0), ("interleave_seed", 0)):
        value = runner_cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise GridError(f"runner.{key} must be an integer >= {minimum}, got {value!r}")
    cpus = runner_cfg.get("cpus_per_actor")
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0):
        raise GridError(f"runner.cpus_per_actor must be a positive number or null, got {cpus!r}")


def _grid_summary(plan: gridlib.GridPlan, devices: Sequence[str]) -> str:
    axes = dict(plan.axes, device=list(devices))
    return " × ".join(f"{len(v)} {a}" for a, v in axes.items())


def _cell_label(cell: Mapping[str, Any]) -> str:
    from runner.cell import cell_id

    return (f"{cell_id(cell)} ({cell['framework']['name']} seed={cell['seed']} "
            f"batch={cell['train']['batch_size']} device={cell['device']})")


def _finish_counts(outcome: SweepOutcome, out_dir: Path) -> None:
    runs = results.read_fragments(out_dir, "runs")
    status = dict(zip(runs["cell_id"].to_pylist(), zip(runs["status"].to_pylist(), runs["error"].to_pylist())))
    outcome.ok = [c for c in outcome.planned if status.get(c, (None,))[0] == "ok"]
    outcome.failed = {c: status[c][1] or "failed" for c in outcome.planned if c in status and status[c][0] != "ok"}
    outcome.missing = [c for c in outcome.planned if c not in status]


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # a value only the cell can resolve: keep the text
        return OmegaConf.to_container(cfg, resolve=False)


def _environment(ray, slots: Sequence[Slot], devices: Sequence[str]) -> dict[str, Any]:
    from runner import provenance

    nodes = [{"node_id": n["NodeID"], "host": n.get("NodeManagerHostname"), "address": n.get("NodeManagerAddress"),
              "resources": n.get("Resources", {})} for n in ray.nodes() if n.get("Alive", True)]
    return {"git_sha": provenance.git_sha(), "driver_host": provenance.host_name(),
            "driver_versions": provenance.library_versions(), "ray_version": ray.__version__,
            "hosts": sorted({n["host"] for n in nodes if n["host"]}), "nodes": nodes,
            "cluster_resources": ray.cluster_resources(), "devices": list(devices),
            "slots": [{"slot": s.label, "kind": s.kind, "gpu_index": s.index if s.kind == "gpu" else None,
                       "accelerator_type": s.accelerator_type, "concurrency": s.concurrency} for s in slots]}


def _check_gate(gate: Mapping[str, Any], cfg: DictConfig, runner_cfg: Mapping[str, Any]) -> None:
    if gate.get("status") not in ("failed", "error"):
        return
    log.error("EQUIVALENCE GATE %s: %s (see %s)", str(gate["status"]).upper(), gate.get("summary"), PARITY_GATE_FILE)
    strict = OmegaConf.select(cfg, "parity.mode") == "strict"
    if strict and not runner_cfg.get("allow_parity_failure", False):
        raise SweepError(f"the equivalence gate {gate['status']} ({gate.get('summary')}); the frameworks do not "
                         "compute the same function, so timings would not compare like with like. "
                         "Fix the parity settings, or run anyway with runner.allow_parity_failure=true")
    log.warning("continuing despite the failed gate (%s); the report shows it",
                "parity.mode is not strict" if not strict else "runner.allow_parity_failure=true")


def _report(cfg: DictConfig, out_dir: Path, outcome: SweepOutcome) -> bool:
    report_cfg = OmegaConf.to_container(cfg.report, resolve=True) if "report" in cfg else {}
    if not report_cfg.get("enabled", True):
        return True
    try:
        import analysis

        build_report = analysis.build_report
    except (ImportError, AttributeError):
        log.info("report: analysis.build_report is not available; skipped")
        return True
    if not outcome.ok:
        log.info("report: no ok cells; skipped")
        return True
    try:
        outcome.report = dict(build_report([out_dir], out_dir, report_cfg))
    except Exception as exc:  # the results are on disk either way
        log.error("report failed: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
        log.debug("%s", traceback.format_exc())
        return False
    for name, path in outcome.report.items():
        log.info("report %s: %s", name, path)
    return True


# ---------------------------------------------------------------------------------------------
# the dispatcher
# ---------------------------------------------------------------------------------------------
@dataclass
class _Queued:
    cell: dict[str, Any]
    cell_id: str
    attempt: int = 1
    errors: list[str] = field(default_factory=list)


@dataclass
class _Running:
    item: _Queued
    actor: ActorHandle
    slot: Slot
    start: float
    start_utc: datetime


class Dispatcher:
    """Owns the actors, the per-slot locks and the queue; writes each result as it arrives."""

    def __init__(self, ray, slots: Sequence[Slot], cells: Sequence[dict[str, Any]], cfg: DictConfig,
                 runner_cfg: Mapping[str, Any], sweep_id: str, out_dir: Path, git_sha: str) -> None:
        from runner.cell import cell_id

        self.ray = ray
        self.cfg = cfg
        self.runner_cfg = runner_cfg
        self.sweep_id = sweep_id
        self.out_dir = out_dir
        self.git_sha = git_sha
        devices = sorted({c["device"] for c in cells})
        self.slots = [s for s in slots if any(s.accepts(d) for d in devices)]
        self.queue = [_Queued(c, cell_id(c)) for c in cells]
        self.actors: list[ActorHandle] = []
        self.held: dict[str, str] = {}  # lock → slot key holding it
        self.running: dict[Any, _Running] = {}  # ObjectRef → what runs
        self.probes: dict[Any, ActorHandle] = {}  # ObjectRef of where() → actor
        self.reprobe: dict[ActorHandle, float] = {}  # restarting actor → when to ask again
        self.finished: list[str] = []
        self.max_retries = int(runner_cfg["max_retries"])
        self.first_dispatch: float | None = None
        self.last_result: float | None = None
        self.state = ProgressState(total=len(self.queue), slots=len(self.slots))

    @property
    def dispatch_seconds(self) -> float:
        if self.first_dispatch is None or self.last_result is None:
            return 0.0
        return self.last_result - self.first_dispatch

    # ---- actors ---------------------------------------------------------------------------
    def start_actors(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote_cls = self.ray.remote(CellWorker)
        framework_cfgs = {c.cell["framework"]["name"]: c.cell["framework"] for c in self.queue}
        parity_cfg = OmegaConf.to_container(self.cfg.parity, resolve=True)
        # Slot-major creation order: with fractional GPU requests, Ray fills one GPU before the next,
        # so each GPU ends up with one actor per framework (checked below against where()).
        for slot in self.slots:
            names = sorted({c.cell["framework"]["name"] for c in self.queue if slot.accepts(c.cell["device"])})
            if not names:
                continue
            share = math.floor(1e4 / len(names)) / 1e4  # Ray's resource granularity is 1e-4
            for name in names:
                options: dict[str, Any] = {
                    "max_restarts": -1, "max_task_retries": 0,
                    "runtime_env": {"env_vars": actor_env(framework_cfgs[name], parity_cfg, slot.kind)},
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(slot.node_id, soft=False),
                }
                if slot.kind == "gpu":
                    options.update(num_gpus=share, num_cpus=0)
                else:
                    options.update(num_gpus=0, num_cpus=math.floor(slot.cpus * share * 1e4) / 1e4)
                actor = ActorHandle(remote_cls.options(**options).remote(name, slot.key), name, slot)
                self.actors.append(actor)
        timeout = float(self.runner_cfg.get("actor_start_timeout_s", 600))
        refs = {a.handle.where.remote(): a for a in self.actors}
        ready, pending = self.ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if pending:
            stuck = ", ".join(refs[r].label for r in pending)
            raise SweepError(f"actors not placed within {timeout:.0f}s: {stuck} (cluster resources: "
                             f"{self.ray.available_resources()}); raise runner.actor_start_timeout_s or free resources")
        for ref in ready:
            self._placed(refs[ref], ref)
        alive = [a for a in self.actors if a.state == "ready"]
        if not alive:
            raise SweepError("no actor could start: " + "; ".join(a.where.get("error", "?") for a in self.actors))
        log.info("actors ready: %s", ", ".join(f"{a.label} (pid {a.where.get('pid')}"
                                                 + (f", CUDA_VISIBLE_DEVICES={a.where.get('cuda_visible_devices')}"
                                                    if a.slot.kind == "gpu" else "") + ")" for a in alive))

    def _placed(self, actor: ActorHandle, ref) -> None:
        """Record where an actor runs (after start or restart); follow it if Ray put it on another GPU."""
        try:
            actor.where = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError as exc:
            actor.probe_failures += 1  # restarting: ask again shortly, within reason
            if actor.probe_failures <= 600:
                actor.state = "probing"
                self.reprobe[actor] = time.time() + 0.5
                return
            actor.state = "dead"
            actor.where = {"error": f"{actor.label}: {_one_line(exc)}"}
            log.error("actor %s did not come back: %s", actor.label, _one_line(exc))
            return
        except self.ray.exceptions.RayError as exc:
            actor.state = "dead"
            actor.where = {"error": f"{actor.label}: {_one_line(exc)}"}
            log.error("actor %s is gone: %s", actor.label, _one_line(exc))
            return
        actor.probe_failures = 0
        actor.state = "ready"
        if actor.slot.kind == "gpu":
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

    def _probe(self, actor: ActorHandle) -> None:
        actor.state = "probing"
        self.probes[actor.handle.where.remote()] = actor

    # ---- the equivalence gate ---------------------------------------------------------------
    def parity_gate(self, cfg: DictConfig) -> dict[str, Any]:
        """``gate_outputs`` in each real framework's actor, ``compare`` here, per distinct (model, data)."""
        frameworks = sorted({q.cell["framework"]["name"] for q in self.queue} - _GATE_SKIP)
        record: dict[str, Any] = {"created": _utcnow(), "frameworks": frameworks, "checks": []}
        if len(frameworks) < 2:
            record.update(status="skipped", summary=f"fewer than two real frameworks ({frameworks or 'none'})")
            log.info("equivalence gate skipped: %s", record["summary"])
            return record
        try:
            from frameworks.parity import compare
        except ImportError as exc:
            record.update(status="error", summary=f"frameworks.parity unavailable: {_one_line(exc)}")
            return record
        tolerance = float(self.runner_cfg.get("parity_tolerance", 1e-4))
        parity_cfg = OmegaConf.to_container(cfg.parity, resolve=True)
        # The gate checks the model definitions, not the speed policies: fp32 and eager everywhere.
        parity_cfg = dict(parity_cfg, precision="fp32", compile="off")
        groups: dict[str, tuple[dict, dict, int]] = {}
        for q in self.queue:  # the first cell's seed: its dataset split is prepared for the cells anyway
            key = json.dumps([q.cell["model"], q.cell["data"]], sort_keys=True, default=str)
            groups.setdefault(key, (q.cell["model"], q.cell["data"], int(q.cell["seed"])))
        statuses = []
        for model_cfg, data_cfg, seed in groups.values():
            check: dict[str, Any] = {"model": gridlib.model_name(model_cfg), "data": data_cfg.get("name"),
                                     "seed": seed, "parity": parity_cfg, "tolerance": tolerance}
            refs = {}
            for fw in frameworks:
                actor = next((a for a in self.actors if a.framework == fw and a.state == "ready"), None)
                if actor is None:
                    check.setdefault("errors", {})[fw] = "no running actor"
                    continue
                refs[fw] = actor.handle.gate.remote(model_cfg, data_cfg, parity_cfg, seed, actor.slot.kind)
            outputs = {}
            for fw, ref in refs.items():
                try:
                    outputs[fw] = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    check.setdefault("errors", {})[fw] = _one_line(exc)
            if check.get("errors"):
                check["status"] = "error"
            else:
                check["comparison"] = compare(outputs, tolerance=tolerance)
                check["status"] = "passed" if _gate_passed(check["comparison"]) else "failed"
            statuses.append(check["status"])
            record["checks"].append(check)
            log.info("equivalence gate %s × %s over %s: %s", check["model"], check["data"], frameworks,
                     check["status"].upper())
        record["status"] = "error" if "error" in statuses else ("failed" if "failed" in statuses else "passed")
        bad = [f"{c['model']}×{c['data']}: {c['status']} ("
               + "; ".join(c.get("comparison", {}).get("reasons", [])[:3]
                           or [f"{fw}: {e}" for fw, e in c.get("errors", {}).items()]) + ")"
               for c in record["checks"] if c["status"] != "passed"]
        record["summary"] = "; ".join(bad) if bad else f"{len(statuses)} check(s) passed"
        return record

    # ---- dispatch -------------------------------------------------------------------------
    def _idle(self, slot: Slot) -> bool:
        return not any(lock in self.held for lock in slot.locks)

    def _candidates(self, item: _Queued) -> list[ActorHandle]:
        fw, device = item.cell["framework"]["name"], item.cell["device"]
        return [a for a in self.actors if a.usable and a.framework == fw and a.slot.accepts(device)]

    def _dispatch(self) -> None:
        for item in list(self.queue):
            if all(not self._idle(s) for s in self.slots):
                return
            candidates = self._candidates(item)
            if not candidates:  # every actor that could run it is gone for good
                self.queue.remove(item)
                self._record_failure(item, None, None, "no live actor for framework "
                                     f"{item.cell['framework']['name']} on device {item.cell['device']}: "
                                     + "; ".join(item.errors[-1:]))
                continue
            actor = next((a for a in candidates if a.state == "ready" and self._idle(a.slot)), None)
            if actor is None:
                continue
            self.queue.remove(item)
            self._start(item, actor)

    def _start(self, item: _Queued, actor: ActorHandle) -> None:
        slot = actor.slot
        for lock in slot.locks:
            self.held[lock] = slot.key
        context = {"attempt": item.attempt, "concurrency": slot.concurrency, "git_sha": self.git_sha}
        ref = actor.handle.run.remote(item.cell, self.sweep_id, context)
        now = time.time()
        self.first_dispatch = self.first_dispatch or now
        self.running[ref] = _Running(item, actor, slot, now, datetime.now(timezone.utc))
        self.state.running[actor.label] = (f"{item.cell_id} seed={item.cell['seed']} "
                                           f"batch={item.cell['train']['batch_size']}", now)
        log.info("start %s on %s (attempt %d)", _cell_label(item.cell), actor.label, item.attempt)

    def _release(self, run: _Running) -> None:
        for lock in run.slot.locks:
            if self.held.get(lock) == run.slot.key:
                del self.held[lock]
        self.state.running.pop(run.actor.label, None)

    def run(self) -> None:
        with progress_view(self.state, bool(self.runner_cfg.get("progress", True))) as view:
            while self.queue or self.running:
                self._submit_due_probes()
                self._dispatch()
                waitable = list(self.running) + list(self.probes)
                if not waitable:
                    if self.reprobe:  # an actor is restarting: ask again shortly
                        time.sleep(0.1)
                        continue
                    # Nothing can change any more: what is still queued has no actor that can run it.
                    for item in list(self.queue):
                        self.queue.remove(item)
                        self._record_failure(item, None, None, "no ready actor can run it: "
                                             + "; ".join(item.errors[-1:] or ["actors unusable"]))
                    continue
                ready, _ = self.ray.wait(waitable, num_returns=1, timeout=0.5)
                for ref in ready:
                    if ref in self.probes:
                        self._placed(self.probes.pop(ref), ref)
                        continue
                    run = self.running.pop(ref)
                    out, error = self._fetch(ref)
                    if error is not None and not isinstance(error, self.ray.exceptions.RayTaskError):
                        # The process died: no cell goes to this actor until Ray has restarted it.
                        self._probe(run.actor)
                    self._release(run)
                    self._dispatch()  # the slot is free: keep it busy before writing the result
                    self._collect(run, out, error)
                view.update()

    def _submit_due_probes(self) -> None:
        now = time.time()
        for actor, due in list(self.reprobe.items()):
            if due <= now:
                del self.reprobe[actor]
                self._probe(actor)

    def _fetch(self, ref) -> tuple[dict[str, Any] | None, BaseException | None]:
        try:
            return self.ray.get(ref), None
        except self.ray.exceptions.RayError as exc:
            return None, exc

    def _collect(self, run: _Running, out: dict[str, Any] | None, error: BaseException | None) -> None:
        item = run.item
        self.last_result = time.time()
        seconds = self.last_result - run.start
        if isinstance(error, self.ray.exceptions.RayTaskError):  # a bug outside run_cell's own guard: not retried
            cause = error.as_instanceof_cause() if hasattr(error, "as_instanceof_cause") else error
            self._record_failure(item, run, seconds, _one_line(cause), tb=str(error))
            return
        if error is not None:  # the process died (kill -9, OOM, node lost)
            message = f"actor {run.actor.label} died during attempt {item.attempt}: {_one_line(error)}"
            item.errors.append(message)
            if item.attempt <= self.max_retries:
                log.warning("%s; retrying %s (attempt %d of %d)", message, item.cell_id, item.attempt + 1,
                            self.max_retries + 1)
                item.attempt += 1
                self.state.retries += 1
                self.queue.insert(0, item)  # next in line, so it stays near its interleaved block
            else:
                self._record_failure(item, run, seconds, f"gave up after {item.attempt} attempt(s): {message}")
            return
        assert out is not None
        tables = out["tables"]
        for row in tables.get("runs", []):
            # The runner owns these columns: they describe where/how the cell ran, not what it computed.
            row.update(attempt=item.attempt, concurrency=run.slot.concurrency)
        results.write_fragment(self.out_dir, out["cell_id"], tables, metadata={"sweep_id": self.sweep_id})
        self.finished.append(out["cell_id"])
        if out["status"] == "ok":
            self.state.done_ok += 1
        else:
            self.state.failed += 1
        self.state.cell_seconds.append(seconds)
        log.info("finish %s on %s: %s in %.1fs%s", _cell_label(item.cell), run.actor.label, out["status"], seconds,
                 f" — {out['error']}" if out.get("error") else "")

    def _record_failure(self, item: _Queued, run: _Running | None, seconds: float | None, error: str,
                        tb: str | None = None) -> None:
        row = failed_row(item.cell, self.sweep_id, error, tb or "\n".join(item.errors), item.attempt,
                         run.slot.concurrency if run else None, run.start_utc if run else None,
                         run.actor.where if run else {}, self.git_sha)
        results.write_fragment(self.out_dir, item.cell_id, {"runs": [row]}, metadata={"sweep_id": self.sweep_id})
        self.finished.append(item.cell_id)
        self.state.failed += 1
        if seconds is not None:
            self.state.cell_seconds.append(seconds)
        log.error("finish %s: failed — %s", _cell_label(item.cell), error)

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


def _gate_passed(comparison: Mapping[str, Any]) -> bool:
    for key in ("passed", "ok", "equivalent"):
        if key in comparison:
            return bool(comparison[key])
    raise SweepError(f"frameworks.parity.compare returned no pass/fail verdict: keys {sorted(comparison)}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 500:
        text = text[:500] + " …"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failed_row(cell: Mapping[str, Any], sweep_id: str, error: str, tb: str, attempt: int, concurrency: int | None,
               start: datetime | None, where: Mapping[str, Any], git_sha: str) -> dict[str, Any]:
    """A ``runs`` row for a cell that produced no row of its own (its actor died, or it never started)."""
    from runner.cell import cell_id, config_hash

    parity = cell.get("parity", {})
    gpu_ids = where.get("gpu_ids") or []
    return {
        "sweep_id": sweep_id, "cell_id": cell_id(cell), "config_hash": config_hash(cell),
        "framework": cell["framework"].get("name"), "backend": cell["framework"].get("backend"),
        "model": gridlib.model_name(cell["model"]), "data": cell["data"].get("name"),
        "seed": int(cell["seed"]), "batch_size": int(cell["train"]["batch_size"]),
        "epochs": cell["train"].get("epochs"), "device": str(cell["device"]),
        "device_kind": "gpu" if str(cell["device"]).startswith("gpu") else "cpu",
        "precision_policy": parity.get("precision"), "compile_policy": parity.get("compile"),
        "parity_mode": parity.get("mode"), "cpu_threads": parity.get("cpu_threads"),
        "attempt": attempt, "concurrency": concurrency, "host": where.get("host"), "node_id": where.get("node_id"),
        "gpu_index": gpu_ids[0] if gpu_ids else None, "git_sha": git_sha,
        "start_time": start, "end_time": datetime.now(timezone.utc) if start else None,
        "status": "failed", "error": error, "traceback": tb or None,
    }
