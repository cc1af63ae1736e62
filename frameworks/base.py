"""The one contract every framework adapter implements (benchopt-style: small, explicit).

Lifecycle inside one process (a Ray actor or ``python -m runner.cell``)::

    adapter = get_adapter("pytorch", parity, device, pipeline)   # imports the framework, applies threads/precision/determinism
    adapter.configure(options)                    # the framework node's own options (config_schema)
    adapter.build(spec, train, weights, seed)     # native model + optimizer in the execution mode; ported weights
    for epoch in range(E):
        stats = adapter.train_epoch(batches)      # the only part timed as "training" (by the caller)
        loss, scores = adapter.evaluate(plan)     # validation / test (``eval_plan``)
    handle = adapter.inference_input(x, mean, std)   # untimed: the batch where the pipeline keeps data
    adapter.infer(handle)                         # timed for latency/throughput by the caller
    adapter.sync()                                # waits for queued device work before a clock is read
    for fmt in adapter.deploy_formats():          # after training, if train.deploy.enabled (runner.cell.deploy)
        adapter.export_unsupported(fmt) or adapter.export(fmt, directory)   # → frameworks.serving, fresh process

Inputs are always the prepared dataset's uint8 NHWC arrays plus index/augmentation plans from
``core.batches``. ``pipeline=device`` (default) keeps the images on the compute device and makes each
batch there in whole-batch ops (``frameworks.pipeline``); ``pipeline=native`` uses the framework's own
loading tools (DataLoader / tf.data / PyDataset). Both normalise with the train split's mean/std.

Execution modes (``parity.execution``), the same words in every framework, read back into the knobs:

=========  ==============================================  ===================================
mode       Keras (``model.compile(jit_compile=…)``)          PyTorch
=========  ==============================================  ===================================
default    ``"auto"``: XLA on JAX, tf.function graph on     eager ``nn.Module``
           TF (XLA on a TF GPU), eager on torch
compiled   ``True``: XLA on JAX and TF, torch.compile on     ``torch.compile(model)``
           the torch backend
=========  ==============================================  ===================================

Keras on JAX is never run op by op (both modes jit the step). A combination a framework cannot
honour is named by its adapter's ``unsupported`` and its cell is skipped with that reason.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from core.batches import Batches  # noqa: F401  (part of the contract; defined in the ground floor)
from core.config import FrameworkConfig, ParityConfig, PipelineConfig, TrainConfig
from core.registry import framework
from core.spec import ModelSpec
from frameworks.knobs import Knobs


@dataclass
class EpochStats:
    """What ``train_epoch`` returns: mean training loss/accuracy over the epoch's samples, and the
    wall time of every optimizer step (end of step k-1 to end of step k, the first from the call's
    start), measured where the device finished the step: CUDA events on a GPU, completion of the
    step's outputs elsewhere — never a per-step host synchronisation the loop would not do anyway."""

    loss: float
    accuracy: float
    samples: int
    steps: int
    step_seconds: list[float] | None = None


@dataclass(frozen=True)
class Artifact:
    """What ``Adapter.export`` wrote: where, the input it takes, and how it was made."""

    path: str  # the file, or the directory of a directory format (SavedModel)
    input_layout: str  # NHWC | NCHW: the layout of the normalised float32 batch it takes (batch size dynamic)
    exporter: str  # the call that wrote it and the exporter's version (the ``exporter`` column)


def eval_plan(x: np.ndarray, y: np.ndarray, indices: np.ndarray, mean: np.ndarray, std: np.ndarray,
              batch_size: int) -> Batches:
    """A plan over ``x[indices]`` in order, without augmentation (validation / test)."""
    n = len(indices)
    return Batches(x=x, y=np.asarray(y, np.int64), order=np.asarray(indices, np.int64), hflip=np.zeros(n, bool),
                   vflip=np.zeros(n, bool), rot90=np.zeros(n, np.int8), batch_size=int(batch_size),
                   mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32))


def check_plan(batches: Batches) -> None:
    n = len(batches.order)
    if not (len(batches.hflip) == len(batches.vflip) == len(batches.rot90) == n):
        raise ValueError("Batches.order/hflip/vflip/rot90 must have the same length")
    if batches.x.ndim != 4:
        raise ValueError(f"Batches.x must be uint8 (N, H, W, C), got shape {batches.x.shape}")
    if np.any(np.asarray(batches.rot90) % 2) and batches.x.shape[1] != batches.x.shape[2]:
        raise ValueError(f"rot90 by an odd number of quarter turns needs square images, got {batches.x.shape[1:3]}")


class Adapter(abc.ABC):
    """Builds a ``ModelSpec`` natively in one framework, trains, predicts and reports facts.

    Everything the runner, the equivalence gate and the report read of an adapter is declared here:
    the class attributes below, the abstract methods, and the optional methods with their defaults.
    Nothing else is looked up (no ``getattr`` with a fallback elsewhere)."""

    # ---- what the runner, gate and report read without building anything ------------------
    #: The registry name (``core.registry``); set per instance by ``get_adapter`` (one class may serve several).
    name: str
    #: What computes: ``torch`` | ``tensorflow`` | ``jax`` | ``numpy`` (the registry row's backend).
    backend: str
    #: False for a stand-in that does not build the ``ModelSpec`` (the numpy fake): ``run_cell`` does not
    #: compare ``param_counts()`` with the spec's, and the equivalence gate does not check it.
    builds_spec: ClassVar[bool] = True
    #: How BatchNorm's moving variance is updated: ``unbiased`` (n/(n-1), torch) | ``biased`` (Keras) |
    #: ``none`` (no BatchNorm); the gate undoes the difference before comparing one optimizer step.
    bn_moving_variance_estimator: ClassVar[str] = "unbiased"
    #: The schema of this framework's ``conf/framework/<name>.yaml`` (its own options, e.g. PyTorch's
    #: ``memory_format``); ``configure`` receives the checked, frozen node.
    config_schema: ClassVar[type[FrameworkConfig]] = FrameworkConfig

    def __init__(self, parity: ParityConfig, device: str = "auto", framework: str | None = None,
                 pipeline: PipelineConfig | None = None) -> None:
        self.parity = parity
        self.device_request = device  # "auto" | "cpu" | "gpu"; Ray's CUDA_VISIBLE_DEVICES already pins the GPU
        self.pipeline = pipeline or PipelineConfig()
        if framework is not None:
            self.name = framework

    @classmethod
    def unsupported(cls, framework: str, execution: str, deterministic: bool, device: str) -> str | None:
        """Why this framework cannot honour the combination (the cell becomes a ``skipped`` row with this
        reason), or None. Asked before the adapter is made: making it may change process-wide state."""
        return None

    def configure(self, options: FrameworkConfig) -> None:
        """The framework node's own options (an instance of ``config_schema``), before each cell."""

    def set_pipeline(self, pipeline: PipelineConfig) -> None:
        """Switch between ``device``/``native`` for the next cells."""
        self.pipeline = pipeline

    # ---- hardware-dependent choices, measured (runner/cell/tuning.py) -------------------
    def tunables(self) -> dict[str, tuple[str, ...]]:
        """The choices whose best value depends on the device and that the config leaves to measurement
        (``auto``): knob → candidates. The runner times each candidate for a few untimed training steps
        on this device before the first timed cell of a condition and keeps the fastest (``use``)."""
        return {}

    def use(self, knob: str, value: str) -> None:
        """Apply one candidate of ``tunables()[knob]`` to the next ``build``."""
        raise KeyError(f"{self.name} has no tunable knob {knob!r}")

    def release(self) -> None:
        """Drop what an earlier cell left behind (model, optimizer, compiled functions, the device copy of
        the data, loader workers), so that every cell starts from the same state and its memory figures do
        not depend on which cells ran before it in this process."""

    # ---- environment ------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework and library versions, e.g. {"torch": "2.5.1", "cuda": "12.4", "cudnn": "9.1"}."""

    @abc.abstractmethod
    def device_info(self) -> dict[str, Any]:
        """{"device": "cpu" | "cuda:0", "device_kind": "cpu" | "gpu", "device_name": str}."""

    # ---- model ------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, spec: ModelSpec, train: TrainConfig, weights: dict[str, np.ndarray] | None, seed: int = 0) -> None:
        """Native model + optimizer + loss. ``weights`` (canonical layout) are ported when given; ``seed``
        seeds the framework's own RNG (dropout masks, native init)."""

    @abc.abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """Current weights in the canonical (Keras) layout of ``core.spec``."""

    @abc.abstractmethod
    def param_counts(self) -> dict[str, int]:
        """{"trainable": …, "total": …} counted from the built model (must equal the spec's)."""

    @abc.abstractmethod
    def knobs(self) -> Knobs:
        """Parity knobs read back from the built model/optimizer/runtime (not echoed from config): exactly
        the keys of ``frameworks.knobs.Knobs`` (``finish_knobs`` checks them)."""

    # ---- compute ----------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits for already-normalised float32 NHWC input (the equivalence gate uses this)."""

    @abc.abstractmethod
    def train_epoch(self, batches: Batches) -> EpochStats:
        """One epoch over ``batches`` through the framework's native input pipeline."""

    @abc.abstractmethod
    def evaluate(self, plan: Batches) -> tuple[float, np.ndarray]:
        """Mean loss and class probabilities ``(n, num_classes)`` over ``plan`` (no augmentation, eval mode),
        through the same pipeline as training (``eval_plan`` builds one)."""

    @abc.abstractmethod
    def inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
        """One uint8 NHWC batch made ready for ``infer`` where the pipeline keeps its data (untimed):
        on the compute device for ``pipeline=device``, host memory for ``native``."""

    @abc.abstractmethod
    def infer(self, batch: Any) -> np.ndarray:
        """Class probabilities for a batch from ``inference_input``: normalise + forward in eval /
        inference mode and the execution mode of training, synchronised (timed by the caller)."""

    def predict(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Class probabilities for one uint8 batch (``infer(inference_input(...))``)."""
        return self.infer(self.inference_input(x, mean, std))

    @abc.abstractmethod
    def sync(self) -> None:
        """Block until queued device work is done (no-op on CPU); called before reading clocks."""

    # ---- deployment (runner.cell.deploy; serving in frameworks.serving) ----------------
    def deploy_formats(self) -> tuple[str, ...]:
        """The deployment formats (``core.registry.DEPLOY_FORMATS``) this framework's users deploy with, its own
        serving format first; each becomes a row: written by ``export``, or ``skipped`` with the reason
        ``export_unsupported`` gives. Empty: nothing to export."""
        return ()

    def export_unsupported(self, fmt: str) -> str | None:
        """Why this framework (backend, process) cannot produce ``fmt``, naming the missing piece; None if it can."""
        return None

    def export(self, fmt: str, directory: Path) -> Artifact:
        """Write the built (trained) model in ``fmt`` into the existing ``directory``: inference mode, the batch
        dimension dynamic, outputs = the logits of ``forward``. Raises on failure (the row becomes ``failed``)."""
        raise NotImplementedError(f"{self.name}: no exporter for deployment format {fmt!r}")

    # ---- memory -----------------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        """Reset the framework-native peak device-memory counter (nothing to reset on CPU)."""

    def peak_device_memory_bytes(self) -> int | None:
        """Framework-native peak device memory since the last reset; ``None`` on CPU."""
        return None

    def device_memory_bytes(self) -> int | None:
        """Framework-native device memory in use now; ``None`` on CPU."""
        return None


def adapter_class(name: str) -> type[Adapter]:
    """Import (only now) the module of adapter ``name`` (``core.registry``)."""
    module, cls = framework(name).adapter.split(":")
    return getattr(importlib.import_module(module), cls)


def get_adapter(name: str, parity: ParityConfig, device: str = "auto",
                pipeline: PipelineConfig | None = None) -> Adapter:
    return adapter_class(name)(parity=parity, device=device, framework=name, pipeline=pipeline)
