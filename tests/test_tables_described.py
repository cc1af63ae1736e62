"""Self-describing tables: every column of runs/epochs/predictions/summary carries a description and a
unit in its Arrow field metadata; memory is MiB (``*_mib``); epochs are numbered 1..N; version-1 tables
are read in today's terms; ``python -m analysis --describe`` prints the data dictionary."""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import results as rr
from runner import PROJECT_ROOT


@pytest.mark.parametrize("name", sorted(rr.SCHEMAS))
def test_every_results_column_has_a_description_and_a_unit(name):
    for field in rr.SCHEMAS[name]:
        meta = field.metadata or {}
        assert meta.get(b"description", b"").strip(), f"{name}.{field.name} has no description"
        assert meta.get(b"unit", b"").strip(), f"{name}.{field.name} has no unit"
    assert not [f.name for f in rr.SCHEMAS[name] if f.name.endswith("_mb")]  # MiB is named mib


def test_written_files_keep_the_descriptions_and_upgrade_reads_version_1(tmp_path):
    table = rr.to_table("runs", [{"cell_id": "c", "peak_host_rss_mib": 512.0}])
    pq.write_table(table, tmp_path / "runs.parquet")
    schema = pq.read_schema(tmp_path / "runs.parquet")
    assert all(f.metadata and f.metadata[b"description"] and f.metadata[b"unit"] for f in schema)
    assert schema.field("peak_host_rss_mib").metadata[b"unit"] == b"MiB"

    v1 = pa.table({"cell_id": ["c", "c"], "epoch": [0, 1], "peak_device_memory_mb": [1.0, 2.0]})
    up = rr.upgrade("epochs", v1, "1")
    assert up.column("epoch").to_pylist() == [1, 2]
    assert "peak_device_memory_mib" in up.column_names
    assert rr.upgrade("epochs", up, rr.SCHEMA_VERSION).column("epoch").to_pylist() == [1, 2]


def test_summary_rows_have_unit_and_scale_and_described_columns():
    import pandas as pd

    from analysis.columns import SUMMARY_DOCS, described, with_units
    from analysis.summary import SUMMARY_COLUMNS

    assert set(SUMMARY_COLUMNS) <= set(SUMMARY_DOCS)
    rows = pd.DataFrame({"metric": ["accuracy", "accuracy", "median_epoch_seconds", "median_epoch_seconds"],
                         "comparison": ["value", "difference", "value", "ratio"],
                         "unit": ["", "pp", "s", "×"], "estimate": [0.9, 1.5, 2.0, 1.1]})
    out = with_units(rows)
    assert out["unit"].tolist() == ["fraction", "pp", "s", "×"]
    assert out["scale"].tolist() == ["value", "difference", "value", "ratio"]
    table = described(pa.Table.from_pandas(out, preserve_index=False))
    assert all(f.metadata[b"unit"] and f.metadata[b"description"] != b"(undocumented)" for f in table.schema)


def test_describe_prints_the_data_dictionary():
    proc = subprocess.run([sys.executable, "-m", "analysis", "--describe"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for table in ("runs.parquet", "epochs.parquet", "predictions.parquet", "deployments.parquet", "summary.parquet"):
        assert table in proc.stdout
    assert "peak_host_rss_mib" in proc.stdout and "MiB" in proc.stdout
    assert proc.stderr == ""


def test_cudnn_is_written_as_major_minor_patch():
    from frameworks.versions import cudnn_text

    assert cudnn_text(92600) == "9.26.0" and cudnn_text("90100") == "9.1.0" and cudnn_text(8902) == "8.9.2"
    assert cudnn_text("9.3.0") == "9.3.0" and cudnn_text(None) is None and cudnn_text("None") is None
