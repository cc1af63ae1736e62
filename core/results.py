"""The result tables' schemas and on-disk layout: what the runner writes and the analysis reads.

Four tables (see the README, "Outputs"):

- ``runs``        one row per cell (identity, provenance, status, quality, speed, memory)
- ``epochs``      one row per cell × epoch
- ``predictions`` one row per cell × test sample (so ROC curves and McNemar need no rerun)
- ``deployments`` one row per cell × deployment format × serving runtime (export, fresh-process load,
  equality with the trained model, served speed and memory)

Nested values (confusion matrix, per-class report, knob table, versions) are JSON strings: they
stay readable from any Parquet reader and keep the schema flat. A results directory holds the
consolidated tables and ``fragments/<cell_id>/{runs,epochs,predictions,deployments}.parquet`` (one per
finished cell; ``runner.store.fragments`` writes them). Parquet schema metadata (``kvp.*``) carries the
schema version, the resolved config and the equivalence-gate record.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

#: Version 2: memory columns in MiB named ``*_mib`` (were ``*_mb``), epochs numbered 1..N (were 0..N-1),
#: every column described (field metadata ``description`` and ``unit``). ``upgrade`` reads version 1.
#: Version 3: time to a target, energy, memory at start and above it, measured choices (``tuning``),
#: ``unmeasured`` reasons, the split design; a one-epoch cell's ``median_epoch_seconds`` is null (was the
#: warm-up epoch). Versions 1–2 are read as they are (the new columns absent).
SCHEMA_VERSION = "3"
READABLE_VERSIONS = ("1", "2", "3")

_IDENTITY = [
    ("sweep_id", pa.string()),
    ("cell_id", pa.string()),
    ("config_hash", pa.string()),
    ("framework", pa.string()),
    ("backend", pa.string()),
    ("framework_version", pa.string()),
    ("versions", pa.string()),  # JSON {package: version}
    ("packages", pa.string()),  # an arm's pins as asked (core.arms); null = the base environment
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
    ("gpu_uuid", pa.string()),  # nvidia-smi's UUID of that GPU (null on CPU, and where unknown: fake GPUs)
    ("accelerator_type", pa.string()),  # Ray's accelerator_type:<T> of the node (e.g. H100; null on CPU/untyped)
    ("host", pa.string()),
    ("node_id", pa.string()),  # Ray node id
    ("node_ip", pa.string()),
    ("precision_policy", pa.string()),  # fp32 | tf32 | mixed_bf16
    ("execution_mode", pa.string()),  # default | compiled (frameworks.base: what each runs as)
    ("pipeline", pa.string()),  # device | native (where batches are made)
    ("deterministic", pa.bool_()),  # deterministic kernels requested (read back in parity_knobs)
    ("parity_mode", pa.string()),
    ("target", pa.string()),  # "val_accuracy >= 0.75" (null: no target)
    ("stop_at_target", pa.bool_()),
    ("split_design", pa.string()),  # resampled | fixed
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
    ("unmeasured", pa.string()),  # JSON {column: why it has no value}
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
    ("train_samples", pa.int64()),
    ("val_samples", pa.int64()),
    ("val_accuracy", pa.float64()),  # after the last epoch run
    ("val_loss", pa.float64()),
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
    ("import_seconds", pa.float64()),  # framework import in a fresh process (null when not measured)
    ("import_note", pa.string()),  # how import_seconds was measured, or why it is null
    ("time_to_first_step_seconds", pa.float64()),  # build + first training step
    ("epochs_run", pa.int64()),
    ("training_wall_seconds", pa.float64()),
    ("reached_target", pa.bool_()),
    ("epochs_to_target", pa.int64()),
    ("train_seconds_to_target", pa.float64()),
    ("wall_seconds_to_target", pa.float64()),
    ("tuning", pa.string()),  # JSON {knob: {choice, seconds_per_step, …}}
    ("energy_joules", pa.float64()),
    ("joules_per_training_image", pa.float64()),
    ("joules_to_target", pa.float64()),
    ("energy_note", pa.string()),
]
_MEMORY = [
    ("host_rss_at_start_mib", pa.float64()),
    ("peak_host_rss_mib", pa.float64()),
    ("peak_host_rss_above_start_mib", pa.float64()),
    ("device_memory_at_start_mib", pa.float64()),
    ("peak_device_memory_mib", pa.float64()),  # framework-native counter; null on CPU
    ("peak_device_memory_above_start_mib", pa.float64()),
    ("host_rss_fresh_start_mib", pa.float64()),
    ("peak_host_rss_fresh_mib", pa.float64()),
    ("peak_device_memory_fresh_mib", pa.float64()),
]
_MODEL = [
    ("param_count", pa.int64()),  # trainable
    ("param_count_total", pa.int64()),  # + BatchNorm moving statistics
    ("parity_knobs", pa.string()),  # JSON, read back from the built model
]

#: The data dictionary: ``column → (unit, description)``, stored in each Arrow field's metadata
#: (``description``, ``unit``) so every table explains itself (``python -m analysis --describe``).
#: Units: ``none`` (identifiers, text, JSON), ``count``, ``fraction`` (0–1), ``s``, ``ms``, ``J``, ``MiB``
#: (2^20 bytes), ``images/s``, ``pixels``, ``nats`` (natural-log cross-entropy per sample), ``UTC``.
COLUMN_DOCS: dict[str, tuple[str, str]] = {
    # identity
    "sweep_id": ("none", "the sweep that produced the row (one per `python -m runner` output dir, kept on resume)"),
    "cell_id": ("none", "stable id of the cell: hash of its resolved config (data, model, framework, parity, train, seed, device)"),
    "config_hash": ("none", "hash of the cell's resolved config"),
    "framework": ("none", "adapter that ran the cell: pytorch | keras | keras_jax | keras_torch | fake"),
    "backend": ("none", "the framework's compute backend (keras: tensorflow | jax | torch)"),
    "framework_version": ("none", "version of the framework package (torch or keras)"),
    "versions": ("none", "JSON {package: version} of the cell's process; cuda/cudnn as x.y.z"),
    "packages": ("none", "an arm's package pins as the grid asked for them, comma separated (grid.framework="
                         "[keras_jax@keras==3.14.0]); null = the base environment. What ran is in versions"),
    "model": ("none", "model spec name (small_cnn | capstone_cnn)"),
    "data": ("none", "dataset name (eurosat_mini | eurosat | folder | synthetic)"),
    "num_classes": ("count", "number of classes in the dataset"),
    "image_size": ("pixels", "side of the square input images after resizing"),
    "seed": ("none", "seed of split, weights, order and augmentation (pairs the frameworks' cells)"),
    "batch_size": ("images", "training batch size"),
    "epochs": ("count", "training epochs of the cell"),
    "device": ("none", "device requested in the grid: cpu | gpu | gpu:<type>"),
    "device_kind": ("none", "device the cell ran on: cpu | gpu"),
    "device_name": ("none", "name of that device (CPU model or GPU name)"),
    "gpu_index": ("none", "Ray-assigned GPU id on the node (null on CPU)"),
    "host": ("none", "host name of the node that ran the cell"),
    "node_id": ("none", "Ray node id"),
    "node_ip": ("none", "the node's address as Ray reports it"),
    "gpu_uuid": ("none", "nvidia-smi UUID of the GPU (null on CPU and where unknown, e.g. fake GPUs)"),
    "accelerator_type": ("none", "Ray's accelerator_type:<T> of the node, e.g. H100 (null on CPU/untyped nodes)"),
    "precision_policy": ("none", "numeric precision: fp32 | tf32 | mixed_bf16"),
    "compile_policy": ("none", "graph compilation: off | on (XLA jit_compile / torch.compile)"),
    "parity_mode": ("none", "parity config: strict (hidden defaults made equal) | framework_defaults"),
    "cpu_threads": ("count", "intra-op CPU threads the framework was given"),
    "target": ("none", "the validation target the cell trained to, e.g. 'val_accuracy >= 0.75' (null: no target)"),
    "stop_at_target": ("none", "true: training stopped at the target; false: the whole epoch budget was trained"),
    "split_design": ("none", "resampled: each seed drew its own train/val/test split (a claim about the data set); "
                             "fixed: one split for every seed (a claim about these data)"),
    "execution_mode": ("none", "default | compiled: how the framework ran the model (frameworks.base)"),
    "pipeline": ("none", "device | native: where the batches were made (on the device, or the framework's own loader)"),
    "deterministic": ("none", "deterministic kernels requested (true/false; read back in parity_knobs)"),
    "concurrency": ("count", "timing cells sharing the node or device at once"),
    "attempt": ("count", "1 + the number of times the cell was retried after its actor died"),
    "retry_causes": ("none", "JSON [{attempt, actor, pid, signal, error}]: why earlier attempts' actors died"),
    # provenance
    "git_sha": ("none", "commit of the benchmark code (KVP_GIT_SHA inside images)"),
    "split_hash": ("none", "hash of decoded pixels, labels, split options, seed and indices: equal ⇒ same data"),
    "start_time": ("UTC", "when the cell started"),
    "end_time": ("UTC", "when the cell finished"),
    # status
    "status": ("none", "ok | failed | skipped (a combination the framework cannot honour; reason in error)"),
    "error": ("none", "one-line error of a failed cell"),
    "traceback": ("none", "traceback of a failed cell"),
    "unmeasured": ("none", "JSON {column: why it has no value} for the columns this cell could not measure as "
                           "their label says (e.g. epoch time with one epoch, a p99 from too few calls)"),
    # quality (test split)
    "accuracy": ("fraction", "test accuracy"),
    "precision": ("fraction", "test precision: binary ⇒ class 1, multi-class ⇒ support-weighted"),
    "recall": ("fraction", "test recall: binary ⇒ class 1, multi-class ⇒ support-weighted"),
    "f1": ("fraction", "test F1: binary ⇒ class 1, multi-class ⇒ support-weighted"),
    "precision_macro": ("fraction", "test precision, unweighted mean over classes"),
    "recall_macro": ("fraction", "test recall, unweighted mean over classes"),
    "f1_macro": ("fraction", "test F1, unweighted mean over classes"),
    "roc_auc": ("fraction", "test ROC-AUC (multi-class: one-vs-rest, macro); null when a class is absent"),
    "log_loss": ("nats", "test cross-entropy per sample (natural log)"),
    "confusion_matrix": ("count", "JSON [[count]]: rows = true class, columns = predicted, label order"),
    "per_class": ("none", "JSON {class: {precision, recall, f1 (fractions), support (count)}}"),
    "classes": ("none", "JSON [class names] in label order"),
    "test_samples": ("count", "images in the test split"),
    "train_samples": ("count", "images in the training split"),
    "val_samples": ("count", "images in the validation split"),
    "val_accuracy": ("fraction", "validation accuracy after the last epoch run"),
    "val_loss": ("nats", "validation cross-entropy per sample after the last epoch run"),
    # speed
    "train_seconds": ("s", "training time of all epochs (train_epoch only; validation excluded)"),
    "first_epoch_seconds": ("s", "epoch 1 (warm-up: tracing, compilation, autotune), reported apart"),
    "median_epoch_seconds": ("s", "median training time of epochs 2..N (null with one epoch: see unmeasured)"),
    "images_per_second": ("images/s", "training images / median_epoch_seconds"),
    "latency_p50_ms": ("ms", "inference latency at batch 1, median over latency_samples calls after warm-up"),
    "latency_p90_ms": ("ms", "inference latency at batch 1, 90th percentile"),
    "latency_p99_ms": ("ms", "inference latency at batch 1, 99th percentile"),
    "throughput_images_per_second": ("images/s", "inference throughput at throughput_batch_size, median over timed calls"),
    "throughput_batch_size": ("images", "batch size of the throughput measurement"),
    "latency_calls": ("count", "timed batch-1 calls behind the latency percentiles (repeats driven by time)"),
    "throughput_images_per_second_p10": ("images/s", "inference throughput, 10th percentile over timed calls"),
    "throughput_images_per_second_p90": ("images/s", "inference throughput, 90th percentile over timed calls"),
    "throughput_calls": ("count", "timed calls behind the throughput figures"),
    "import_seconds": ("s", "cold start: framework import + runtime set-up, measured in a fresh process "
                            "before anything else was imported; null when not measured (see import_note)"),
    "import_note": ("none", "how import_seconds was measured, or why it is null"),
    "time_to_first_step_seconds": ("s", "build the model + the first optimizer step (the wait of an edit–run cycle)"),
    "epochs_run": ("count", "epochs trained (the budget, or fewer when the cell stopped at its target)"),
    "training_wall_seconds": ("s", "wall time of the whole training loop, validation included"),
    "reached_target": ("none", "whether validation reached the target within the epoch budget (null: no target)"),
    "epochs_to_target": ("count", "the epoch after which validation first reached the target (null: missed)"),
    "train_seconds_to_target": ("s", "training time (train_epoch only, validation excluded: AlgoPerf's clock) "
                                     "up to the target epoch (null: missed)"),
    "wall_seconds_to_target": ("s", "wall time from the first batch to the end of the validation that reached the "
                                    "target, validation included (MLPerf's clock; null: missed)"),
    "tuning": ("none", "JSON {knob: {choice, seconds_per_step of each candidate, measured_in}}: the hardware-"
                       "dependent choices measured on the device (runner/cell/tuning.py); {} when all were forced"),
    "energy_joules": ("J", "energy of all training epochs (NVML on a GPU, RAPL on a CPU); null without a counter"),
    "joules_per_training_image": ("J", "energy_joules / training images processed"),
    "joules_to_target": ("J", "training energy up to the target epoch (null: missed, or no counter)"),
    "energy_note": ("none", "which counter measured the energy, or why it was not measured"),
    # memory
    "host_rss_at_start_mib": ("MiB", "the process's resident memory when the cell's measurement starts: framework "
                                     "runtime + the resident dataset, after what earlier cells left was released"),
    "peak_host_rss_mib": ("MiB", "peak resident host memory of the process during the cell (Linux VmHWM, reset at "
                                 "the cell's start)"),
    "peak_host_rss_above_start_mib": ("MiB", "peak_host_rss_mib − host_rss_at_start_mib: what the cell added to the "
                                             "actor process (allocator caches kept from earlier cells are not counted)"),
    "device_memory_at_start_mib": ("MiB", "framework-native device memory in use at the cell's start; null on CPU"),
    "peak_device_memory_mib": ("MiB", "framework-native peak device memory of the cell; null on CPU"),
    "peak_device_memory_above_start_mib": ("MiB", "peak_device_memory_mib − device_memory_at_start_mib"),
    "host_rss_fresh_start_mib": ("MiB", "fresh process (runner/cell/probe.py): resident memory after importing the "
                                        "framework and loading the data, before the model"),
    "peak_host_rss_fresh_mib": ("MiB", "fresh process: peak resident memory while it builds the cell's model, trains "
                                       "train.memory.steps steps, validates and serves it (the Leaner metric on CPU)"),
    "peak_device_memory_fresh_mib": ("MiB", "fresh process: the framework's peak device memory (the Leaner metric on "
                                            "a GPU); null on CPU"),
    # model
    "param_count": ("count", "trainable parameters"),
    "param_count_total": ("count", "parameters incl. BatchNorm moving statistics"),
    "parity_knobs": ("none", "JSON of the parity knobs read back from the built model"),
    # epochs
    "epoch": ("none", "epoch number, 1..N (epoch 1 is the warm-up epoch)"),
    "train_loss": ("nats", "mean training cross-entropy per sample over the epoch"),
    "train_accuracy": ("fraction", "training accuracy over the epoch"),
    "val_loss": ("nats", "validation cross-entropy per sample after the epoch"),
    "val_accuracy": ("fraction", "validation accuracy after the epoch"),
    "epoch_seconds": ("s", "training time of the epoch (train_epoch only)"),
    "eval_seconds": ("s", "time of the validation after the epoch (not part of epoch_seconds)"),
    "steps": ("count", "optimizer steps timed in the epoch"),
    "step_seconds_median": ("s", "median wall time of one training step in the epoch"),
    "step_seconds_p10": ("s", "training step wall time, 10th percentile in the epoch"),
    "step_seconds_p90": ("s", "training step wall time, 90th percentile in the epoch"),
    "step_seconds_p99": ("s", "training step wall time, 99th percentile in the epoch"),
    # predictions
    "sample_index": ("none", "index into the prepared dataset (the same image for every framework)"),
    "y_true": ("none", "true class label (index into classes)"),
    "y_pred": ("none", "predicted class label (argmax of scores)"),
    "scores": ("fraction", "class probabilities (binary: [p(class 0), p(class 1)])"),
    # deployments
    "format": ("none", "deployment format: tf_saved_model | torch_export | onnx | litert (core.registry.DEPLOY_FORMATS)"),
    "runtime": ("none", "serving runtime that loaded the artifact in a fresh process: tensorflow | torch | "
                        "onnxruntime | litert"),
    "role": ("none", "native (the framework's own serving format) | common (ONNX: one runtime for every framework) "
                     "| mobile (LiteRT)"),
    "exporter": ("none", "the call that wrote the artifact and the exporter's version"),
    "input_layout": ("none", "layout of the normalised float32 batch the artifact takes: NHWC | NCHW"),
    "export_seconds": ("s", "writing the artifact from the trained model (tracing/conversion included)"),
    "artifact_mib": ("MiB", "size of the artifact on disk (all files of a directory format)"),
    "serving_device": ("none", "where the runtime served: cpu | gpu (the cell's device where the runtime supports it)"),
    "runtime_version": ("none", "version of the serving runtime's package"),
    "runtime_threads": ("count", "intra-op CPU threads the runtime was given (parity.cpu_threads, as training)"),
    "runtime_detail": ("none", "JSON: execution provider, thread settings and other runtime facts"),
    "serving_imports": ("none", "JSON [module]: the deep-learning frameworks and serving runtimes loaded in the serving "
                                "process when it finished (proves what a fresh process needed)"),
    "runtime_import_seconds": ("s", "importing the serving runtime in the fresh serving process"),
    "load_seconds": ("s", "cold load: reading the artifact into a ready session in the fresh process (after the "
                          "runtime import)"),
    "first_call_ms": ("ms", "the first batch-1 prediction after the load (lazy initialisation included)"),
    "serving_process_seconds": ("s", "wall time of the whole serving process as the runner saw it (interpreter start, "
                                     "runtime import, load, equality run, timed calls): what checking this format cost"),
    "max_abs_prob_diff": ("fraction", "max |Δ probability| over test samples and classes between the served "
                                      "artifact and the trained model (predictions.parquet)"),
    "argmax_agreement": ("fraction", "share of test samples where the served artifact and the trained model "
                                     "predict the same class"),
    "max_abs_prob_diff_limit": ("fraction", "the check's limit on max_abs_prob_diff (train.deploy.max_abs_prob_diff)"),
    "min_argmax_agreement_limit": ("fraction", "the check's minimum argmax_agreement "
                                               "(train.deploy.min_argmax_agreement)"),
    "served_latency_p50_ms": ("ms", "served latency at batch 1 (uint8 image → probabilities, normalisation included), "
                                    "median over timed calls after warm-up (train.inference)"),
    "served_latency_p90_ms": ("ms", "served latency at batch 1, 90th percentile (null from fewer than 10 timed calls)"),
    "served_latency_p99_ms": ("ms", "served latency at batch 1, 99th percentile (null from fewer than 100 timed calls)"),
    "served_latency_calls": ("count", "timed batch-1 calls behind the served latency (repeats driven by time)"),
    "served_throughput_images_per_second": ("images/s", "served throughput at throughput_batch_size (the cell's batch "
                                                        "size), median over timed calls"),
    "served_throughput_images_per_second_p10": ("images/s", "served throughput, 10th percentile over timed calls (null from fewer than 10)"),
    "served_throughput_images_per_second_p90": ("images/s", "served throughput, 90th percentile over timed calls (null from fewer than 10)"),
    "served_throughput_calls": ("count", "timed calls behind the served throughput"),
    "serving_peak_rss_mib": ("MiB", "peak resident host memory of the serving process (runtime, artifact, inputs)"),
}
#: Columns whose meaning differs between tables (epochs' ``images_per_second`` is per epoch).
_TABLE_DOCS: dict[tuple[str, str], tuple[str, str]] = {
    ("epochs", "images_per_second"): ("images/s", "training images / epoch_seconds"),
    # deployments (one row per cell × format × runtime)
    ("deployments", "status"): ("none", "ok | failed (export, serving, or the equality check: numbers kept) | "
                                        "skipped (a format this framework or backend cannot produce; reason in error)"),
    ("deployments", "error"): ("none", "why the deployment failed or was skipped (one line)"),
    ("deployments", "traceback"): ("none", "traceback (export failure) or the serving process's last output lines"),
    ("deployments", "test_samples"): ("count", "test images the artifact predicted for the equality check"),
    ("deployments", "throughput_batch_size"): ("images", "batch size of the served throughput: the cell's batch size "
                                                         "(train.batch_size)"),
}


def _described(table: str, fields: list) -> pa.Schema:
    """A schema whose every field carries ``description`` and ``unit`` metadata (from ``COLUMN_DOCS``)."""
    out = []
    for name, type_ in fields:
        # an undocumented column is marked, not refused (tests/test_tables_described.py fails on it)
        doc = _TABLE_DOCS.get((table, name)) or COLUMN_DOCS.get(name) or ("", "")
        out.append(pa.field(name, type_, metadata={"unit": doc[0], "description": doc[1]}))
    return pa.schema(out)


RUNS_SCHEMA = _described("runs", _IDENTITY + _PROVENANCE + _STATUS + _QUALITY + _SPEED + _MEMORY + _MODEL)

EPOCHS_SCHEMA = _described("epochs", [
    ("sweep_id", pa.string()),
    ("cell_id", pa.string()),
    ("framework", pa.string()),
    ("seed", pa.int64()),
    ("epoch", pa.int64()),  # 1..N, as in the logs and the report
    ("train_loss", pa.float64()),
    ("train_accuracy", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_accuracy", pa.float64()),
    ("epoch_seconds", pa.float64()),  # training part only
    ("eval_seconds", pa.float64()),  # the validation after it
    ("images_per_second", pa.float64()),
    ("steps", pa.int64()),  # optimizer steps timed in this epoch
    ("step_seconds_median", pa.float64()),  # per-step wall time (see frameworks.base.EpochStats)
    ("step_seconds_p10", pa.float64()),
    ("step_seconds_p90", pa.float64()),
    ("step_seconds_p99", pa.float64()),
])

PREDICTIONS_SCHEMA = _described("predictions", [
    ("sweep_id", pa.string()),
    ("cell_id", pa.string()),
    ("framework", pa.string()),
    ("seed", pa.int64()),
    ("sample_index", pa.int64()),  # index into the prepared dataset (same for every framework)
    ("y_true", pa.int64()),
    ("y_pred", pa.int64()),
    ("scores", pa.list_(pa.float32())),  # class probabilities (binary: [p(class 0), p(class 1)])
])

#: One row per cell × deployment format × serving runtime (``runner.cell.deploy``; README "Deploys").
DEPLOYMENTS_SCHEMA = _described("deployments", [
    ("sweep_id", pa.string()),
    ("cell_id", pa.string()),
    ("framework", pa.string()),
    ("backend", pa.string()),
    ("seed", pa.int64()),
    ("format", pa.string()),  # core.registry.DEPLOY_FORMATS
    ("runtime", pa.string()),
    ("role", pa.string()),  # native | common | mobile
    ("status", pa.string()),  # ok | failed (export, serving or the equality check) | skipped (reason in error)
    ("error", pa.string()),
    ("traceback", pa.string()),
    ("exporter", pa.string()),  # the call that wrote the artifact, with the exporter's version
    ("input_layout", pa.string()),  # NHWC | NCHW of the normalised float32 input the artifact takes
    ("export_seconds", pa.float64()),
    ("artifact_mib", pa.float64()),
    ("serving_device", pa.string()),  # where the runtime served: cpu | gpu
    ("runtime_version", pa.string()),
    ("runtime_threads", pa.int64()),
    ("runtime_detail", pa.string()),  # JSON: execution provider, threads, …
    ("serving_imports", pa.string()),  # JSON [module]: the training frameworks and runtimes the serving process loaded
    ("runtime_import_seconds", pa.float64()),
    ("load_seconds", pa.float64()),
    ("first_call_ms", pa.float64()),
    ("serving_process_seconds", pa.float64()),
    ("test_samples", pa.int64()),
    ("max_abs_prob_diff", pa.float64()),
    ("argmax_agreement", pa.float64()),
    ("max_abs_prob_diff_limit", pa.float64()),
    ("min_argmax_agreement_limit", pa.float64()),
    ("served_latency_p50_ms", pa.float64()),
    ("served_latency_p90_ms", pa.float64()),
    ("served_latency_p99_ms", pa.float64()),
    ("served_latency_calls", pa.int64()),
    ("served_throughput_images_per_second", pa.float64()),
    ("served_throughput_images_per_second_p10", pa.float64()),
    ("served_throughput_images_per_second_p90", pa.float64()),
    ("served_throughput_calls", pa.int64()),
    ("throughput_batch_size", pa.int64()),
    ("serving_peak_rss_mib", pa.float64()),
])

SCHEMAS: dict[str, pa.Schema] = {"runs": RUNS_SCHEMA, "epochs": EPOCHS_SCHEMA, "predictions": PREDICTIONS_SCHEMA,
                                 "deployments": DEPLOYMENTS_SCHEMA}


#: Version-1 column names → today's.
_V1_RENAMES = {"peak_host_rss_mb": "peak_host_rss_mib", "peak_device_memory_mb": "peak_device_memory_mib"}


def upgrade(name: str, table: pa.Table, version: str) -> pa.Table:
    """A table written under an older readable ``version`` in today's terms (names, epoch numbering)."""
    if str(version) == "1":
        import pyarrow.compute as pc

        names = [_V1_RENAMES.get(n, n) for n in table.column_names]
        table = table.rename_columns(names)
        if name == "epochs" and "epoch" in names:  # version 1 counted epochs from 0
            i = names.index("epoch")
            table = table.set_column(i, table.schema.field(i), pc.add(table.column(i), 1))
    return table


def data_dictionary(schemas: Mapping[str, pa.Schema] | None = None) -> str:
    """The tables' columns with type, unit and description, as plain text (``python -m analysis --describe``)."""
    lines = []
    for table, schema in (schemas or SCHEMAS).items():
        lines.append(f"{table}.parquet")
        width = max(len(f.name) for f in schema)
        for f in schema:
            meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
            lines.append(f"  {f.name:<{width}}  {str(f.type):<13} {meta.get('unit', '?'):<9} {meta.get('description', '')}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


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
