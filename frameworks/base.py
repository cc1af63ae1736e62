"""The one contract every framework adapter implements (benchopt-style: small, explicit).

Lifecycle inside one process (a Ray actor or ``python -m runner.cell``)::

    adapter = get_adapter("pytorch", settings)   # imports the framework, applies threads/precision/determinism
    adapter.build(spec, parity, weights)          # native model + optimizer; ported weights when given
    for epoch in range(E):
        stats = adapter.train_epoch(batches)      # the only part timed as "training" (by the caller)
        loss, scores = adapter.evaluate(x, y)     # validation / test
    adapter.predict(x)                            # timed for latency/throughput by the caller
    adapter.sync()                                # waits for queued device work before a clock is read

Inputs are always the prepared dataset's uint8 NHWC arrays plus index/augmentation plans from
``runner.data``; each adapter turns them into its own native pipeline (DataLoader / tf.data /
PyDataset) and normalises with the dataset's train-split mean/std.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.batches import Batches  # noqa: F401  (part of the contract; defined in the ground floor)
from core.spec import ModelSpec


@dataclass(frozen=True)
class ParitySettings:
    """The knobs of ``conf/parity/*.yaml``; ``None`` means "this framework's own default"."""

    mode: str = "strict"  # strict | framework_defaults
    batchnorm_momentum: float | None = 0.1  # torch convention; Keras gets 1 - momentum
    batchnorm_epsilon: float | None = 1e-3
    adam_beta_1: float | None = 0.9
    adam_beta_2: float | None = 0.999
    adam_epsilon: float | None = 1e-7
    weight_init: str = "ported"  # ported | native
    loss_reduction: str = "mean"
    precision: str = "fp32"  # fp32 | tf32 | mixed_bf16
    compile: str = "off"  # off | on
    cpu_threads: int | None = 2
    deterministic: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> "ParitySettings":
        data = dict(cfg)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown parity knob(s): {sorted(unknown)}; known: {sorted(known)}")
        if "compile" in data and isinstance(data["compile"], bool):  # YAML reads a bare off/on as a bool
            data["compile"] = "on" if data["compile"] else "off"
        return cls(**data)


@dataclass(frozen=True)
class TrainSettings:
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0  # seeds the framework's own RNG in build() (dropout masks, native init)


@dataclass
class EpochStats:
    """What ``train_epoch`` returns: mean training loss/accuracy over the epoch's samples."""

    loss: float
    accuracy: float
    samples: int
    steps: int


class Adapter(abc.ABC):
    """Builds a ``ModelSpec`` natively in one framework, trains, predicts and reports facts."""

    name: str  # "pytorch", "keras", "keras_jax", "keras_torch"
    backend: str  # "torch", "tensorflow", "jax"

    def __init__(self, parity: ParitySettings, device: str = "auto", framework: str | None = None) -> None:
        self.parity = parity
        self.device_request = device  # "auto" | "cpu" | "gpu"; Ray's CUDA_VISIBLE_DEVICES already pins the GPU
        if framework is not None:
            self.name = framework

    # ---- environment ------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework and library versions, e.g. {"torch": "2.5.1", "cuda": "12.4", "cudnn": "9.1"}."""

    @abc.abstractmethod
    def device_info(self) -> dict[str, Any]:
        """{"device": "cpu" | "cuda:0", "device_kind": "cpu" | "gpu", "device_name": str}."""

    # ---- model ------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, spec: ModelSpec, train: TrainSettings, weights: dict[str, np.ndarray] | None) -> None:
        """Native model + optimizer + loss. ``weights`` (canonical layout) are ported when given."""

    @abc.abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """Current weights in the canonical (Keras) layout of ``core.spec``."""

    @abc.abstractmethod
    def param_counts(self) -> dict[str, int]:
        """{"trainable": …, "total": …} counted from the built model (must equal the spec's)."""

    @abc.abstractmethod
    def knobs(self) -> dict[str, Any]:
        """Parity knobs read back from the built model/optimizer/runtime (not echoed from config)."""

    # ---- compute ----------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits for already-normalised float32 NHWC input (the equivalence gate uses this)."""

    @abc.abstractmethod
    def train_epoch(self, batches: Batches) -> EpochStats:
        """One epoch over ``batches`` through the framework's native input pipeline."""

    @abc.abstractmethod
    def evaluate(self, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 batch_size: int) -> tuple[float, np.ndarray]:
        """Mean loss and class probabilities ``(n, num_classes)`` for uint8 images (eval mode)."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Class probabilities for one uint8 batch, eval mode, synchronised (used for latency/throughput)."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Block until queued device work is done (no-op on CPU); called before reading clocks."""

    # ---- memory -----------------------------------------------------------------------
    def reset_peak_memory(self) -> None:  # pragma: no cover - default: nothing to reset
        pass

    def peak_device_memory_bytes(self) -> int | None:
        """Framework-native peak device memory since the last reset; ``None`` on CPU."""
        return None


_MODULES = {
    "pytorch": "frameworks.pytorch_adapter:PyTorchAdapter",
    "keras": "frameworks.keras_adapter:KerasAdapter",
    "keras_jax": "frameworks.keras_adapter:KerasAdapter",
    "keras_torch": "frameworks.keras_adapter:KerasAdapter",
    # A numpy-only stand-in (no deep-learning import): runner/analysis tests and overhead benchmarks.
    "fake": "frameworks.fake_adapter:FakeAdapter",
}


def adapter_class(name: str) -> type[Adapter]:
    """Import (only now) the module of adapter ``name``."""
    if name not in _MODULES:
        raise ValueError(f"unknown framework {name!r}; choose one of {sorted(_MODULES)}")
    module, cls = _MODULES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_adapter(name: str, parity: ParitySettings, device: str = "auto") -> Adapter:
    return adapter_class(name)(parity=parity, device=device, framework=name)  # type: ignore[call-arg]
