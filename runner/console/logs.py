"""Quiet by default, complete on disk: what reaches the console, and where the rest goes.

The console shows the live progress and the outcome. Framework and Ray chatter — TensorFlow's
oneDNN/cudart/cuInit notices, absl, ``tf.function`` retracing warnings, Ray's start-up notices, a
worker's crash dump — goes to files in the sweep's output dir:

- ``logs/<framework>@<slot>.log``: everything an actor process writes (its fd 1 and 2, C++ included),
  with a ``=== cell <id> …`` line before each cell, so a cell's output is found by its id;
- the driver's Ray start-up notices are left out of the console (``logging_level=ERROR``,
  ``log_to_driver=False``); Ray's own session logs stay where Ray keeps them.

After the sweep, lines that need the user (a crashed worker, out of memory) are summarised on the
console in one line each, with the log file to read. ``runner.verbose=true`` restores everything:
no redirection, Ray's worker output streamed to the driver as Ray does by default.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger("runner.sweep")

LOGS_DIR = "logs"

#: Lines in an actor's log that the user must know about (the rest is noise kept on disk).
NEEDS_THE_USER = re.compile(r"Fatal Python error|Segmentation fault|SIGSEGV|SIGABRT|core dumped|MemoryError"
                            r"|[Oo]ut of memory|OOM|Killed|ResourceExhaustedError|CUDA out of memory")


def verbose(runner_cfg: Mapping[str, Any]) -> bool:
    return bool(runner_cfg.get("verbose", False))


def ray_init_kwargs(runner_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``ray.init`` arguments for the console policy: quiet unless ``runner.verbose``."""
    if verbose(runner_cfg):
        return {"logging_level": logging.WARNING, "log_to_driver": True}
    return {"logging_level": logging.ERROR, "log_to_driver": False}


def log_name(label: str) -> str:
    """A file name for an actor label such as ``keras@cpu:node1``."""
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", label) + ".log"


def redirect_process_output(path: str | os.PathLike) -> Path:
    """Point this process's fd 1 and 2 (Python and C/C++ writers alike) at ``path`` (appended).

    Falls back to a temporary directory when ``path``'s folder cannot be created (an actor on another
    node than the driver); returns the file actually used."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        import tempfile

        target = Path(tempfile.gettempdir()) / "kvp-bench-logs" / target.name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover - a closed stream
            pass
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return target


def capture_driver_warnings() -> None:
    """Python warnings of the driver (pandas, matplotlib, …) go to the sweep's log file, not the console."""
    logging.captureWarnings(True)
    py = logging.getLogger("py.warnings")
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if files:
        for h in files:
            if h not in py.handlers:
                py.addHandler(h)
        py.propagate = False


def collect_actor_logs(actors: Iterable[Any], out_dir: Path, ray=None) -> list[str]:
    """Make sure every actor's log is in ``out_dir/logs`` (ask a remote actor for it) and return one
    line per log that has something the user must read."""
    logs = Path(out_dir) / LOGS_DIR
    notes = []
    for actor in actors:
        path = logs / log_name(actor.label)
        if not path.is_file() and ray is not None and actor.state in ("ready", "starting", "probing"):
            try:  # the actor ran on another node: its log is there
                text = ray.get(actor.handle.read_log.remote(), timeout=30)
                if text:
                    logs.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
            except Exception:
                pass
        if not path.is_file():
            continue
        hits = [line.strip() for line in path.read_text(errors="replace").splitlines() if NEEDS_THE_USER.search(line)]
        if hits:
            notes.append(f"{actor.label}: {hits[0][:160]}" + (f" (+{len(hits) - 1} more)" if len(hits) > 1 else "")
                         + f" — see {path}")
    return notes
