"""The parity-knob table every adapter reads back from its built objects, and small shared helpers.

``knobs()`` of every adapter returns one flat dict with exactly the keys of ``KNOB_KEYS`` (values
are JSON-able), so the report can put frameworks side by side. Values are read back from the
built model/optimizer/runtime, never echoed from the config; ``finish_knobs`` only checks the keys.

No deep-learning framework is imported here.
"""
from __future__ import annotations

import platform
from typing import Any

import numpy as np

#: Keys of the knob table, in display order. Conventions: ``batchnorm_momentum`` is in the torch
#: convention (weight of the NEW batch statistic; Keras' own value is 1 - this);
#: ``adam_epsilon_placement`` says where the framework adds epsilon (see ``frameworks.parity``).
KNOB_KEYS: tuple[str, ...] = (
    "framework",
    "backend",
    "parity_mode",
    "device",
    "batchnorm_layers",
    "batchnorm_momentum",
    "batchnorm_epsilon",
    "optimizer",
    "adam_beta_1",
    "adam_beta_2",
    "adam_epsilon",
    "adam_epsilon_placement",
    "learning_rate",
    "weight_init",
    "loss",
    "loss_reduction",
    "loss_from_logits",
    "output_activation",
    "precision",
    "compute_dtype",
    "matmul_tf32",
    "conv_tf32",
    "execution",
    "compile_detail",
    "memory_format",
    "cpu_threads_intra_op",
    "cpu_threads_inter_op",
    "deterministic",
    "pipeline",
    "data_pipeline",
)


#: Execution modes per framework (``parity.execution``) and what each runs as; ``None`` = impossible.
#: Keras on JAX is never timed op by op: both modes jit the step with XLA.
EXECUTION_TABLE: dict[str, dict[str, str]] = {
    "pytorch": {"default": "eager nn.Module", "compiled": "torch.compile(model), inductor"},
    "keras": {"default": "jit_compile='auto': tf.function graph on CPU, XLA on a GPU",
              "compiled": "jit_compile=True: XLA"},
    "keras_jax": {"default": "jit_compile='auto': jax.jit (XLA)", "compiled": "jit_compile=True: jax.jit (XLA)"},
    "keras_torch": {"default": "jit_compile='auto': eager torch", "compiled": "jit_compile=True: torch.compile"},
}


def unsupported(framework: str, execution: str, deterministic: bool, device: str) -> str | None:
    """Why ``framework`` cannot honour this combination (the cell is skipped with this reason), or None.

    Framework-free, so the runner can ask before any actor imports anything."""
    import shutil

    if execution == "compiled" and framework == "keras" and deterministic:
        return ("keras (TF) execution=compiled with deterministic=true: Keras switches XLA off when TensorFlow op "
                "determinism is on (not every op has a deterministic XLA kernel), so the cell would silently run "
                "the tf.function graph")
    if (execution == "compiled" and framework in ("pytorch", "keras_torch") and device == "cpu"
            and not (shutil.which("c++") or shutil.which("g++"))):
        return f"{framework} execution=compiled is torch.compile (inductor), which needs a C++ compiler on CPU; none is on PATH"
    return None


def finish_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Order ``knobs`` as ``KNOB_KEYS`` and fail loudly if an adapter forgot or invented a key."""
    missing = [k for k in KNOB_KEYS if k not in knobs]
    extra = [k for k in knobs if k not in KNOB_KEYS]
    if missing or extra:
        raise KeyError(f"knob table mismatch: missing {missing}, unexpected {extra}")
    return {k: _jsonable(knobs[k]) for k in KNOB_KEYS}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return float(round(float(value), 12))  # 1 - 0.9 -> 0.1, not 0.09999999999999998
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def single_value(values: list[Any], what: str) -> Any:
    """The one value all layers share (e.g. every BN layer's epsilon); raise if they disagree."""
    distinct = sorted({round(float(v), 12) for v in values}) if values else []
    if len(distinct) > 1:
        raise AssertionError(f"{what} differs between layers: {distinct}")
    return distinct[0] if distinct else None


def probabilities_from_logits(logits: np.ndarray, binary: bool) -> np.ndarray:
    """numpy reference: (n, 2) [1-p, p] from one logit, or softmax rows (float64 for stability)."""
    z = np.asarray(logits, np.float64)
    if binary:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def normalise_numpy(images_uint8: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 NHWC → float32 ``(x / 255 - mean) / std`` (mean/std per channel, [0, 1] units)."""
    x = images_uint8.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def cpu_name() -> str:
    """Human-readable CPU model (Linux /proc/cpuinfo, else ``platform``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
