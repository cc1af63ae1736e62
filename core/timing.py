"""The one repeat rule of every inference timing: untimed warm-up calls, then timed calls driven by time.

Used by the cell's in-framework latency and throughput (``runner.cell.run``) and by the serving process
that times an exported artifact (``frameworks.serving``), so both obey exactly the same rule
(``train.inference``). numpy only: the serving process must not pay for anything it does not serve with.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np


def timed_calls(call: Callable[[], Any], *, warmup_calls: int, min_calls: int, min_seconds: float,
                max_seconds: float, sync: Callable[[], None] | None = None) -> np.ndarray:
    """Seconds of each timed ``call()`` (clock read after ``sync``), after ``warmup_calls`` untimed ones;
    calls continue until ``min_calls`` and ``min_seconds`` are both reached, or ``max_seconds`` has passed
    (at least one call is always timed)."""
    sync = sync or (lambda: None)
    for _ in range(warmup_calls):
        call()
    sync()
    times: list[float] = []
    total = 0.0
    while True:
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
        total += times[-1]
        enough = len(times) >= min_calls and total >= min_seconds
        if enough or total >= max_seconds:
            return np.asarray(times)


def calls_needed(q: float) -> int:
    """Timed calls a ``q`` percentile (q ≥ 0.5) needs: one call beyond it on average, 1 / (1 − q) — a p99 of 20
    calls would be their maximum, not a 99th percentile."""
    return int(math.ceil(1.0 / (1.0 - q) - 1e-9))


def percentiles(values: np.ndarray, columns: dict[str, float], what: str) -> tuple[dict[str, float | None], dict[str, str]]:
    """``({column: q-th percentile of values}, {column: why not})``: a percentile in a tail (q < 50 or q > 50)
    needs ``calls_needed`` calls, else its column is None and the second dict says why."""
    values = np.asarray(values)
    out: dict[str, float | None] = {}
    why: dict[str, str] = {}
    for column, q in columns.items():
        needed = calls_needed(max(q, 100.0 - q) / 100.0)
        if values.size >= needed:
            out[column] = float(np.percentile(values, q))
        else:
            out[column] = None
            why[column] = (f"not measured: {values.size} timed {what} calls cannot estimate a {q:g}th "
                           f"percentile (needs ≥ {needed}; raise train.inference.min_calls or min_seconds)")
    return out, why


def latency_summary(seconds: np.ndarray) -> tuple[dict[str, float | int | None], dict[str, str]]:
    """Batch-1 latency percentiles in ms and the call count (the ``latency_*`` columns), and why a percentile
    the calls cannot support is None."""
    ms = np.asarray(seconds) * 1e3
    out, why = percentiles(ms, {"latency_p50_ms": 50, "latency_p90_ms": 90, "latency_p99_ms": 99}, "batch-1")
    return {**out, "latency_calls": int(ms.size)}, why


def throughput_summary(seconds: np.ndarray, batch_size: int) -> tuple[dict[str, float | int | None], dict[str, str]]:
    """Images/s median and p10/p90 over calls of ``batch_size`` images and the call count, and why a
    percentile the calls cannot support is None."""
    rates = batch_size / np.maximum(np.asarray(seconds), 1e-12)
    out, why = percentiles(rates, {"throughput_images_per_second": 50, "throughput_images_per_second_p10": 10,
                                   "throughput_images_per_second_p90": 90}, "throughput")
    return {**out, "throughput_calls": int(rates.size)}, why
