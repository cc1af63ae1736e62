"""The result tables' schemas and on-disk layout: what the runner writes and the analysis reads.

Three tables (see the README, "Outputs"):

- ``runs``        one row per cell (identity, provenance, status, quality, speed, memory)
- ``epochs``      one row per cell × epoch
- ``predictions`` one row per cell × test sample (so ROC curves and McNemar need no rerun)

Nested values (confusion matrix, per-class report, knob table, versions) are JSON strings: they
stay readable from any Parquet reader and keep the schema flat. A results directory holds the
three consolidated tables and ``fragments/<cell_id>/{runs,epochs,predictions}.parquet`` (one per
finished cell; ``runner.results`` writes them). Parquet schema metadata (``kvp.*``) carries the
schema version, the resolved config and the equivalence-gate record.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"

_IDENTITY = [
    ("sweep_id", pa.string()),
    ("cell_id", pa.string()),
    ("config_hash", pa.string()),
    ("framework", pa.string()),
    ("backend", pa.string()),
    ("framework_version", pa.string()),
    ("versions", pa.string()),  # JSON {package: version}
    ("model", pa.string()),
    ("data", pa.string()),
    ("num_classes", pa.int64()),
    ("image_size", pa.int64()),
    ("seed", pa.int64()),
    ("batch_size", pa.int64()),
    ("epochs", pa.int64()),
    ("device", pa.string()),  # requested: cpu | gpu | gpu:<type>
    ("device_kind", pa.string()),  # cpu | gpu
    ("device_name", pa.string()),
    ("gpu_index", pa.int64()),  # Ray-assigned GPU id (null on CPU)
    ("host", pa.string()),
    ("node_id", pa.string()),
    ("precision_policy", pa.string()),  # fp32 | tf32 | mixed_bf16
    ("execution_mode", pa.string()),  # default | compiled (frameworks.base: what each runs as)
    ("pipeline", pa.string()),  # device | native (where batches are made)
    ("deterministic", pa.bool_()),  # deterministic kernels requested (read back in parity_knobs)
    ("parity_mode", pa.string()),
    ("cpu_threads", pa.int64()),
    ("concurrency", pa.int64()),  # timing cells sharing the node/device at once
    ("attempt", pa.int64()),
    ("retry_causes", pa.string()),  # JSON [{attempt, actor, pid, signal, error}] of earlier attempts' deaths
]
_PROVENANCE = [
    ("git_sha", pa.string()),
    ("split_hash", pa.string()),
    ("start_time", pa.timestamp("us", tz="UTC")),
    ("end_time", pa.timestamp("us", tz="UTC")),
]
_STATUS = [
    ("status", pa.string()),  # ok | failed | skipped (a combination the framework cannot honour; reason in error)
    ("error", pa.string()),
    ("traceback", pa.string()),
]
_QUALITY = [
    ("accuracy", pa.float64()),
    ("precision", pa.float64()),  # binary: positive class; multi-class: weighted
    ("recall", pa.float64()),
    ("f1", pa.float64()),
    ("precision_macro", pa.float64()),
    ("recall_macro", pa.float64()),
    ("f1_macro", pa.float64()),
    ("roc_auc", pa.float64()),  # multi-class: one-vs-rest, macro
    ("log_loss", pa.float64()),
    ("confusion_matrix", pa.string()),  # JSON [[int]] rows = true, cols = predicted
    ("per_class", pa.string()),  # JSON {class: {precision, recall, f1, support}}
    ("classes", pa.string()),  # JSON [class names] in label order
    ("test_samples", pa.int64()),
]
_SPEED = [
    ("train_seconds", pa.float64()),  # all epochs, training only
    ("first_epoch_seconds", pa.float64()),  # warm-up / compile epoch, reported apart
    ("median_epoch_seconds", pa.float64()),  # epochs after the first (the first if only one)
    ("images_per_second", pa.float64()),  # training, from median_epoch_seconds
    ("latency_p50_ms", pa.float64()),  # inference, batch 1, after warm-up
    ("latency_p90_ms", pa.float64()),
    ("latency_p99_ms", pa.float64()),
    ("latency_calls", pa.int64()),  # timed batch-1 calls (repeats driven by time: train.inference)
    ("throughput_images_per_second", pa.float64()),  # inference at throughput_batch_size, median over calls
    ("throughput_images_per_second_p10", pa.float64()),
    ("throughput_images_per_second_p90", pa.float64()),
    ("throughput_calls", pa.int64()),
    ("throughput_batch_size", pa.int64()),
    ("import_seconds", pa.float64()),  # framework import in this process (0 when already imported)
    ("time_to_first_step_seconds", pa.float64()),  # build + first training step
]
_MEMORY = [
    ("peak_host_rss_mb", pa.float64()),
    ("peak_device_memory_mb", pa.float64()),  # framework-native counter; null on CPU
]
_MODEL = [
    ("param_count", pa.int64()),  # trainable
    ("param_count_total", pa.int64()),  # + BatchNorm moving statistics
    ("parity_knobs", pa.string()),  # JSON, read back from the built model
]

RUNS_SCHEMA = pa.schema(_IDENTITY + _PROVENANCE + _STATUS + _QUALITY + _SPEED + _MEMORY + _MODEL)

EPOCHS_SCHEMA = pa.schema([
    ("sweep_id", pa.string()),
    ("cell_id", pa.string()),
    ("framework", pa.string()),
    ("seed", pa.int64()),
    ("epoch", pa.int64()),  # 0-based
    ("train_loss", pa.float64()),
    ("train_accuracy", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_accuracy", pa.float64()),
    ("epoch_seconds", pa.float64()),  # training part only
    ("images_per_second", pa.float64()),
    ("steps", pa.int64()),  # optimizer steps timed in this epoch
    ("step_seconds_median", pa.float64()),  # per-step wall time (see frameworks.base.EpochStats)
    ("step_seconds_p10", pa.float64()),
    ("step_seconds_p90", pa.float64()),
    ("step_seconds_p99", pa.float64()),
])

PREDICTIONS_SCHEMA = pa.schema([
    ("sweep_id", pa.string()),
    ("cell_id", pa.string()),
    ("framework", pa.string()),
    ("seed", pa.int64()),
    ("sample_index", pa.int64()),  # index into the prepared dataset (same for every framework)
    ("y_true", pa.int64()),
    ("y_pred", pa.int64()),
    ("scores", pa.list_(pa.float32())),  # class probabilities (binary: [p(class 0), p(class 1)])
])

SCHEMAS: dict[str, pa.Schema] = {"runs": RUNS_SCHEMA, "epochs": EPOCHS_SCHEMA, "predictions": PREDICTIONS_SCHEMA}


class ResultsError(Exception):
    """A results directory or table that cannot be read or written as expected."""


def to_table(name: str, rows: Iterable[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None) -> pa.Table:
    """Rows (dicts) → a table with the exact schema; missing columns become null, extra ones are an error."""
    schema = SCHEMAS[name]
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise ResultsError(f"{name}: unknown column(s) {sorted(extra)}")
    columns = {f.name: [row.get(f.name) for row in rows] for f in schema}
    table = pa.Table.from_pydict(columns, schema=schema)
    return table.replace_schema_metadata(encode_metadata(metadata))


def encode_metadata(extra: Mapping[str, Any] | None) -> dict[bytes, bytes]:
    meta = {"kvp.schema_version": SCHEMA_VERSION}
    for key, value in (extra or {}).items():
        meta[f"kvp.{key}"] = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return {k.encode(): v.encode() for k, v in meta.items()}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``kvp.*`` metadata of a Parquet file, JSON-decoded where possible."""
    raw = pq.read_schema(path).metadata or {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = k.decode()
        if key.startswith("kvp."):
            try:
                out[key[4:]] = json.loads(v)
            except json.JSONDecodeError:
                out[key[4:]] = v.decode()
    return out


FRAGMENTS_DIR = "fragments"


def fragment_dirs(root: str | Path) -> list[Path]:
    """The finished cells' fragment directories under results directory ``root`` (sorted)."""
    frag_root = Path(root) / FRAGMENTS_DIR
    if not frag_root.is_dir():
        return []
    return sorted(p for p in frag_root.iterdir() if p.is_dir() and not p.name.startswith("."))
