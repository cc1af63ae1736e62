"""The one repeat rule of every inference timing: untimed warm-up calls, then timed calls driven by time.

Used by the cell's in-framework latency and throughput (``runner.cell.run``) and by the serving process
that times an exported artifact (``frameworks.serving``), so both obey exactly the same rule
(``train.inference``). numpy only: the serving process must not pay for anything it does not serve with.
"""
from __future__ import annotations

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


def latency_summary(seconds: np.ndarray) -> dict[str, float | int]:
    """Batch-1 latency percentiles in ms and the call count (the ``latency_*`` columns)."""
    ms = np.asarray(seconds) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"latency_p50_ms": float(p50), "latency_p90_ms": float(p90), "latency_p99_ms": float(p99),
            "latency_calls": int(ms.size)}


def throughput_summary(seconds: np.ndarray, batch_size: int) -> dict[str, float | int]:
    """Images/s median and p10/p90 over calls of ``batch_size`` images, and the call count."""
    rates = batch_size / np.maximum(np.asarray(seconds), 1e-12)
    p10, p50, p90 = np.percentile(rates, [10, 50, 90])
    return {"throughput_images_per_second": float(p50), "throughput_images_per_second_p10": float(p10),
            "throughput_images_per_second_p90": float(p90), "throughput_calls": int(rates.size)}
