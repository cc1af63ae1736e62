"""Where and with what a cell ran: git SHA, host, library versions, and a clock.

Nothing here may crash a cell: every probe falls back to ``"unknown"``/``None``. A cell's memory is
``runner.cell.memory``.
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from runner import PROJECT_ROOT

#: Distributions recorded in every row besides the framework's own (``Adapter.versions()``).
LIBRARIES = ("numpy", "scikit-learn", "pyarrow", "pandas", "hydra-core", "omegaconf", "ray", "psutil")


@functools.lru_cache(maxsize=None)
def git_sha(root: str | Path = PROJECT_ROOT) -> str:
    """The checkout's commit, with ``-dirty`` when tracked files differ from it.

    Without a ``.git`` (a docker image, an sdist) the image build passes it in ``KVP_GIT_SHA``;
    otherwise ``"unknown"``. Cached per process: a cell must not pay a ``git`` call each time.
    """
    root = Path(root)
    if (root / ".git").exists():
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            if sha:
                return f"{sha}-dirty" if dirty else sha
        except (OSError, subprocess.SubprocessError):
            pass  # no git binary, or not a repository after all: fall through
    return os.environ.get("KVP_GIT_SHA", "").strip() or "unknown"


def host_name() -> str:
    try:
        return socket.gethostname() or "unknown"
    except OSError:
        return "unknown"


@functools.lru_cache(maxsize=None)
def library_versions() -> dict[str, str]:
    """Python, the platform and the installed versions of ``LIBRARIES`` (absent ones are skipped)."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in LIBRARIES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def pinned_versions(pins) -> dict[str, str]:
    """The installed versions of an arm's pinned packages (``core.arms``) as THIS process sees them —
    read where the cell runs, never taken from the pin; a package it cannot find is absent."""
    from core.arms import pin_name

    versions = {}
    for pin in pins or ():
        name = pin_name(str(pin))
        if name is None:
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Stopwatch:
    """Wall-clock timer that waits for queued device work (``sync``) before reading the clock.

    >>> with Stopwatch(adapter.sync) as sw:
    ...     adapter.train_epoch(batches)
    >>> sw.seconds
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self._sync = sync or (lambda: None)
        self.seconds: float = float("nan")
        self._start = 0.0

    def __enter__(self) -> "Stopwatch":
        self._sync()  # earlier queued work must not be charged to this interval
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start
