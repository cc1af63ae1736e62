"""The sweep: a validated grid fanned out to Ray actors, one per (device slot, framework).

``run_sweep(cfg)`` is the whole product command minus argument parsing (``runner/__main__.py``).
The steps, and the module that owns each:

1. ``runner.sweep.manifest.open_sweep``: every input checked without a cluster (``runner.planning.checks``: schemas,
   grid, model × image size, the data prepared on the driver; exit 2), the manifest written (a resume
   continues a saved sweep).
2. ``runner.cluster.session``: Ray starts (or joins ``runner.address``); ``runner.cluster.slots`` turns the
   nodes into slots; ``auto``/``all`` devices are resolved and a device the cluster lacks is one
   clear error — still before any cell runs.
3. ``runner.cluster.actors``: per slot, one long-lived actor per framework, its environment set before
   any import.
4. ``runner.sweep.gate``: the equivalence gate once per (model, data) over the real frameworks.
   Each slot is a placement-group bundle; every actor checks that its node can read the data.
5. ``runner.sweep.dispatch``: cells leave a queue in a seeded, framework-interleaved order, each result
   is written at once as an atomic fragment, dead actors' cells are retried. ``runner.sweep.stopping``:
   SIGINT/SIGTERM/SIGHUP stop it in order, leaving every finished cell on disk (exit 128 + signal).
   A failure of the sweep's own I/O (``runner.store.io_errors``) is one line naming the path and cause.
6. ``runner.store.fragments.consolidate`` with the config, environment and gate in the Parquet metadata,
   then the analysis report and the closing lines (``runner.sweep.outcome``).
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from core.atomic import atomic_write_json
from core.gate import GateRecord
from runner.sweep import adaptive
from runner.console import logs as console
from runner.planning import grid as gridlib
from runner.store import fragments as results
from runner.cluster.actors import ActorPool
from runner.sweep.dispatch import Dispatcher
from runner.sweep.gate import PARITY_GATE_FILE, check_gate, run_gate
from runner.errors import EXIT_FAILED, GridError, SweepError
from runner.sweep.manifest import OpenSweep, open_sweep, resume_command
from runner.sweep.outcome import SweepOutcome, count_cells, say_finished, say_interrupted, say_sweep_failed
from runner.store.io_errors import SweepIOError, sweep_io
from runner.cluster.session import RaySession, environment
from runner.cluster.slots import discover_slots, inventory
from runner.sweep.stopping import StopRequested, StopState, signal_name

log = logging.getLogger("runner.sweep")


@dataclass
class _Found:
    """What the cluster part of a sweep learned, for the closing step."""

    cells: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    gate: GateRecord | None = None
    adaptive: dict[str, Any] | None = None  # runner.target_ci: the rule and each round's decision
    log_notes: list[str] = field(default_factory=list)  # one line per actor log that needs the user


def run_sweep(cfg: Any, out_dir: str | Path | None = None, overrides: Sequence[str] | None = None,
              plan: gridlib.GridPlan | None = None) -> SweepOutcome:
    """Run (or resume) the sweep described by ``cfg``; results land in ``out_dir`` (Hydra's run dir by default).

    Raises ``GridError`` for an invalid grid/config (before any cell runs); every other outcome —
    success, failed cells, a failed sweep, a failure of the sweep's own I/O, a stop signal — is a
    ``SweepOutcome`` with its exit code. ``plan``: the plan ``runner.planning.checks.check_sweep`` already
    returned for exactly ``cfg`` (``python -m runner`` checks before Hydra makes the run dir), so the
    inputs are checked once per sweep. SIGINT, SIGTERM and SIGHUP all take one stop path
    (``runner.sweep.stopping``); a signal before the sweep's directory exists raises ``StopRequested``.
    """
    stop = StopState()
    with stop.handling():
        return _run_sweep(cfg, out_dir, overrides, plan, stop)


def _run_sweep(cfg: Any, out_dir: str | Path | None, overrides: Sequence[str] | None, plan: gridlib.GridPlan | None,
               stop: StopState) -> SweepOutcome:
    t_start = time.time()
    sweep = open_sweep(cfg, out_dir, overrides, plan)  # GridError ⇒ exit 2, before Ray starts
    outcome = SweepOutcome(exit_code=EXIT_FAILED, out_dir=sweep.out_dir, sweep_id=sweep.sweep_id,
                           resume_command=resume_command(sweep.out_dir, sweep.overrides))
    log.info("sweep %s%s → %s", sweep.sweep_id, " (resume)" if sweep.resuming else "", sweep.out_dir,
             extra={"console": f"sweep{' (resume)' if sweep.resuming else ''} → {sweep.out_dir}"})
    found = _Found()
    if not console.verbose(sweep.runner_cfg):
        console.capture_driver_warnings()
    try:
        sweep.record_invocation()
    except SweepIOError as exc:
        outcome.message = f"sweep failed: {exc}"
        return say_sweep_failed(outcome)
    try:
        with RaySession(sweep.runner_cfg, on_started=stop.install) as session:
            _run_on_cluster(session, sweep, outcome, found, stop)
    except KeyboardInterrupt:  # StopRequested — or a plain KeyboardInterrupt: Ray re-raises its own
        # when a stop signal lands inside ray.get/ray.wait (e.g. while the actors start)
        if stop.signum is None:
            stop.signum = signal.SIGINT
        # stop.signum says which; the clean-up below is the same for every signal
    except GridError:  # invalid for this cluster (e.g. a device it lacks): leave the dir as it was
        stop.cleanup()
        sweep.undo_invocation()
        raise
    except (SweepError, SweepIOError) as exc:
        outcome.message = f"sweep failed: {exc}"
        outcome.error = exc
    stop.cleanup()  # from here on a signal is acknowledged, never raised: the consolidation happens
    try:
        _consolidate(sweep, outcome, found, stop)
    except SweepIOError as exc:
        outcome.error = outcome.error or exc
        first = f"{outcome.message}; " if outcome.message else "sweep failed: "
        outcome.message = (f"{first}{exc} — finished cells stay in {sweep.out_dir / 'fragments'}; "
                           f"free the space and run: {outcome.resume_command}")
    outcome.wall_seconds = time.time() - t_start
    if outcome.message:  # the sweep itself failed (Ray, actors, gate, its own I/O)
        _say_log_notes(found)
        return say_sweep_failed(outcome)
    if stop.interrupted:
        _say_log_notes(found)
        outcome = say_interrupted(outcome, found.cells)
        outcome.exit_code = stop.exit_code
        return outcome
    stop.reporting()
    report_ok = _report(sweep.cfg, sweep.out_dir, outcome, stop)
    stop.cleanup()
    if stop.interrupted:  # the report was interrupted: the results are complete, the report is not
        outcome.exit_code = stop.exit_code
        outcome.message = (f"report interrupted ({signal_name(stop.signum)}); all results are in {sweep.out_dir}; "
                           f"build the report with: python -m analysis {sweep.out_dir}")
        log.warning(outcome.message)
        return outcome
    say_finished(outcome, found.cells, report_ok)
    _say_log_notes(found)
    _closing(outcome)
    return outcome

def _say_log_notes(found: _Found) -> None:
    for note in found.log_notes:
        log.warning("%s", note)


def _closing(outcome: SweepOutcome) -> None:
    """The verdict table (the report's first screen, from summary.parquet), then where everything is."""
    summary = outcome.report.get("summary")
    if summary:
        try:
            import analysis

            analysis.print_verdict(summary)
        except Exception as exc:  # the files are written; the table is a convenience
            log.warning("verdict table not shown: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
    for name, path in outcome.report.items():
        log.info("%s: %s", name, path)
    logs = outcome.out_dir / console.LOGS_DIR
    if logs.is_dir():
        log.info("framework and Ray output: %s (runner.verbose=true shows it live)", logs)


def _run_on_cluster(session: RaySession, sweep: OpenSweep, outcome: SweepOutcome, found: _Found,
                    stop: StopState) -> None:
    """Slots → devices → the cell plan (manifest) → actors → gate → dispatch."""
    from runner.cell.identity import cell_id

    ray, runner_cfg = session.ray, sweep.runner_cfg
    slots = discover_slots(ray.nodes(), concurrency=int(runner_cfg["concurrency"]),
                           cpus_per_actor=runner_cfg.get("cpus_per_actor"))
    devices = gridlib.resolve_devices(sweep.plan.device_values, inventory(slots))  # GridError ⇒ exit 2
    found.cells = gridlib.interleave(sweep.plan.cells(devices), int(runner_cfg["interleave_seed"]))
    outcome.planned = ids = [cell_id(c) for c in found.cells]
    done_ok = results.ok_cell_ids(sweep.out_dir) if sweep.resuming else set()
    todo = sweep.record_plan(found.cells, ids, devices, done_ok)
    found.env = environment(ray, slots, devices)
    used = [s for s in slots if any(s.accepts(d) for d in devices)]
    outcome.slots = len(used)
    log.info("%d cells (%s) on %d slot(s): %s", len(ids), _grid_summary(sweep.plan, devices), len(used),
             ", ".join(s.label for s in used),
             extra={"console": f"{len(ids)} cells ({_grid_words(sweep.plan, devices)}) on {len(used)} "
                               f"slot{'s' if len(used) != 1 else ''}"
                               + (f"; {len(todo)} to run" if len(todo) != len(ids) else "")})
    if not todo:
        return
    todo_devices = {c["device"] for c in todo}
    log_dir = None if console.verbose(runner_cfg) else sweep.out_dir / console.LOGS_DIR
    pool = ActorPool(ray, [s for s in slots if any(s.accepts(d) for d in todo_devices)], runner_cfg, log_dir=log_dir,
                     arm_envs=sweep.plan.arm_envs)
    dispatcher = Dispatcher(pool, todo, runner_cfg, sweep.sweep_id, sweep.out_dir, found.env["git_sha"])
    extra: list[Dispatcher] = []
    try:
        pool.start(todo, OmegaConf.to_container(sweep.cfg.parity, resolve=True))
        if runner_cfg.get("parity_gate", True):
            found.gate = run_gate(ray, pool.actors, todo, sweep.cfg, runner_cfg)
            with sweep_io("cannot write", sweep.out_dir / PARITY_GATE_FILE):
                atomic_write_json(sweep.out_dir / PARITY_GATE_FILE, found.gate.to_dict())
            check_gate(found.gate, sweep.cfg, runner_cfg)
        with stop.dispatching():
            dispatcher.run(stop)
            if adaptive.settings(runner_cfg) is not None and not stop.interrupted:
                # runner.target_ci: add seeds while intervals are wide
                def run_cells(cells: list[dict[str, Any]]) -> None:
                    if stop.interrupted:  # stopped during an adaptive round: no further rounds
                        raise StopRequested(signal_name(stop.signum))
                    found.cells += cells
                    outcome.planned += [cell_id(c) for c in cells]
                    extra.append(Dispatcher(pool, cells, runner_cfg, sweep.sweep_id, sweep.out_dir,
                                            found.env["git_sha"]))
                    extra[-1].run(stop)

                found.adaptive = adaptive.add_seeds(sweep, devices, run_cells)
    finally:
        if log_dir is not None:
            found.log_notes = console.collect_actor_logs(pool.actors, sweep.out_dir, ray)
        stop.cleanup()
        pool.stop(kill=not session.started)
        outcome.ran = dispatcher.finished + [c for d in extra for c in d.finished]
        outcome.dispatch_seconds = dispatcher.dispatch_seconds


def _consolidate(sweep: OpenSweep, outcome: SweepOutcome, found: _Found, stop: StopState) -> None:
    """Fragments → the three tables (config, environment and gate in the metadata); manifest closed."""
    gate_file = sweep.out_dir / PARITY_GATE_FILE
    if found.gate is None and gate_file.exists():  # a resume that ran no gate: the earlier invocation's
        try:
            found.gate = GateRecord.from_dict(json.loads(gate_file.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("%s not carried into the results: %s", gate_file, exc)
    interrupted = stop.interrupted
    with sweep_io("cannot read", sweep.out_dir / "fragments"):
        count_cells(outcome, sweep.out_dir)
    complete = not interrupted and not outcome.message and not outcome.missing
    metadata = {"sweep_id": sweep.sweep_id, "config": _resolved(sweep.cfg),
                "overrides": sweep.manifest.get("overrides", []), "environment": found.env,
                "parity_gate": (found.gate or GateRecord.not_run()).to_dict(),
                "cells_planned": len(outcome.planned), "complete": complete}
    if found.adaptive is not None or "adaptive_seeds" in sweep.manifest:
        metadata["adaptive_seeds"] = found.adaptive or sweep.manifest["adaptive_seeds"]
    outcome.files = results.consolidate(sweep.out_dir, metadata=metadata)
    extra: dict[str, Any] = {}
    if interrupted:
        extra.update(signal=signal_name(stop.signum), interrupted_cells=list(stop.in_flight))
    sweep.record_finish(interrupted, len(outcome.ok), len(outcome.failed), len(outcome.missing), **extra)


def _grid_summary(plan: gridlib.GridPlan, devices: Sequence[str]) -> str:
    axes = dict(plan.axes, device=list(devices))
    return " × ".join(f"{len(v)} {a}" for a, v in axes.items())


def _grid_words(plan: gridlib.GridPlan, devices: Sequence[str]) -> str:
    """``3 seeds × 2 frameworks · batch 64 · cpu``: axes with several values counted, single values named."""
    axes = dict(plan.axes, device=list(devices))
    several = [f"{len(v)} {a.replace('batch_size', 'batch size')}{'es' if a == 'batch_size' else 's'}"
               for a, v in axes.items() if len(v) > 1]
    single = [f"batch {v[0]}" if a == "batch_size" else str(v[0]) for a, v in axes.items()
              if len(v) == 1 and a in ("batch_size", "device", "framework")]
    return " · ".join([" × ".join(several)] * bool(several) + single)


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # a value only the cell can resolve: keep the text
        return OmegaConf.to_container(cfg, resolve=False)


def _report(cfg: DictConfig, out_dir: Path, outcome: SweepOutcome, stop: StopState | None = None) -> bool:
    """The analysis report over this sweep's results (``analysis.build_report``); False if it failed."""
    report_cfg = OmegaConf.to_container(cfg.report, resolve=True) if "report" in cfg else {}
    if not report_cfg.get("enabled", True):
        return True
    try:
        import analysis

        build_report = analysis.build_report
    except Exception as exc:  # our own package: a broken install is a failed report step, never a silent skip
        log.error("report failed: the analysis package cannot be loaded: %s: %s", type(exc).__name__,
                  " ".join(str(exc).split()))
        return False
    if not outcome.ok:
        log.info("report: no ok cells; skipped")
        return True
    # The report is built in a worker thread while this (main) thread only waits: a stop signal then
    # lands here, in the wait below — never inside the report's own code (a finaliser, a library's
    # callback), where it could print a traceback. The abandoned daemon thread ends with the process;
    # the report's files are written atomically, so none is left half-written.
    done: dict[str, Any] = {}

    def build() -> None:
        try:
            done["report"] = dict(build_report([out_dir], out_dir, report_cfg))
        except BaseException as exc:  # handed to the main thread
            done["error"], done["trace"] = exc, traceback.format_exc()

    try:  # the announcement inside the try: a signal right after it must land in the handler below
        log.info("report: building it from %s (a stop signal skips it; the results are complete)", out_dir)
        worker = threading.Thread(target=build, name="report", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:  # a stop signal (or Ctrl-C) during the report: no traceback, run_sweep says how
        if stop is not None and stop.signum is None:
            stop.signum = signal.SIGINT
        return False
    if "error" in done:  # the results are on disk either way
        exc = done["error"]
        log.error("report failed: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
        log.debug("%s", done["trace"])
        return False
    outcome.report = done["report"]
    return True
