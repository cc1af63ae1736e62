"""Hardware-dependent choices measured, not ruled: each candidate timed on this device, the fastest kept.

Which memory layout is fastest depends on the machine (on one Intel Xeon PyTorch's channels_last
trained 1.35× faster than the contiguous layout a static rule picked; on an AMD EPYC the opposite), so
a framework run "at its best on the device" cannot take it from a rule. Every knob an adapter leaves to
measurement (``Adapter.tunables()``: the config says ``auto``) is timed before the first timed cell of
a condition, with the same procedure for every framework — whatever one side gets tuned, the other
gets the same chance:

- for each candidate, in the order A B B A (so drift over the measurement favours neither): build the
  cell's model in that candidate (``Adapter.use`` + ``build``, the cell's ported weights), run
  ``WARMUP_STEPS`` untimed training steps (compilation, autotuning, allocator growth), then time
  ``TIMED_STEPS`` steps on the cell's own epoch-1 batches (synchronised before and after);
- the candidate with the smaller median seconds per step is kept (``Adapter.use``); its model is then
  rebuilt from the same ported weights by the cell itself, so no timed second of the cell sees a step
  of the tuning.

The choice is cached per (framework, device, model shapes, batch size, execution, precision, pipeline)
in the actor, so the other seeds of a condition reuse it (the row says which cell measured it). Every
row records the choice and each candidate's seconds per step (``runs.tuning``); the report's parity
audit shows them.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np

WARMUP_STEPS = 2
TIMED_STEPS = 4


def _plan(batches: Any, start: int, steps: int) -> Any:
    """``steps`` full batches of ``batches`` from sample ``start`` on (the epoch's samples repeated if short)."""
    n = steps * batches.batch_size
    idx = np.resize(np.arange(len(batches.order)), start + n)[start:]
    return dataclasses.replace(batches, order=batches.order[idx], hflip=batches.hflip[idx],
                               vflip=batches.vflip[idx], rot90=batches.rot90[idx])


def trial_order(candidates: tuple[str, ...]) -> list[str]:
    """Each candidate twice, mirrored: A B B A (A B C C B A for three)."""
    return [*candidates, *reversed(candidates)]


def measure(adapter: Any, spec: Any, train: Any, weights: Any, seed: int, batches: Any) -> dict[str, Any]:
    """Time every candidate of every tunable knob of ``adapter`` (module doc) and ``use`` the fastest.

    Returns ``{knob: {"choice", "seconds_per_step": {candidate: median}, "trials": {candidate: [s/step…]},
    "warmup_steps", "timed_steps"}}``; empty when the adapter leaves nothing to measurement."""
    out: dict[str, Any] = {}
    warm = _plan(batches, 0, WARMUP_STEPS)
    timed = _plan(batches, WARMUP_STEPS * batches.batch_size, TIMED_STEPS)
    for knob, candidates in adapter.tunables().items():
        trials: dict[str, list[float]] = {c: [] for c in candidates}
        for candidate in trial_order(tuple(candidates)):
            adapter.use(knob, candidate)
            adapter.build(spec, train, weights, seed)
            adapter.train_epoch(warm)
            adapter.sync()
            t0 = time.perf_counter()
            stats = adapter.train_epoch(timed)
            adapter.sync()
            trials[candidate].append((time.perf_counter() - t0) / max(stats.steps, 1))
        medians = {c: statistics.median(v) for c, v in trials.items()}
        choice = min(candidates, key=lambda c: medians[c])
        adapter.use(knob, choice)
        out[knob] = {"choice": choice, "seconds_per_step": medians, "trials": trials,
                     "warmup_steps": WARMUP_STEPS, "timed_steps": TIMED_STEPS}
    return out


def apply(adapter: Any, measured: dict[str, Any]) -> None:
    """Use the choices of an earlier measurement (another seed of the same condition)."""
    for knob, result in measured.items():
        adapter.use(knob, result["choice"])
