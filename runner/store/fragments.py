"""Writing result tables: atomic per-cell fragments, and the sweep's consolidation.

The schemas and the directory layout live in ``core.results`` (the analysis reads them too). A
cell's rows are written as one fragment directory ``fragments/<cell_id>/`` via a temporary
sibling directory + ``os.replace``, so a crash never leaves a half-written fragment;
``consolidate`` turns all fragments into the tables of ``core.results.SCHEMAS``.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import atomic_path
from core.results import FRAGMENTS_DIR, SCHEMAS, encode_metadata, fragment_dirs, to_table
from runner.store.io_errors import sweep_io


def write_fragment(root: str | Path, cell_id: str, tables: Mapping[str, Iterable[Mapping[str, Any]]],
                   metadata: Mapping[str, Any] | None = None) -> Path:
    """Write one cell's rows as ``root/fragments/<cell_id>/<table>.parquet`` (every table of ``SCHEMAS``) atomically.

    The files go to a temporary sibling directory first, which is renamed into place; an earlier
    fragment of the same cell (e.g. a ``failed`` attempt) is replaced whole.
    """
    frag_root = Path(root) / FRAGMENTS_DIR
    final = frag_root / cell_id
    with sweep_io("cannot write", final):
        if not Path(root).is_dir():  # never recreate a vanished output dir behind the user's back
            raise FileNotFoundError(errno.ENOENT, "the output directory vanished", str(root))
        frag_root.mkdir(exist_ok=True)
        return _write_fragment(frag_root, final, cell_id, tables, metadata)


def _write_fragment(frag_root: Path, final: Path, cell_id: str, tables: Mapping[str, Iterable[Mapping[str, Any]]],
                    metadata: Mapping[str, Any] | None) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{cell_id}.", dir=frag_root))
    try:
        for name in SCHEMAS:
            pq.write_table(to_table(name, tables.get(name, ()), metadata), tmp / f"{name}.parquet")
        if final.exists():
            old = frag_root / f".{cell_id}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_fragments(root: str | Path, name: str) -> pa.Table:
    """All fragments' ``name`` table concatenated (schema enforced)."""
    tables = [pq.read_table(d / f"{name}.parquet", schema=SCHEMAS[name]) for d in fragment_dirs(root)
              if (d / f"{name}.parquet").exists()]
    if not tables:
        return SCHEMAS[name].empty_table()
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables])


def ok_cell_ids(root: str | Path) -> set[str]:
    """Cells with an ``ok`` row already on disk (what a resume skips)."""
    runs = read_fragments(root, "runs")
    return {cid for cid, st in zip(runs["cell_id"].to_pylist(), runs["status"].to_pylist()) if st == "ok"}


def consolidate(root: str | Path, metadata: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Fragments → one ``<table>.parquet`` per table of ``SCHEMAS`` in ``root`` (atomic each)."""
    out = {}
    for name in SCHEMAS:
        table = read_fragments(root, name).replace_schema_metadata(encode_metadata(metadata))
        path = Path(root) / f"{name}.parquet"
        with sweep_io("cannot write", path), atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        out[name] = path
    return out
