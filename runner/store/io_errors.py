"""The sweep's own I/O failures (disk full, permission denied, output dir vanished) as one line.

Every write of the sweep driver (fragments, the consolidated tables, ``sweep.json``, the gate
record) runs inside ``sweep_io(what, path)``: an ``OSError`` becomes ``SweepIOError`` whose text is
``<what> <path>: <cause>``, e.g. ``cannot write out/runs.parquet: No space left on device (ENOSPC)``.
The sweep then consolidates what it can and exits 1 with that line (``runner.sweep``); the traceback
is shown only with ``runner.debug=true`` or ``HYDRA_FULL_ERROR=1``.
"""
from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class SweepIOError(OSError):
    """An OSError of the sweep's own I/O, with the path and the cause in one line (its text)."""

    def __init__(self, what: str, path: str | Path, exc: BaseException) -> None:
        self.path = Path(path)
        self.cause = io_cause(exc)
        super().__init__(f"{what} {self.path}: {self.cause}")


def io_cause(exc: BaseException) -> str:
    """``No space left on device (ENOSPC)`` — also for pyarrow's OSErrors, which carry the errno in the text."""
    code = getattr(exc, "errno", None)
    if not code:
        found = re.search(r"errno (\d+)", str(exc), re.IGNORECASE)
        code = int(found.group(1)) if found else None
    if code:
        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    return " ".join(str(exc).split()) or type(exc).__name__


@contextmanager
def sweep_io(what: str, path: str | Path) -> Iterator[None]:
    """Any ``OSError`` inside becomes ``SweepIOError("<what> <path>: <cause>")``."""
    try:
        yield
    except SweepIOError:
        raise
    except OSError as exc:
        raise SweepIOError(what, getattr(exc, "filename", None) or path, exc) from exc
