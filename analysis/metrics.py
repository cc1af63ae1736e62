"""The one table of metrics the analysis compares: direction, unit, how two frameworks are compared.

Quality metrics are compared as paired *differences* (percentage points where the metric is a
proportion); time, throughput and memory as paired *ratios* A/B, whose CI and tests are computed on
log(A/B) so that "2× slower" and "2× faster" are symmetric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.registry import FRAMEWORKS

Kind = Literal["quality", "time", "throughput", "memory", "energy", "count"]
Comparison = Literal["difference", "ratio"]


@dataclass(frozen=True)
class MetricInfo:
    name: str  # column in runs.parquet
    label: str
    kind: Kind
    unit: str  # unit of a per-framework value
    higher_is_better: bool
    comparison: Comparison
    proportion: bool = False  # value in [0, 1]: differences are shown in percentage points
    question: str | None = None  # headline question on the verdict table (None: not a headline)
    better_word: str = "better"  # "faster", "leaner", … used in phrases such as "pytorch 1.4× faster"

    @property
    def difference_unit(self) -> str:
        if self.comparison == "ratio":
            return "×"
        return "pp" if self.proportion else self.unit


def _q(name: str, label: str, *, question: str | None = None, proportion: bool = True,
       higher: bool = True, unit: str = "") -> MetricInfo:
    return MetricInfo(name, label, "quality", unit, higher, "difference", proportion, question, "better")


# Order = order of tables in the report.
METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    # Time to a trained model (derived by analysis.censored from the runs' target columns): a cell that
    # missed the target counts as its whole budget (restricted to the epoch budget, never dropped).
    MetricInfo("time_to_target_seconds", "Time to target (training only, restricted to the epoch budget)", "time",
               "s", False, "ratio", question="Trains faster", better_word="faster"),
    MetricInfo("epochs_to_target_restricted", "Epochs to target (restricted to the epoch budget)", "count", "epochs", False,
               "ratio", better_word="faster"),
    MetricInfo("seconds_per_epoch_to_target", "Seconds per epoch on the way to the target", "time", "s", False,
               "ratio", better_word="faster"),
    MetricInfo("wall_time_to_target_seconds", "Time to target, wall clock incl. validation (restricted)", "time", "s",
               False, "ratio", better_word="faster"),
    _q("accuracy", "Accuracy", question="More accurate"),
    _q("f1", "F1 (binary: positive class; multi-class: weighted)", question="More accurate"),
    _q("f1_macro", "F1 (macro)"),
    _q("precision", "Precision (binary: positive class; multi-class: weighted)"),
    _q("recall", "Recall (binary: positive class; multi-class: weighted)"),
    _q("precision_macro", "Precision (macro)"),
    _q("recall_macro", "Recall (macro)"),
    _q("roc_auc", "ROC-AUC", question="More accurate"),
    _q("log_loss", "Log loss", proportion=False, higher=False, unit="nats"),
    _q("val_accuracy", "Validation accuracy after the last epoch"),
    _q("reach_rate", "Seeds that reached the target within the epoch budget"),
    MetricInfo("median_epoch_seconds", "Epoch time (warm-up epoch excluded)", "time", "s", False,
               "ratio", question="Trains faster", better_word="faster"),
    MetricInfo("step_seconds", "Training step time (median step per epoch, warm-up epoch excluded)", "time", "s",
               False, "ratio", better_word="faster"),
    MetricInfo("images_per_second", "Training throughput", "throughput", "images/s", True, "ratio",
               question="Trains faster", better_word="faster"),
    MetricInfo("first_epoch_seconds", "First (warm-up/compile) epoch time", "time", "s", False, "ratio",
               better_word="faster"),
    MetricInfo("train_seconds", "Total training time", "time", "s", False, "ratio", better_word="faster"),
    MetricInfo("mean_epoch_seconds", "Training time per epoch (mean over all epochs, warm-up included)", "time", "s",
               False, "ratio", better_word="faster"),
    MetricInfo("latency_p50_ms", "Inference latency p50 (batch 1)", "time", "ms", False, "ratio",
               question="Infers faster", better_word="faster"),
    MetricInfo("latency_p90_ms", "Inference latency p90 (batch 1)", "time", "ms", False, "ratio",
               better_word="faster"),
    MetricInfo("latency_p99_ms", "Inference latency p99 (batch 1)", "time", "ms", False, "ratio",
               better_word="faster"),
    MetricInfo("throughput_images_per_second", "Inference throughput (batched)", "throughput", "images/s",
               True, "ratio", question="Infers faster", better_word="faster"),
    MetricInfo("time_to_first_step_seconds", "Time to first training step (build + first step)", "time", "s",
               False, "ratio", better_word="faster"),
    MetricInfo("peak_device_memory_fresh_mib", "Peak device memory, fresh process (train, validate, serve)",
               "memory", "MiB", False, "ratio", question="Leaner", better_word="leaner"),
    MetricInfo("peak_host_rss_fresh_mib", "Peak host memory, fresh process (train, validate, serve)", "memory",
               "MiB", False, "ratio", question="Leaner", better_word="leaner"),
    MetricInfo("host_rss_fresh_start_mib", "Host memory of the runtime + data, fresh process", "memory", "MiB",
               False, "ratio", better_word="leaner"),
    MetricInfo("peak_host_rss_mib", "Peak host memory (RSS) of the actor during the cell", "memory", "MiB", False,
               "ratio", question="Leaner", better_word="leaner"),
    MetricInfo("peak_device_memory_mib", "Peak device memory of the actor during the cell", "memory", "MiB", False,
               "ratio", question="Leaner", better_word="leaner"),
    MetricInfo("joules_per_training_image", "Training energy per image", "energy", "J", False, "ratio",
               better_word="leaner"),
    MetricInfo("joules_to_target", "Training energy to the target", "energy", "J", False, "ratio",
               better_word="leaner"),
]}

# Deployment metrics: columns of deployments.parquet (runner.cell.deploy), summarised per deployment format and
# runtime by analysis.deploy with the same paired engine; never headline questions (descriptive rows).
DEPLOY_METRICS: tuple[str, ...] = (
    "served_latency_p50_ms", "served_latency_p99_ms", "served_throughput_images_per_second", "load_seconds",
    "runtime_import_seconds", "first_call_ms", "export_seconds", "artifact_mib", "serving_peak_rss_mib",
    "argmax_agreement", "max_abs_prob_diff",
)
METRICS.update({m.name: m for m in [
    MetricInfo("served_latency_p50_ms", "Served latency p50 (batch 1, fresh serving process)", "time", "ms", False,
               "ratio", better_word="faster"),
    MetricInfo("served_latency_p99_ms", "Served latency p99 (batch 1)", "time", "ms", False, "ratio",
               better_word="faster"),
    MetricInfo("served_throughput_images_per_second", "Served throughput (at the cell's batch size)", "throughput",
               "images/s", True, "ratio", better_word="faster"),
    MetricInfo("load_seconds", "Cold load of the artifact (fresh process)", "time", "s", False, "ratio",
               better_word="faster"),
    MetricInfo("runtime_import_seconds", "Serving runtime import (fresh process)", "time", "s", False, "ratio",
               better_word="faster"),
    MetricInfo("first_call_ms", "First call after load (batch 1)", "time", "ms", False, "ratio", better_word="faster"),
    MetricInfo("export_seconds", "Export time", "time", "s", False, "ratio", better_word="faster"),
    MetricInfo("artifact_mib", "Artifact size on disk", "memory", "MiB", False, "ratio", better_word="smaller"),
    MetricInfo("serving_peak_rss_mib", "Peak host memory of the serving process", "memory", "MiB", False, "ratio",
               better_word="leaner"),
    _q("argmax_agreement", "Same predicted class as the trained model"),
    _q("max_abs_prob_diff", "Max |Δ probability| against the trained model", proportion=False, higher=False),
]})

# Headline questions in the order the verdict table asks them.
QUESTIONS: tuple[str, ...] = ("Trains faster", "Infers faster", "More accurate", "Leaner")

# The one primary metric of each question (per condition and pair): the multiplicity family of the
# report is these rows only. Where a question lists several, the first one measured for both
# frameworks in that condition is primary (device memory where there is a device counter, else host
# RSS) — chosen by what was measured, never by the outcome. Every other metric is secondary:
# shown with its interval, descriptive, not part of the family (images/s is samples / epoch time,
# a duplicate of the epoch-time question, not a second chance to find a difference).
#
# Trains faster: with a target (``train.target``), time to it (MLPerf/AlgoPerf: training speed is time to a
# quality); without one, per-epoch time. Leaner: the fresh-process peak (``runner/cell/probe.py``: the same
# for every cell whatever ran before it in the actor); the actor's own per-cell peak only where no probe ran.
PRIMARY: dict[str, tuple[str, ...]] = {
    "Trains faster": ("time_to_target_seconds", "median_epoch_seconds"),
    "Infers faster": ("latency_p50_ms",),
    "More accurate": ("accuracy",),
    "Leaner": ("peak_device_memory_fresh_mib", "peak_host_rss_fresh_mib", "peak_device_memory_mib",
               "peak_host_rss_mib"),
}

# The columns that define a condition: two runs are paired when all of these and the seed agree.
CONDITION_COLUMNS: tuple[str, ...] = (
    "data", "model", "epochs", "batch_size", "device_kind", "device_name",
    "precision_policy", "execution_mode", "pipeline", "deterministic", "parity_mode",
    "target", "stop_at_target", "split_design",
)

CONDITION_LABELS: dict[str, str] = {
    "data": "data", "model": "model", "epochs": "epochs", "batch_size": "batch",
    "device_kind": "device", "device_name": "device name", "precision_policy": "precision",
    "execution_mode": "execution", "pipeline": "pipeline", "deterministic": "deterministic",
    "parity_mode": "parity", "target": "target", "stop_at_target": "stop at target", "split_design": "split design",
}

# Display order of frameworks; pairs are (earlier, later) so "keras vs pytorch" reads A = keras.
FRAMEWORK_ORDER: tuple[str, ...] = tuple(FRAMEWORKS)  # the registry's order (core.registry)


def framework_sort_key(name: str) -> tuple:
    """Registry order; arms of one framework (``keras_jax 3.15.1``, ``keras_jax 3.14.0``: analysis.arms)
    together, newest version first, so a pair reads "new vs old"."""
    from analysis.arms import arm_sort_key

    return arm_sort_key(name)
