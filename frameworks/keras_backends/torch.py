"""Keras on the torch backend: torch runtime settings, the torch device bank, PyDataset pipelines
(no TensorFlow anywhere)."""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np

from frameworks import pipeline as P
from core.config import ParityConfig, PipelineConfig
from frameworks.base import Batches
from frameworks.keras_backends import KerasBackend
from frameworks.keras_backends.common import batch_dataset, labels, numpy_batch_maker
from frameworks.knobs import cpu_name


class Backend(KerasBackend):
    name = "torch"
    deploy_formats = ("torch_export", "onnx", "tf_saved_model", "litert")

    def __init__(self) -> None:
        self._data = None  # frameworks.pytorch_adapter.DeviceData, NHWC rows

    @staticmethod
    def prepare_process(parity: ParityConfig, device: str) -> None:
        if device == "cpu":
            os.environ["KERAS_TORCH_DEVICE"] = "cpu"  # read once, at the first `import keras`
        if parity.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS

    def configure(self, parity: ParityConfig, device: str) -> None:
        import torch

        if parity.cpu_threads is not None:
            torch.set_num_threads(int(parity.cpu_threads))
            try:
                torch.set_num_interop_threads(int(parity.cpu_threads))
            except RuntimeError:  # only settable before the first inter-op parallel work
                pass
        if device == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("device=gpu requested but torch sees no CUDA device")
        if parity.precision is not None:
            tf32 = parity.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        torch.use_deterministic_algorithms(bool(parity.deterministic), warn_only=True)
        torch.backends.cudnn.deterministic = bool(parity.deterministic)
        torch.backends.cudnn.benchmark = not parity.deterministic  # autotune, as TF and XLA do by default

    def seed(self, keras: Any, seed: int) -> None:
        import torch

        # keras.utils.set_random_seed would also import TensorFlow to seed it.
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def export_unsupported(self, fmt: str) -> str | None:
        if fmt == "tf_saved_model":
            return ("Keras exports a SavedModel from torch through torch_xla (StableHLO) and TensorFlow; a keras_torch "
                    "process never imports TensorFlow, and torch_xla is not installed")
        if fmt == "litert":
            return ("Keras' LiteRT export on torch needs litert-torch (formerly ai-edge-torch), a separate conversion "
                    "toolchain this benchmark does not install")
        return None

    def export_options(self, fmt: str) -> tuple[dict[str, Any], str]:
        import torch

        if fmt == "torch_export":  # batch 2 traced, the batch dimension left dynamic (else it is fixed at 1)
            return ({"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=65536)},)},
                    f"torch.export (torch {torch.__version__})")
        if fmt == "onnx":
            return {}, (f"torch.onnx.export, TorchScript exporter: Keras picks it for a dynamic batch dimension "
                        f"(torch {torch.__version__})")
        return {}, ""

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": str(torch.__version__), "cuda": str(torch.version.cuda)}

    def _device(self, keras: Any):
        return keras.ops.convert_to_tensor(np.zeros(1, np.float32)).device  # where Keras puts tensors

    def device_info(self, keras: Any) -> dict[str, Any]:
        import torch

        device = self._device(keras)
        if device.type == "cuda":
            index = device.index or 0
            return {"device": f"cuda:{index}", "device_kind": "gpu", "device_name": torch.cuda.get_device_name(index)}
        return {"device": "cpu", "device_kind": "cpu", "device_name": cpu_name()}

    def runtime_facts(self) -> tuple[int, int | None, bool]:
        import torch

        return torch.get_num_threads(), torch.get_num_interop_threads(), bool(torch.backends.cuda.matmul.allow_tf32)

    def deterministic_in_effect(self, parity: ParityConfig) -> bool:
        import torch

        return bool(torch.are_deterministic_algorithms_enabled())

    def compile_detail(self, jit_compile: bool) -> str:
        import torch

        step = "torch.compile (inductor) train step" if jit_compile else "eager torch"
        return f"{step}, cudnn.benchmark={bool(torch.backends.cudnn.benchmark)}"

    def sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def reset_peak_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_bytes(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None

    def memory_bytes(self) -> int | None:
        import torch

        return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None

    def release(self) -> None:
        import torch

        self._data = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- pipelines ---------------------------------------------------------------------------
    def device_dataset(self, keras: Any, batches: Batches, binary: bool) -> Any:
        import torch

        from frameworks.pytorch_adapter import DeviceData  # the same torch bank the PyTorch adapter uses

        augmented = P.plan_is_augmented(batches.hflip, batches.vflip, batches.rot90)
        data = self._data
        if data is None or data.key != P.images_key(batches.x) or (augmented and len(data.orientations) == 1):
            self._data = None
            data = self._data = DeviceData(batches.x, batches.y, self._device(keras), channels_last=True,
                                           augmented=augmented)
        rows = data.rows(batches)
        scale, shift = data.affine(batches.mean, batches.std)
        targets = torch.from_numpy(labels(batches.y[batches.order], binary)).to(data.device)

        def make(start: int, stop: int):
            nchw = data.batch(rows[start:stop], scale, shift)  # NCHW view of NHWC memory
            return nchw.permute(0, 2, 3, 1), targets[start:stop]  # NHWC, contiguous, as Keras layers take it

        return batch_dataset(keras, batches, make)

    def native_dataset(self, keras: Any, batches: Batches, binary: bool, settings: PipelineConfig) -> Any:
        return batch_dataset(keras, batches, numpy_batch_maker(batches, binary), workers=settings.workers)

    def device_inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
        import torch

        import keras

        device = self._device(keras)
        scale, shift = P.normalisation_affine(mean, std)
        per_pixel = x.shape[1] * x.shape[2]
        return (torch.from_numpy(np.ascontiguousarray(x)).to(device),
                torch.from_numpy(np.tile(scale, per_pixel)).to(device), torch.from_numpy(np.tile(shift, per_pixel)).to(device))

    def normalise(self, batch: Any) -> Any:
        import torch

        images, scale, shift = batch
        if isinstance(images, np.ndarray):  # native: on the host, as a numpy user would
            return images.astype(np.float32) * scale + shift
        return torch.mul(images.view(len(images), -1), scale).add_(shift).view(images.shape)
