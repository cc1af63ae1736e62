"""Keras on JAX: XLA settings before import, a ``jax.jit`` batch function over a device-resident
orientation bank, PyDataset pipelines (no TensorFlow anywhere)."""
from __future__ import annotations

import os
import platform
import random
from typing import Any

import numpy as np

from frameworks import pipeline as P
from core.config import ParityConfig, PipelineConfig
from frameworks.base import Batches
from frameworks.keras_backends import KerasBackend
from frameworks.keras_backends.common import available_cores, batch_dataset, labels, numpy_batch_maker

_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


class Backend(KerasBackend):
    name = "jax"
    deploy_formats = ("tf_saved_model", "onnx", "litert")

    def __init__(self) -> None:
        self._bank: tuple[str, tuple[int, ...], Any] | None = None  # (images key, orientations, jax array)
        self._batch_fn = None

    @staticmethod
    def prepare_process(parity: ParityConfig, device: str) -> None:
        import sys

        if "jax" in sys.modules:
            return  # already imported in this process (an earlier adapter): its settings stay
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU like torch's allocator
        if device == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
        if parity.cpu_threads is not None and hasattr(os, "sched_setaffinity"):
            # XLA sizes its CPU thread pool from the affinity mask; there is no thread-count knob.
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, cores[: max(1, int(parity.cpu_threads))])
        if parity.deterministic and _DETERMINISTIC_FLAG not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DETERMINISTIC_FLAG).strip()

    def configure(self, parity: ParityConfig, device: str) -> None:
        import jax

        if device == "gpu" and not any(d.platform == "gpu" for d in jax.devices()):
            raise RuntimeError("device=gpu requested but JAX sees no GPU")
        if parity.precision is not None:
            jax.config.update("jax_default_matmul_precision", "tensorfloat32" if parity.precision == "tf32" else "float32")

    def seed(self, keras: Any, seed: int) -> None:
        # keras.utils.set_random_seed would also import TensorFlow to seed it; Keras' initialisers and
        # dropout draw their default seeds from Python's `random`, which is what this seeds.
        random.seed(seed)
        np.random.seed(seed)

    def export_unsupported(self, fmt: str) -> str | None:
        if fmt == "tf_saved_model":
            return ("Keras exports a SavedModel from JAX through jax2tf, which imports TensorFlow; a keras_jax process "
                    "never imports TensorFlow")
        if fmt == "litert":
            return "Keras' LiteRT export runs on the TensorFlow or torch backend only (model.export raises on jax)"
        return None

    def export_options(self, fmt: str) -> tuple[dict[str, Any], str]:
        from importlib import metadata

        return {}, f"jax2onnx {metadata.version('jax2onnx')} (no TensorFlow)" if fmt == "onnx" else ""

    def versions(self) -> dict[str, str]:
        import jax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def device_info(self, keras: Any) -> dict[str, Any]:
        import jax

        from frameworks.knobs import cpu_name

        dev = jax.devices()[0]
        if dev.platform == "gpu":
            return {"device": f"gpu:{dev.id}", "device_kind": "gpu", "device_name": dev.device_kind}
        return {"device": "cpu", "device_kind": "cpu", "device_name": cpu_name() or platform.machine()}

    def runtime_facts(self) -> tuple[int, int | None, bool]:
        import jax

        precision = jax.config.jax_default_matmul_precision
        return available_cores(), None, precision not in ("float32", "highest")

    def deterministic_in_effect(self, parity: ParityConfig) -> bool:
        # XLA:CPU is deterministic; on a GPU the flag set before the import decides.
        import jax

        if jax.devices()[0].platform != "gpu":
            return bool(parity.deterministic)
        return _DETERMINISTIC_FLAG in os.environ.get("XLA_FLAGS", "")

    def compile_detail(self, jit_compile: bool) -> str:
        return "jax.jit (XLA) train/predict step" if jit_compile else "op-by-op JAX dispatch"

    def sync(self) -> None:
        import jax

        jax.effects_barrier()

    def reset_peak_memory(self) -> None:
        self._peak_before = self._memory_stat("peak_bytes_in_use")

    def peak_memory_bytes(self) -> int | None:
        """JAX's peak counter cannot be reset: it is this cell's peak only where the cell set a new one."""
        peak = self._memory_stat("peak_bytes_in_use")
        before = getattr(self, "_peak_before", None)
        return peak if peak is not None and (before is None or peak > before) else None

    def memory_bytes(self) -> int | None:
        return self._memory_stat("bytes_in_use")

    @staticmethod
    def _memory_stat(key: str) -> int | None:
        import jax

        dev = jax.devices()[0]
        if dev.platform != "gpu":
            return None
        stats = dev.memory_stats() or {}
        return int(stats[key]) if key in stats else None

    def release(self) -> None:
        import jax

        self._bank = None
        self._batch_fn = None
        jax.clear_caches()  # compiled executables of earlier models

    # ---- pipelines ---------------------------------------------------------------------------
    def _device_bank(self, batches: Batches) -> tuple[tuple[int, ...], Any]:
        import jax.numpy as jnp

        augmented = P.plan_is_augmented(batches.hflip, batches.vflip, batches.rot90)
        key = P.images_key(batches.x)
        if self._bank is None or self._bank[0] != key or (augmented and len(self._bank[1]) == 1):
            self._bank = None
            _, height, width, _ = batches.x.shape
            orientations = P.bank_orientations(height, width, augmented)
            images = jnp.asarray(np.asarray(batches.x))  # onto the default (compute) device, once
            views = []
            for o in orientations:
                hflip, turns = P.ORIENTATIONS[o]
                view = jnp.flip(images, axis=2) if hflip else images
                views.append(jnp.rot90(view, turns, axes=(1, 2)) if turns else view)
            self._bank = (key, orientations, jnp.concatenate(views))
        return self._bank[1], self._bank[2]

    def _batch(self) -> Any:
        if self._batch_fn is None:
            import jax
            import jax.numpy as jnp

            @jax.jit
            def batch(bank, rows, scale, shift):  # gather + cast + scale/shift, fused by XLA
                return jnp.take(bank, rows, axis=0).astype(jnp.float32) * scale + shift

            self._batch_fn = batch
        return self._batch_fn

    def device_dataset(self, keras: Any, batches: Batches, binary: bool) -> Any:
        import jax.numpy as jnp

        orientations, bank = self._device_bank(batches)
        rows = P.bank_rows(batches.order, batches.hflip, batches.vflip, batches.rot90, len(batches.x), orientations)
        rows = rows.astype(np.int32)
        scale, shift = (jnp.asarray(a) for a in P.normalisation_affine(batches.mean, batches.std))
        targets = labels(batches.y[batches.order], binary)
        fn = self._batch()

        def make(start: int, stop: int):
            return fn(bank, rows[start:stop], scale, shift), targets[start:stop]

        return batch_dataset(keras, batches, make)

    def native_dataset(self, keras: Any, batches: Batches, binary: bool, settings: PipelineConfig) -> Any:
        return batch_dataset(keras, batches, numpy_batch_maker(batches, binary), workers=settings.workers)

    def device_inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
        import jax.numpy as jnp

        scale, shift = P.normalisation_affine(mean, std)
        return jnp.asarray(np.ascontiguousarray(x)), jnp.asarray(scale), jnp.asarray(shift)

    def normalise(self, batch: Any) -> Any:
        images, scale, shift = batch
        if isinstance(images, np.ndarray):  # native: on the host, as a numpy user would
            return images.astype(np.float32) * scale + shift
        return self._normalise_fn()(images, scale, shift)

    def _normalise_fn(self):
        if not hasattr(self, "_norm"):
            import jax
            import jax.numpy as jnp

            self._norm = jax.jit(lambda x, scale, shift: x.astype(jnp.float32) * scale + shift)
        return self._norm
