"""Keras on TensorFlow: ``tf.config`` runtime settings and tf.data pipelines.

``pipeline=device`` on TensorFlow: the orientation bank is a TF tensor and each batch is one
``tf.gather`` + cast + scale/shift in a tf.data map (whole-batch ops, prefetched). tf.data runs its
map functions on the host CPU, so the bank lives in host memory: on a CPU that is the compute
device; on a GPU each finished batch is copied over (TensorFlow has no public way to run a tf.data
map on the GPU) — the knob table says so.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from frameworks import pipeline as P
from core.config import ParityConfig, PipelineConfig
from frameworks.base import Batches
from frameworks.keras_backends import KerasBackend
from frameworks.keras_backends.common import available_cores
from frameworks.knobs import cpu_name


class Backend(KerasBackend):
    name = "tensorflow"
    deploy_formats = ("tf_saved_model", "onnx", "litert")

    def __init__(self) -> None:
        self._bank: tuple[str, tuple[int, ...], Any] | None = None
        self._determinism_enabled = False

    @staticmethod
    def prepare_process(parity: ParityConfig, device: str) -> None:
        pass

    def configure(self, parity: ParityConfig, device: str) -> None:
        import tensorflow as tf

        if parity.cpu_threads is not None:
            n = int(parity.cpu_threads)
            for setter, getter in ((tf.config.threading.set_intra_op_parallelism_threads,
                                    tf.config.threading.get_intra_op_parallelism_threads),
                                   (tf.config.threading.set_inter_op_parallelism_threads,
                                    tf.config.threading.get_inter_op_parallelism_threads)):
                try:
                    setter(n)
                except RuntimeError as err:  # TF already initialised its runtime in this process
                    if getter() != n:
                        raise RuntimeError(f"cannot set TensorFlow threads to {n} (runtime already started with "
                                           f"{getter()}); create the adapter before running any TF op") from err
        gpus = tf.config.list_physical_devices("GPU")
        try:
            if device == "cpu":
                tf.config.set_visible_devices([], "GPU")
            else:
                for gpu in gpus:
                    tf.config.experimental.set_memory_growth(gpu, True)  # share the GPU like torch's allocator
        except RuntimeError:
            pass  # already initialised by an earlier adapter in this process: keep what it chose
        if device == "gpu" and not gpus:
            raise RuntimeError("device=gpu requested but TensorFlow sees no GPU")
        if parity.precision is not None:
            tf.config.experimental.enable_tensor_float_32_execution(parity.precision == "tf32")
        if parity.deterministic:
            tf.config.experimental.enable_op_determinism()
            self._determinism_enabled = True

    def seed(self, keras: Any, seed: int) -> None:
        keras.utils.set_random_seed(seed)  # Python, numpy, TF and Keras' global seed generator

    def export_options(self, fmt: str) -> tuple[dict[str, Any], str]:
        import tensorflow as tf

        if fmt == "onnx":
            from importlib import metadata

            return {}, f"tf.function → tf2onnx {metadata.version('tf2onnx')}"
        if fmt == "litert":
            return {}, f"tf.lite.TFLiteConverter (TensorFlow {tf.__version__})"
        return {}, f"TensorFlow {tf.__version__}"

    def versions(self) -> dict[str, str]:
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        return {"tensorflow": tf.__version__, "cuda": str(build.get("cuda_version")),
                "cudnn": str(_cudnn(build))}

    def device_info(self, keras: Any) -> dict[str, Any]:
        import tensorflow as tf

        gpus = tf.config.get_visible_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return {"device": "gpu:0", "device_kind": "gpu", "device_name": details.get("device_name", "gpu")}
        return {"device": "cpu", "device_kind": "cpu", "device_name": cpu_name()}

    def runtime_facts(self) -> tuple[int, int | None, bool]:
        import tensorflow as tf

        intra = tf.config.threading.get_intra_op_parallelism_threads() or available_cores()  # 0 = all cores
        inter = tf.config.threading.get_inter_op_parallelism_threads() or available_cores()
        return intra, inter, bool(tf.config.experimental.tensor_float_32_execution_enabled())

    def deterministic_in_effect(self, parity: ParityConfig) -> bool:
        # TensorFlow has no public reader of its op-determinism flag; it is process-wide and can only
        # be switched on, so this records whether an adapter in this process switched it on.
        return self._determinism_enabled

    def compile_detail(self, jit_compile: bool) -> str:
        return "XLA (tf.function jit_compile=True)" if jit_compile else "tf.function graph"

    def sync(self) -> None:
        pass  # fit/predict return host values: queued device work is already done

    def reset_peak_memory(self) -> None:
        import tensorflow as tf

        if tf.config.get_visible_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_memory_bytes(self) -> int | None:
        import tensorflow as tf

        if tf.config.get_visible_devices("GPU"):
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        return None

    def memory_bytes(self) -> int | None:
        import tensorflow as tf

        if tf.config.get_visible_devices("GPU"):
            return int(tf.config.experimental.get_memory_info("GPU:0")["current"])
        return None

    def release(self) -> None:
        self._bank = None

    # ---- pipelines ---------------------------------------------------------------------------
    def _device_bank(self, batches: Batches) -> tuple[tuple[int, ...], Any]:
        import tensorflow as tf

        augmented = P.plan_is_augmented(batches.hflip, batches.vflip, batches.rot90)
        key = P.images_key(batches.x)
        if self._bank is None or self._bank[0] != key or (augmented and len(self._bank[1]) == 1):
            self._bank = None
            _, height, width, _ = batches.x.shape
            orientations = P.bank_orientations(height, width, augmented)
            # tf.data runs its map functions on the host: a bank on the GPU would be copied back into
            # every dataset built from it, so it lives in host memory (the device itself on a CPU).
            with tf.device("/CPU:0"):
                images = tf.constant(np.asarray(batches.x))
                views = []
                for o in orientations:
                    hflip, turns = P.ORIENTATIONS[o]
                    view = tf.reverse(images, axis=[2]) if hflip else images
                    views.append(tf.image.rot90(view, turns) if turns else view)
                self._bank = (key, orientations, tf.concat(views, axis=0))
        return self._bank[1], self._bank[2]

    def device_dataset(self, keras: Any, batches: Batches, binary: bool) -> Any:
        import tensorflow as tf

        orientations, bank = self._device_bank(batches)
        rows = P.bank_rows(batches.order, batches.hflip, batches.vflip, batches.rot90, len(batches.x), orientations)
        # Scale and shift pre-broadcast to one image (H, W, C): the same float32 products and sums as
        # per-channel vectors, but TensorFlow's CPU kernels broadcast a [C] vector over a whole batch
        # ~4× slower than an image-shaped operand over the batch axis (measured on a 2-core CPU,
        # 64×64 batches of 64: 8,300 → 37,500 img/s for gather + cast + normalise).
        scale, shift = (tf.constant(np.broadcast_to(a, batches.x.shape[1:]).copy())
                        for a in P.normalisation_affine(batches.mean, batches.std))
        y = np.asarray(batches.y[batches.order])
        targets = y.astype(np.float32)[:, None] if binary else y.astype(np.int64)

        def load(rows_batch, targets_batch):  # whole-batch gather + cast + scale/shift
            return tf.cast(tf.gather(bank, rows_batch), tf.float32) * scale + shift, targets_batch

        # Nothing to tune (one whole-batch map, one batch ahead): with autotuning on, tf.data runs a model
        # thread per iterator whose teardown waits for its next wake-up — ~5 s added to about one epoch
        # in three (measured: 10.4 s instead of 5.2 s, all of it after the last step).
        # tf.data's default static optimisations serialise the dataset's graph — the whole image bank,
        # captured as a constant — every time an iterator is made, i.e. every epoch: 0.78 s per epoch for
        # an 805 MB bank (measured; 0.01 s without). One batch-level map has nothing for them to fuse.
        options = tf.data.Options()
        options.autotune.enabled = False
        options.experimental_optimization.apply_default_optimizations = False
        return (tf.data.Dataset.from_tensor_slices((rows, targets)).batch(batches.batch_size)
                .map(load).prefetch(1).with_options(options))

    def native_dataset(self, keras: Any, batches: Batches, binary: bool, settings: PipelineConfig) -> Any:
        """tf.data as its guide advises: per-sample map (tf.image flips, rot90, normalise) with parallel
        calls, batch, prefetch (AUTOTUNE), deterministic order, its own thread pool of ``workers``."""
        import tensorflow as tf

        images = self._host_images(batches.x)
        mean = tf.constant(np.asarray(batches.mean, np.float32))
        std = tf.constant(np.asarray(batches.std, np.float32))
        y = np.asarray(batches.y, np.int64)
        plan = (np.asarray(batches.order, np.int64), np.asarray(batches.hflip, bool), np.asarray(batches.vflip, bool),
                np.asarray(batches.rot90, np.int32) % 4)

        def load(index, hflip, vflip, turns):
            image = tf.gather(images, index)
            image = tf.cond(hflip, lambda: tf.image.flip_left_right(image), lambda: image)
            image = tf.cond(vflip, lambda: tf.image.flip_up_down(image), lambda: image)
            image = tf.image.rot90(image, turns)
            image = (tf.cast(image, tf.float32) / 255.0 - mean) / std
            label = tf.gather(y, index)
            return image, (tf.cast(label, tf.float32)[None] if binary else label)

        options = tf.data.Options()
        options.deterministic = True
        if settings.workers:
            options.threading.private_threadpool_size = int(settings.workers)
        return (tf.data.Dataset.from_tensor_slices(plan)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batches.batch_size)
                .prefetch(tf.data.AUTOTUNE)
                .with_options(options))

    def _host_images(self, x: np.ndarray) -> Any:
        import tensorflow as tf

        key = P.images_key(x)
        if getattr(self, "_host", (None,))[0] != key:
            with tf.device("/CPU:0"):
                self._host = (key, tf.constant(np.asarray(x)))
        return self._host[1]

    def device_inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
        import tensorflow as tf

        scale, shift = (np.broadcast_to(a, x.shape[1:]).copy() for a in P.normalisation_affine(mean, std))
        with tf.device("/GPU:0" if tf.config.get_visible_devices("GPU") else "/CPU:0"):  # image-shaped: see above
            return tf.identity(tf.constant(np.ascontiguousarray(x))), tf.constant(scale), tf.constant(shift)

    def normalise(self, batch: Any) -> Any:
        import tensorflow as tf

        images, scale, shift = batch
        if isinstance(images, np.ndarray):  # native: on the host, as a numpy user would
            return images.astype(np.float32) * scale + shift
        if not hasattr(self, "_norm"):
            self._norm = tf.function(lambda x, s, b: tf.cast(x, tf.float32) * s + b)
        return self._norm(images, scale, shift)


def _cudnn(build) -> str | None:
    """cuDNN as x.y.z: the loaded library's version (TensorFlow's build info has the major only, "9")."""
    from frameworks.versions import cudnn_text, loaded_cudnn

    return loaded_cudnn() or cudnn_text(build.get("cudnn_version"))
