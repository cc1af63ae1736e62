"""This process as Linux reports it: its resident memory now and at its peak, and dying with its parent.

Standard library only, so the cell's actor (``runner.cell.memory``), the fresh memory probe
(``runner.cell.probe``), the local Ray head (``runner.cluster.local_head``) and the serving process
(``frameworks.serving``, which must load nothing it does not serve with) read and arm the same things.
"""
from __future__ import annotations

import signal
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mib() -> float | None:
    """This process's resident set size now (Linux VmRSS), MiB; None where the kernel does not say."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024.0


def peak_rss_mib() -> float | None:
    """The kernel's high-water mark of this process's RSS (VmHWM: since its start, or since the last reset
    through ``/proc/self/clear_refs``), MiB; None where the kernel does not say. Not ``ru_maxrss``, which
    survives ``exec`` and so reports the parent's RSS at fork time for a small child."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 1024.0


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send this process ``sig`` when its parent dies (Linux ``PR_SET_PDEATHSIG``); safe in
    a ``preexec_fn``. ``False`` where it could not be armed (not Linux, no libc)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(1, int(sig)) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False
