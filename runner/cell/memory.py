"""A cell's memory, measured so that it means one thing whatever ran before it in the process.

A Ray actor runs many cells in one long-lived process. A peak resident-set size read there depends on
what earlier cells left behind: allocator caches, compiled graphs, a device copy of the data — the
"Leaner" verdict changed between two identical runs for that reason. So every cell measures from the
same starting state (``CellMemory.start``):

1. the adapter drops what an earlier cell left (``Adapter.release``: model, optimizer, compiled
   functions, the device copy of the data, loader workers); then ``free_unused`` collects garbage and
   hands freed heap pages back to the kernel (glibc ``malloc_trim``);
2. the dataset's images are made resident (every page of the memory-mapped cache touched), so no cell
   pays for the pages another cell read first;
3. the snapshot: ``host_rss_at_start_mib`` (VmRSS: the framework runtime + the data) and
   ``device_memory_at_start_mib``; then the kernel's high-water mark (VmHWM) and the framework's device
   peak counter are reset.

``CellMemory.finish`` reads the peaks: ``peak_host_rss_mib`` (the process's peak during the cell) and
``peak_host_rss_above_start_mib`` = that peak − the footprint at start: the memory this cell's model,
optimizer, activations, data pipeline and inference needed on top of the runtime — the "Leaner"
metric (``analysis/metrics.py`` says why). Device memory likewise. The VmHWM reset is Linux's
``/proc/self/clear_refs`` (write ``5``); where it is refused, no per-cell peak exists and the columns
are null with the reason (``unmeasured``) — a process-lifetime peak is never reported as the cell's.
"""
from __future__ import annotations

import ctypes
import gc
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.proc import peak_rss_mib, rss_mib

_CLEAR_REFS = Path("/proc/self/clear_refs")
_PAGE = 4096


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; ``False`` where the kernel does not allow it (then no per-cell peak)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def free_unused() -> None:
    """Collect garbage and return freed heap pages to the kernel (glibc ``malloc_trim``; a no-op elsewhere)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim explicitly
            pass


def make_resident(images: Any) -> None:
    """Touch every page of ``images`` (a memory-mapped cache array), so its pages count before the snapshot."""
    flat = np.asarray(images).reshape(-1)
    if flat.size:
        int(flat[::_PAGE].sum())  # one byte per page faults the whole mapping in


def _mib(value: int | None) -> float | None:
    return None if value is None else value / 2**20


class CellMemory:
    """The memory columns of one cell (see the module doc)."""

    def __init__(self) -> None:
        self.host_start: float | None = None
        self.device_start: int | None = None
        self.host_reset = False

    def start(self, adapter: Any) -> None:
        self.host_start = rss_mib()
        self.host_reset = reset_peak_rss()
        adapter.reset_peak_memory()
        self.device_start = adapter.device_memory_bytes()

    def finish(self, adapter: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """(``runs`` columns, ``{column: why it is null}``)."""
        unmeasured: dict[str, str] = {}
        peak = peak_rss_mib() if self.host_reset else None
        if not self.host_reset:
            why = "not measured: this kernel refuses to reset the peak RSS (/proc/self/clear_refs), so only the " \
                  "process-lifetime peak exists, which is not this cell's"
            unmeasured.update(peak_host_rss_mib=why, peak_host_rss_above_start_mib=why)
        device_peak = adapter.peak_device_memory_bytes()
        if device_peak is None:
            why = ("not measured: no device memory counter on a CPU" if self.device_start is None else
                   "not measured: the framework's peak counter cannot be reset, and this cell did not exceed an "
                   "earlier cell's peak")
            unmeasured.update(peak_device_memory_mib=why, peak_device_memory_above_start_mib=why)
        if self.device_start is None:
            unmeasured["device_memory_at_start_mib"] = "not measured: no device memory counter on a CPU"
        columns = {
            "host_rss_at_start_mib": self.host_start,
            "peak_host_rss_mib": peak,
            "peak_host_rss_above_start_mib": None if peak is None or self.host_start is None
            else max(peak - self.host_start, 0.0),
            "device_memory_at_start_mib": _mib(self.device_start),
            "peak_device_memory_mib": _mib(device_peak),
            "peak_device_memory_above_start_mib": None if device_peak is None or self.device_start is None
            else _mib(max(device_peak - self.device_start, 0)),
        }
        return columns, unmeasured
