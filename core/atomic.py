"""Atomic file writes: write a temporary sibling, then ``os.replace`` — a reader (or a crash) never
sees a half-written file. The one helper every writer of this project uses."""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``, else it is removed.

    For writers that want a file name (``pyarrow.parquet.write_table(table, tmp)``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, fsync: bool = False) -> None:
    """``write(handle)`` into a temporary sibling, optionally ``fsync``, then replace ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj: Any, **dumps: Any) -> None:
    """``obj`` as indented JSON (keys sorted, numpy values and paths as plain values)."""
    dumps = {"indent": 2, "sort_keys": True, "default": json_default, **dumps}
    atomic_write_text(path, json.dumps(obj, **dumps) + "\n")


def json_default(obj: Any) -> Any:
    """numpy arrays/scalars → lists/numbers; anything else → its ``str``."""
    try:
        import numpy as np

        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)
