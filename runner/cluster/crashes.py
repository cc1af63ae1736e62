"""Native crashes of an actor process (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL): where the dump goes
and which signal it was.

Each actor process writes Python's fault handler dump to a node-local file named after its Ray actor
id and pid (``$TMPDIR/kvp-crash/<actor id>.<pid>.txt``) instead of its stderr, so the dump does not
reach the user's console. Ray restarts the actor (``runner.max_actor_restarts``) under the same actor
id; the new process finds its predecessors' non-empty dumps and reports them in ``where()``. The
driver writes each dump to the sweep log only and records the signal with the cell's attempt
(``runs.retry_causes``). A ``kill -9`` (or the OOM killer) leaves no dump: its signal is recorded as
unknown.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

#: Fault-handler headers → the signal (``Fatal Python error: Segmentation fault``).
_HEADERS = {"segmentation fault": "SIGSEGV", "aborted": "SIGABRT", "bus error": "SIGBUS",
            "floating point exception": "SIGFPE", "illegal instruction": "SIGILL"}
_MAX_DUMP = 20_000


def crash_dir() -> Path:
    return Path(tempfile.gettempdir()) / "kvp-crash"


def _actor_id() -> str:
    try:
        import ray

        if not ray.is_initialized():  # get_runtime_context() would join whatever Ray /tmp/ray points at
            return f"pid{os.getpid()}"
        return ray.get_runtime_context().get_actor_id() or f"pid{os.getpid()}"
    except Exception:  # pragma: no cover - outside Ray
        return f"pid{os.getpid()}"


def enable_crash_dump() -> str | None:
    """Send this process's fatal-signal dump to its own file; returns the file's path (None if impossible)."""
    import faulthandler

    try:
        root = crash_dir()
        root.mkdir(parents=True, exist_ok=True)
        _prune(root)
        path = root / f"{_actor_id()}.{os.getpid()}.txt"
        handle = open(path, "w")  # kept open for the process's life (faulthandler writes to its fd)
        faulthandler.enable(file=handle, all_threads=True)
        globals()["_HANDLE"] = handle
        return str(path)
    except OSError:
        return None


def _prune(root: Path) -> None:
    """Empty dumps of processes that are gone (actors ended normally) are removed."""
    for path in root.glob("*.txt"):
        pid = path.name.split(".")[1] if path.name.count(".") >= 2 else ""
        try:
            if pid.isdigit() and not Path(f"/proc/{pid}").exists() and path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass


def signal_of(dump: str) -> str | None:
    found = re.search(r"Fatal Python error: ([^\n]+)", dump)
    if not found:
        return None
    text = found.group(1).strip().lower()
    return next((sig for key, sig in _HEADERS.items() if key in text), None)


def collect_crashes(own_dump: str | None) -> list[dict[str, Any]]:
    """Dumps of earlier processes of this actor (same actor id, another pid); each reported once."""
    if not own_dump:
        return []
    own = Path(own_dump)
    prefix = own.name.split(".")[0] + "."
    found = []
    for path in sorted(own.parent.glob(prefix + "*.txt")):
        if path == own:
            continue
        try:
            text = path.read_text(errors="replace")[:_MAX_DUMP]
            path.unlink()
        except OSError:
            continue
        if text.strip():
            found.append({"pid": int(path.name.split(".")[1]) if path.name.split(".")[1].isdigit() else None,
                          "signal": signal_of(text), "dump": text})
    return found
