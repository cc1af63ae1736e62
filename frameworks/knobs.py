"""The parity-knob table every adapter reads back from its built objects, and small shared helpers.

``knobs()`` of every adapter returns one flat dict typed by ``Knobs`` (exactly its keys, JSON-able
values), so the report can put frameworks side by side. Values are read back from the built
model/optimizer/runtime, never echoed from the config; ``finish_knobs`` checks the keys.

No deep-learning framework is imported here.
"""
from __future__ import annotations

import platform
from typing import Any, Optional, TypedDict

import numpy as np

class Knobs(TypedDict):
    """The knob table of one built adapter, in display order (``Adapter.knobs()``): read back from the
    built model/optimizer/runtime, never echoed from the config. Conventions: ``batchnorm_momentum`` is
    in the torch convention (weight of the NEW batch statistic; Keras' own value is 1 - this);
    ``adam_epsilon_placement`` says where the framework adds epsilon (see ``frameworks.parity``)."""

    framework: str
    backend: str
    parity_mode: str
    device: str
    batchnorm_layers: int
    batchnorm_momentum: Optional[float]
    batchnorm_epsilon: Optional[float]
    optimizer: str
    adam_beta_1: float
    adam_beta_2: float
    adam_epsilon: float
    adam_epsilon_placement: str
    learning_rate: float
    weight_init: str
    loss: str
    loss_reduction: str
    loss_from_logits: bool
    output_activation: str
    precision: str
    compute_dtype: str
    matmul_tf32: Optional[bool]
    conv_tf32: Optional[bool]
    execution: str
    compile_detail: str
    memory_format: str
    cpu_threads_intra_op: Optional[int]
    cpu_threads_inter_op: Optional[int]
    deterministic: bool
    pipeline: str
    data_pipeline: str


#: Keys of the knob table, in display order (the fields of ``Knobs``).
KNOB_KEYS: tuple[str, ...] = tuple(Knobs.__annotations__)


def finish_knobs(knobs: dict[str, Any]) -> Knobs:
    """Order ``knobs`` as ``KNOB_KEYS`` and fail loudly if an adapter forgot or invented a key."""
    missing = [k for k in KNOB_KEYS if k not in knobs]
    extra = [k for k in knobs if k not in KNOB_KEYS]
    if missing or extra:
        raise KeyError(f"knob table mismatch: missing {missing}, unexpected {extra}")
    return Knobs(**{k: _jsonable(knobs[k]) for k in KNOB_KEYS})  # type: ignore[typeddict-item]


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
