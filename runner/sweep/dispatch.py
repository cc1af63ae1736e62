"""Dispatch: cells leave a queue onto idle slots, results come back and are written at once, a
cell whose actor died is retried.

Cells leave the queue in the order given (seeded, framework-interleaved: ``runner.planning.grid.interleave``).
The driver holds a per-slot lock, so one timing cell runs per device at a time. Each result travels
back to the driver, which writes it at once as an atomic fragment (no shared filesystem needed). A
dead actor (kill -9, OOM) is restarted by Ray and its cell retried up to ``runner.max_retries``
times; a cell that raised outside ``run_cell``'s own guard is recorded as failed, not retried.

**Pairs on one device.** The cells of one condition (``runner.planning.grid.condition_key``: everything but
the framework) are the pair the analysis compares. The first of them to start pins the condition
to its slot; the others run on that slot too (the same physical GPU: node + bundle), waiting for it
if busy. If that slot is lost (its node left), the rest go to a slot of the same accelerator type;
if there is none, to any slot that accepts them, and the condition's finished cells are re-run
there so the pair still shares one accelerator type (``accelerator_type`` in the rows).

**Nodes come and go.** Every ``REDISCOVER_S`` seconds the driver reads ``ray.nodes()`` again: the
slots of a node that joined are reserved and used once their actors answer; a node that died is
retired (its actors killed, its bundles released), its running cells retried elsewhere with the
reason, and queued cells that nothing can run any more get a failed row saying why.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.arms import arm_of
from core.text import one_line
from runner.planning import grid as gridlib
from runner.store import fragments as results
from runner.cluster.actors import ActorPool, ActorRecord
from runner.cell.identity import cell_label, cell_words
from runner.console.progress import ProgressState, fmt_seconds, progress_view
from runner.cluster.slots import Slot, discover_slots

log = logging.getLogger("runner.sweep")

#: Seconds between two reads of the cluster's nodes (joined nodes get slots, lost ones are retired).
REDISCOVER_S = 5.0


@dataclass
class _Queued:
    cell: dict[str, Any]
    cell_id: str
    attempt: int = 1
    errors: list[str] = field(default_factory=list)
    causes: list[dict[str, Any]] = field(default_factory=list)  # earlier attempts' deaths (runs.retry_causes)


@dataclass
class _Running:
    item: _Queued
    actor: ActorRecord
    slot: Slot
    start: float
    start_utc: datetime


class Dispatcher:
    """Owns the queue, the per-slot locks and the retries; writes each result as it arrives."""

    def __init__(self, pool: ActorPool, cells: Sequence[dict[str, Any]], runner_cfg: Mapping[str, Any],
                 sweep_id: str, out_dir: Path, git_sha: str) -> None:
        from runner.cell.identity import cell_id

        self.ray = pool.ray
        self.pool = pool
        self.runner_cfg = runner_cfg
        self.sweep_id = sweep_id
        self.out_dir = out_dir
        self.git_sha = git_sha
        self.queue = [_Queued(c, cell_id(c)) for c in cells]
        self.condition = {q.cell_id: gridlib.condition_key(q.cell) for q in self.queue}
        self.pinned: dict[str, Slot] = {}  # condition → the slot its cells run on
        self.done: dict[str, list[tuple[_Queued, Slot]]] = {}  # condition → its finished cells and their slot
        self.next_discovery = time.time() + REDISCOVER_S
        self.held: dict[str, str] = {}  # lock → slot key holding it
        self.running: dict[Any, _Running] = {}  # ObjectRef → what runs
        self.finished: list[str] = []
        self.max_retries = int(runner_cfg["max_retries"])
        self.first_dispatch: float | None = None
        self.last_result: float | None = None
        self.state = ProgressState(total=len(self.queue), slots=len(pool.slots))
        for q in self.queue:
            self.state.queued(arm_of(q.cell["framework"]))

    @property
    def slots(self) -> list[Slot]:
        return self.pool.slots

    @property
    def dispatch_seconds(self) -> float:
        if self.first_dispatch is None or self.last_result is None:
            return 0.0
        return self.last_result - self.first_dispatch

    # ---- the loop --------------------------------------------------------------------------
    def run(self, stop: Any = None) -> None:
        """Until every cell has a result — or ``stop.stopping`` (a stop signal; ``runner.sweep.stopping``):
        then nothing new is dispatched and the cells in flight get ``runner.stop_grace_s`` to finish."""
        pool = self.pool
        self.stop = stop
        grace = float(self.runner_cfg.get("stop_grace_s", 5.0))
        stopped_at: float | None = None
        with progress_view(self.state, bool(self.runner_cfg.get("progress", True))) as view:
            while self.queue or self.running:
                if self._stopping:
                    if stopped_at is None:
                        stopped_at = time.time()
                        self.queue.clear()  # not started: missing, the resume runs them
                    if not self.running or stop.grace_over(stopped_at, grace):
                        self._abandon_in_flight(stop)
                        break
                if time.time() >= self.next_discovery:
                    self._rediscover()
                pool.submit_due_probes()
                self._dispatch()
                waitable = list(self.running) + list(pool.probes)
                if not waitable:
                    if pool.reprobe:  # an actor is restarting: ask again shortly
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
                    if ref in pool.probes:
                        pool.placed(pool.probes.pop(ref), ref)
                        continue
                    run = self.running.pop(ref)
                    out, error = self._fetch(ref)
                    if error is not None and not isinstance(error, self.ray.exceptions.RayTaskError):
                        # The process died: no cell goes to this actor until Ray has restarted it.
                        pool.probe(run.actor)
                    self._release(run)
                    self._dispatch()  # the slot is free: keep it busy before writing the result
                    self._collect(run, out, error)
                view.update()

    @property
    def _stopping(self) -> bool:
        stop = getattr(self, "stop", None)
        return stop is not None and stop.stopping

    def _abandon_in_flight(self, stop: Any) -> None:
        """Cells still running when the grace period ends: named, no row (the resume runs them)."""
        for run in self.running.values():
            stop.in_flight.append(run.item.cell_id)
            log.warning("interrupted in flight: %s on %s (attempt %d) — no row; the resume runs it",
                        cell_label(run.item.cell), run.actor.label, run.item.attempt)
        self.running.clear()

    # ---- nodes joining and leaving ---------------------------------------------------------------
    def _rediscover(self) -> None:
        """Retire the slots of lost nodes; reserve slots on nodes that joined (used once placed)."""
        self.next_discovery = time.time() + REDISCOVER_S
        try:
            nodes = self.ray.nodes()
        except Exception as exc:  # the head is busy or going: try again next round
            log.warning("could not list the cluster's nodes: %s", one_line(exc))
            return
        alive = {n["NodeID"] for n in nodes if n.get("Alive", True)}
        for node_id in sorted({s.node_id for s in self.slots} - alive - set(self.pool.lost)):
            info = next((n for n in nodes if n["NodeID"] == node_id), {})
            slot = next(s for s in self.slots if s.node_id == node_id)
            why = (f"node {slot.host} ({info.get('NodeManagerAddress') or slot.node_ip}, id {node_id[:12]}) was lost"
                   + (f": {_squash(info['DeathReasonMessage'])}" if info.get("DeathReasonMessage") else ""))
            log.error("%s; its running cells are retried elsewhere", why)
            self.pool.node_lost(node_id, why)
        added = self.pool.add_slots(discover_slots(nodes, concurrency=int(self.runner_cfg["concurrency"]),
                                                   cpus_per_actor=self.runner_cfg.get("cpus_per_actor")))
        if added:
            self.state.slots = len(self.slots)

    # ---- dispatch ----------------------------------------------------------------------------
    def _idle(self, slot: Slot) -> bool:
        return not any(lock in self.held for lock in slot.locks)

    def _candidates(self, item: _Queued) -> list[ActorRecord]:
        """The actors that may run ``item``: on its condition's slot if pinned (see the module doc)."""
        fw, device = arm_of(item.cell["framework"]), item.cell["device"]  # an arm runs on its own actors
        able = [a for a in self.pool.actors if a.usable and a.framework == fw and a.slot.accepts(device)]
        pin = self.pinned.get(self.condition[item.cell_id])
        if pin is None:
            return able
        same_slot = [a for a in able if a.slot.key == pin.key]
        if same_slot:
            return same_slot  # wait for the pair's slot (even while it restarts its actor)
        same_type = [a for a in able if (a.slot.kind, a.slot.accelerator_type) == (pin.kind, pin.accelerator_type)]
        return same_type or able

    def _dispatch(self) -> None:
        if self._stopping:
            return
        for item in list(self.queue):
            if all(not self._idle(s) for s in self.slots):
                return
            candidates = self._candidates(item)
            if not candidates:  # every actor that could run it is gone for good
                self.queue.remove(item)
                lost = "; ".join(self.pool.lost.values())
                self._record_failure(item, None, None, "no live actor for framework "
                                     f"{arm_of(item.cell['framework'])} on device {item.cell['device']}"
                                     + (f" ({lost})" if lost else "") + ": "
                                     + ("; ".join(item.errors[-1:]) or "never started"))
                continue
            actor = next((a for a in candidates if a.state == "ready" and self._idle(a.slot)), None)
            if actor is None:
                continue
            self.queue.remove(item)
            self._pin(item, actor.slot)
            self._start(item, actor)

    def _pin(self, item: _Queued, slot: Slot) -> None:
        """Pin ``item``'s condition to ``slot``; finished cells of it on another accelerator type are re-run."""
        key = self.condition[item.cell_id]
        old = self.pinned.get(key)
        self.pinned[key] = slot
        if old is None or old.key == slot.key:
            return
        why = self.pool.lost.get(old.node_id, f"slot {old.label} unavailable")
        log.warning("condition of %s moves from %s to %s: %s", item.cell_id, old.label, slot.label, why)
        if (old.kind, old.accelerator_type) == (slot.kind, slot.accelerator_type):
            return
        for done, _ in self.done.pop(key, []):  # keep the pair on one accelerator type
            done.attempt += 1
            done.errors.append(f"re-run on {slot.label} ({slot.accelerator_type or slot.kind}) to stay paired: "
                               f"its partner could not run on {old.accelerator_type or old.kind} any more ({why})")
            log.warning("re-running %s on %s: %s", done.cell_id, slot.label, done.errors[-1])
            self.finished.remove(done.cell_id)
            self.state.total += 1
            self.state.queued(arm_of(done.cell["framework"]))
            self.queue.insert(0, done)

    def _start(self, item: _Queued, actor: ActorRecord) -> None:
        slot = actor.slot
        for lock in slot.locks:
            self.held[lock] = slot.key
        # Where the node is as the cluster knows it (ray.nodes()); the actor's own guess of its IP can
        # be another interface of the machine.
        context = {"attempt": item.attempt, "concurrency": slot.concurrency,
                   "accelerator_type": slot.accelerator_type, "node_ip": slot.node_ip}
        ref = actor.handle.run.remote(item.cell, self.sweep_id, context)
        now = time.time()
        self.first_dispatch = self.first_dispatch or now
        self.running[ref] = _Running(item, actor, slot, now, datetime.now(timezone.utc))
        words = cell_words(item.cell)
        self.state.running[actor.label] = (words, now, actor.framework)
        log.info("start %s on %s (attempt %d)", cell_label(item.cell), actor.label, item.attempt,
                 extra={"console": f"start   {words}" + (f" (attempt {item.attempt})" if item.attempt > 1 else "")})

    def _release(self, run: _Running) -> None:
        for lock in run.slot.locks:
            if self.held.get(lock) == run.slot.key:
                del self.held[lock]
        self.state.running.pop(run.actor.label, None)

    # ---- results -----------------------------------------------------------------------------
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
            self._record_failure(item, run, seconds, one_line(cause, 100_000), tb=str(error))
            return
        if error is not None:  # the process died (kill -9, OOM, node lost)
            self._retry_or_fail(item, run, seconds, error)
            return
        assert out is not None
        tables = out["tables"]
        for row in tables.get("runs", []):
            # The runner owns these columns: they describe where/how the cell ran, not what it computed.
            row.update(attempt=item.attempt, concurrency=run.slot.concurrency, retry_causes=_causes_json(item))
        results.write_fragment(self.out_dir, out["cell_id"], tables, metadata={"sweep_id": self.sweep_id})
        self.finished.append(out["cell_id"])
        self.done.setdefault(self.condition[item.cell_id], []).append((item, run.slot))
        if out["status"] == "ok":
            self.state.done_ok += 1
        else:
            self.state.failed += 1
        self.state.finished(arm_of(item.cell["framework"]), run.actor.label, seconds)
        log.info("finish %s on %s: %s in %.1fs%s", cell_label(item.cell), run.actor.label, out["status"], seconds,
                 f" — {out['error']}" if out.get("error") else "",
                 extra={"console": f"{out['status']:<7} {cell_words(item.cell)} in {seconds:.1f} s{self._progress_words()}"
                        + (f" — {_squash(out['error'], 200)}" if out.get("error") else "")})

    def _progress_words(self) -> str:
        """`` · 3/6 · ETA 0m40s`` for a finish line."""
        eta = self.state.eta_seconds()
        done = f" · {self.state.done}/{self.state.total}"
        return done + (f" · ETA {fmt_seconds(eta)}" if eta is not None and self.state.done < self.state.total else "")

    def _retry_or_fail(self, item: _Queued, run: _Running, seconds: float, error: BaseException) -> None:
        lost = self.pool.lost.get(run.slot.node_id)
        message = (f"actor {run.actor.label} died during attempt {item.attempt}"
                   + (f" ({lost})" if lost else "") + f": {one_line(error, 100_000)}")
        item.errors.append(message)
        cause = {"attempt": item.attempt, "actor": run.actor.label, "pid": run.actor.where.get("pid"),
                 "signal": None, "error": one_line(error, 300)}
        item.causes.append(cause)
        run.actor.pending_causes.append(cause)  # the restarted actor says which signal (runner.cluster.crashes)
        run.actor.restarts += 1
        if self._stopping:  # no retry while stopping: the cell is missing, the resume runs it
            if self.stop is not None:
                self.stop.in_flight.append(item.cell_id)
            log.warning("%s; not retried while stopping — the resume runs %s", message, item.cell_id)
            return
        if item.attempt <= self.max_retries:
            log.warning("%s; retrying %s (attempt %d of %d)", message, item.cell_id, item.attempt + 1,
                        self.max_retries + 1)
            item.attempt += 1
            self.state.retries += 1
            self.queue.insert(0, item)  # next in line, so it stays near its interleaved block
        else:
            self._record_failure(item, run, seconds, f"gave up after {item.attempt} attempt(s): {message}")

    def _record_failure(self, item: _Queued, run: _Running | None, seconds: float | None, error: str,
                        tb: str | None = None) -> None:
        where = dict(run.actor.where, accelerator_type=run.slot.accelerator_type, node_ip=run.slot.node_ip) if run else {}
        row = failed_row(item.cell, self.sweep_id, error, tb or "\n".join(item.errors), item.attempt,
                         run.slot.concurrency if run else None, run.start_utc if run else None,
                         where, self.git_sha)
        row["retry_causes"] = _causes_json(item)
        results.write_fragment(self.out_dir, item.cell_id, {"runs": [row]}, metadata={"sweep_id": self.sweep_id})
        self.finished.append(item.cell_id)
        self.state.failed += 1
        self.state.finished(arm_of(item.cell["framework"]), run.actor.label if run else "", seconds)
        log.error("finish %s: failed — %s", cell_label(item.cell), _squash(error, 300),
                  extra={"console": f"failed  {cell_words(item.cell)}{self._progress_words()} — {_squash(error, 200)}"})


def _squash(text: str, limit: int = 1000) -> str:
    """``text`` on one line for the console (the row keeps it whole)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _causes_json(item: _Queued) -> str | None:
    """Earlier attempts' deaths as JSON: attempt, actor, pid, signal (null: no dump — kill -9/OOM), error."""
    return json.dumps(item.causes) if item.causes else None


def failed_row(cell: Mapping[str, Any], sweep_id: str, error: str, tb: str, attempt: int, concurrency: int | None,
               start: datetime | None, where: Mapping[str, Any], git_sha: str) -> dict[str, Any]:
    """A ``runs`` row for a cell that produced no row of its own (its actor died, or it never started).

    ``where``: what the cell's actor reported (node, host, GPU, the code version it imported); a cell
    that never reached an actor gets the driver's ``git_sha``.
    """
    from runner.cell.identity import cell_id, config_hash

    parity = cell.get("parity", {})
    gpu_ids = where.get("gpu_ids") or []
    return {
        "sweep_id": sweep_id, "cell_id": cell_id(cell), "config_hash": config_hash(cell),
        "framework": cell["framework"].get("name"), "backend": cell["framework"].get("backend"),
        "packages": ",".join(sorted(cell["framework"].get("packages") or ())) or None,
        "model": gridlib.model_name(cell["model"]), "data": cell["data"].get("name"),
        "seed": int(cell["seed"]), "batch_size": int(cell["train"]["batch_size"]),
        "epochs": cell["train"].get("epochs"), "device": str(cell["device"]),
        "device_kind": "gpu" if str(cell["device"]).startswith("gpu") else "cpu",
        "precision_policy": parity.get("precision"), "execution_mode": parity.get("execution"),
        "pipeline": (cell["train"].get("pipeline") or {}).get("name"), "deterministic": parity.get("deterministic"),
        "parity_mode": parity.get("mode"), "cpu_threads": parity.get("cpu_threads"),
        "attempt": attempt, "concurrency": concurrency, "host": where.get("host"), "node_id": where.get("node_id"),
        "node_ip": where.get("node_ip"), "gpu_index": gpu_ids[0] if gpu_ids else None,
        "gpu_uuid": where.get("gpu_uuid"), "accelerator_type": where.get("accelerator_type"),
        "git_sha": where.get("git_sha") or git_sha,
        "start_time": start, "end_time": datetime.now(timezone.utc) if start else None,
        "status": "failed", "error": error, "traceback": tb or None,
    }
