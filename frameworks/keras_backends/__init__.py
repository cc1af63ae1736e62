"""The backend-specific half of the Keras adapter: one small module per Keras backend behind one
interface (``KerasBackend``), as Keras itself keeps ``keras/src/backend/<name>/``.

``frameworks/keras_adapter.py`` is written once against this interface and never branches on the
backend. Each module imports its framework only inside its methods, uses public APIs only, and
is loaded only in the process that runs that backend (the adapter sets ``KERAS_BACKEND`` first).

============  ===================  ============================================================
framework     module               what differs
============  ===================  ============================================================
keras         ``tensorflow``       threads/TF32/determinism via ``tf.config``; tf.data pipelines
keras_jax     ``jax``              XLA flags + affinity before import; ``jax.jit`` batch function
keras_torch   ``torch``            ``torch`` runtime settings; the torch device bank
============  ===================  ============================================================
"""
from __future__ import annotations

import abc
import importlib
from typing import Any

import numpy as np

from core.registry import FRAMEWORKS
from core.config import ParityConfig, PipelineConfig
from frameworks.base import Batches

#: Keras adapter name → Keras backend (also the module name here).
BACKEND_OF = {f.name: f.backend for f in FRAMEWORKS.values() if f.adapter.endswith(":KerasAdapter")}  # core.registry


class KerasBackend(abc.ABC):
    """What the Keras adapter needs from one backend. ``keras`` arguments are the imported module."""

    name: str

    # ---- process and runtime (before / right after the framework import) -------------------
    @staticmethod
    @abc.abstractmethod
    def prepare_process(parity: ParityConfig, device: str) -> None:
        """Environment that must exist before the backend (or keras) is imported; imports nothing."""

    @abc.abstractmethod
    def configure(self, parity: ParityConfig, device: str) -> None:
        """Import the framework; apply threads, precision and determinism; check the device."""

    @abc.abstractmethod
    def seed(self, keras: Any, seed: int) -> None:
        """Seed Python, numpy, Keras' initialisers/dropout and the framework's own generator."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """The backend framework's versions (keras/numpy/python are added by the adapter)."""

    @abc.abstractmethod
    def device_info(self, keras: Any) -> dict[str, Any]:
        """{"device", "device_kind", "device_name"} of where Keras computes."""

    @abc.abstractmethod
    def runtime_facts(self) -> tuple[int, int | None, bool]:
        """(intra-op threads, inter-op threads or None, TF32 allowed) as the framework reports them."""

    @abc.abstractmethod
    def deterministic_in_effect(self, parity: ParityConfig) -> bool:
        """Whether deterministic kernels are in force in this process."""

    def compile_detail(self, jit_compile: bool) -> str:
        """What ``model.compile(jit_compile=…)`` resolved to runs as, in this backend's words."""
        return f"jit_compile={jit_compile}"

    @abc.abstractmethod
    def sync(self) -> None:
        """Block until queued device work is done."""

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory_bytes(self) -> int | None:
        return None

    def memory_bytes(self) -> int | None:
        """Device memory in use now (framework-native counter); ``None`` on CPU."""
        return None

    def release(self) -> None:
        """Drop the device copy of the data and the framework's compiled-function caches (after Keras'
        ``clear_session``), so the next cell starts from the state every cell starts from."""
    # ---- deployment (``model.export``) --------------------------------------------------------
    #: The deployment formats (``core.registry.DEPLOY_FORMATS``) Keras' ``model.export`` offers on this backend's
    #: ecosystem, the backend's own serving format first (``Adapter.deploy_formats``).
    deploy_formats: tuple[str, ...] = ("onnx",)

    def export_unsupported(self, fmt: str) -> str | None:
        """Why Keras on this backend cannot produce ``fmt`` in this process (naming the missing piece), or None."""
        return None

    def export_options(self, fmt: str) -> tuple[dict[str, Any], str]:
        """(extra ``model.export`` keyword arguments, how the format is made on this backend in words)."""
        return {}, ""

    # ---- pipelines ---------------------------------------------------------------------------
    @abc.abstractmethod
    def device_dataset(self, keras: Any, batches: Batches, binary: bool) -> Any:
        """``pipeline=device``: what ``model.fit``/``predict`` consume; images resident on the compute
        device (put there once per prepared array), each batch gathered + normalised there."""

    @abc.abstractmethod
    def native_dataset(self, keras: Any, batches: Batches, binary: bool, settings: PipelineConfig) -> Any:
        """``pipeline=native``: the loading tools this backend's users are told to use."""

    @abc.abstractmethod
    def device_inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
        """A uint8 batch put on the compute device (untimed), for ``normalise``."""

    @abc.abstractmethod
    def normalise(self, batch: Any) -> Any:
        """Normalised float32 NHWC tensor from ``device_inference_input`` (on the device), or from a
        host ``(uint8 array, scale, shift)`` triple (native)."""


def load(framework: str) -> KerasBackend:
    """The backend module of a Keras adapter name (``keras``, ``keras_jax``, ``keras_torch``)."""
    if framework not in BACKEND_OF:
        raise ValueError(f"the Keras adapter serves {sorted(BACKEND_OF)}, not {framework!r}")
    return importlib.import_module(f"frameworks.keras_backends.{BACKEND_OF[framework]}").Backend()
