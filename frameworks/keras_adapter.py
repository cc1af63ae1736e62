"""Native Keras 3 on three backends: ``keras`` (TensorFlow), ``keras_jax`` (JAX), ``keras_torch`` (torch).

The backend is chosen by ``KERAS_BACKEND``, which must be set before ``keras`` is first imported,
so this module imports keras/TensorFlow/JAX/torch only inside ``KerasAdapter.__init__`` (after the
environment is prepared). Input pipelines are each backend's native one over the same epoch plan:
``tf.data`` (gather + augment with TF ops, batch, prefetch) on TensorFlow, and a
``keras.utils.PyDataset`` (numpy gather + augment) on JAX/torch, which never imports TensorFlow.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import math
import os
import platform
import sys
from typing import Any

import numpy as np

from core import spec as S
from frameworks.base import Adapter, Batches, EpochStats, ParitySettings, TrainSettings
from core.batches import apply_augment
from frameworks.knobs import cpu_name, finish_knobs, normalise_numpy, probabilities_from_logits, single_value

BACKEND_OF = {"keras": "tensorflow", "keras_jax": "jax", "keras_torch": "torch"}


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _prepare_process(backend: str, parity: ParitySettings, device: str) -> None:
    """Process-wide settings that must exist before the backend (or keras) is imported."""
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if current != backend:
            raise RuntimeError(
                f"keras is already imported in this process with backend {current!r}; backend {backend!r} "
                "needs its own process (KERAS_BACKEND is read once, at the first `import keras`)")
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax" and "jax" not in sys.modules:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if device == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
        if parity.cpu_threads is not None and hasattr(os, "sched_setaffinity"):
            # XLA sizes its CPU thread pool from the affinity mask; there is no thread-count knob.
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, cores[: max(1, int(parity.cpu_threads))])
        if parity.deterministic and "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    if backend == "torch" and device == "cpu":
        os.environ["KERAS_TORCH_DEVICE"] = "cpu"


_FOREIGN = {"tensorflow": ("jax", "jaxlib", "torch"), "jax": ("tensorflow", "torch"), "torch": ("tensorflow", "jax", "jaxlib")}


class _RefuseImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import <name>`` raise ImportError for the given top-level names (while installed)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, origin=None)  # origin None: "not a file"
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is not loaded next to this Keras backend (one framework per process)")

    def exec_module(self, module):  # pragma: no cover - create_module always raises
        raise ImportError(module.__name__)


@contextlib.contextmanager
def _single_framework(backend: str):
    """While active, imports of the other frameworks raise ImportError (one framework per process).

    Needed because, whatever the backend, keras 3.15 imports jax (``keras/src/callbacks/
    orbax_checkpoint.py``) and ``keras.utils.set_random_seed`` imports TensorFlow when it is
    installed, and TensorFlow imports jax (``tensorflow/lite/python/util.py``) — all inside
    ``try/except ImportError``, so refusing the import is the supported "not installed" path.
    Keras caches the negative answer (``LazyModule.available``), so later calls stay clean too.
    """
    refuse = _RefuseImport(tuple(n for n in _FOREIGN[backend] if n not in sys.modules))
    sys.meta_path.insert(0, refuse)
    try:
        yield
    finally:
        sys.meta_path.remove(refuse)


def _configure_tensorflow(parity: ParitySettings, device: str) -> None:
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
                tf.config.experimental.set_memory_growth(gpu, True)  # share the GPU like torch's allocator does
    except RuntimeError:
        pass  # already initialised by an earlier adapter in this process: keep what it chose
    if device == "gpu" and not gpus:
        raise RuntimeError("device=gpu requested but TensorFlow sees no GPU")
    if parity.precision is not None:
        tf.config.experimental.enable_tensor_float_32_execution(parity.precision == "tf32")
    if parity.deterministic:
        tf.config.experimental.enable_op_determinism()


def _configure_torch(parity: ParitySettings, device: str) -> None:
    import torch

    if parity.cpu_threads is not None:
        torch.set_num_threads(int(parity.cpu_threads))
        try:
            torch.set_num_interop_threads(int(parity.cpu_threads))
        except RuntimeError:
            pass
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("device=gpu requested but torch sees no CUDA device")
    if parity.precision is not None:
        tf32 = parity.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if parity.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _configure_jax(parity: ParitySettings, device: str) -> None:
    import jax

    if device == "gpu" and not any(d.platform == "gpu" for d in jax.devices()):
        raise RuntimeError("device=gpu requested but JAX sees no GPU")
    if parity.precision is not None:
        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if parity.precision == "tf32" else "float32")


# region: model-definition
def build_keras_model(keras: Any, spec: S.ModelSpec, parity: ParitySettings) -> Any:
    """The spec as a functional Keras model; named layers carry the spec's names (for weight porting)."""
    bn_kwargs: dict[str, float] = {}
    if parity.batchnorm_momentum is not None:
        bn_kwargs["momentum"] = 1.0 - parity.batchnorm_momentum  # Keras weighs the OLD value
    if parity.batchnorm_epsilon is not None:
        bn_kwargs["epsilon"] = parity.batchnorm_epsilon
    L = keras.layers
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x = inputs
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, S.Conv2D):
            x = L.Conv2D(layer.filters, layer.kernel_size, padding="same", data_format="channels_last", name=layer.name)(x)
        elif isinstance(layer, S.ReLU):
            x = L.ReLU(name=f"relu_{i}")(x)
        elif isinstance(layer, S.MaxPool2D):
            x = L.MaxPooling2D(layer.pool_size, data_format="channels_last", name=f"pool_{i}")(x)
        elif isinstance(layer, S.BatchNorm):
            x = L.BatchNormalization(name=layer.name, **bn_kwargs)(x)
        elif isinstance(layer, S.GlobalAvgPool):
            x = L.GlobalAveragePooling2D(data_format="channels_last", name=f"gap_{i}")(x)
        elif isinstance(layer, S.Dense):
            x = L.Dense(layer.units, name=layer.name)(x)
        elif isinstance(layer, S.Dropout):
            x = L.Dropout(layer.rate, name=f"dropout_{i}")(x)
        else:
            raise TypeError(f"{spec.name}: unsupported layer {layer!r}")
    return keras.Model(inputs, x, name=spec.name)
# endregion


_BN_PARTS = ("gamma", "beta", "moving_mean", "moving_variance")  # Keras' BatchNormalization weight order


def port_weights(model: Any, spec: S.ModelSpec, weights: dict[str, np.ndarray]) -> None:
    """Canonical weights are already in Keras layout: set them layer by layer, by name."""
    missing = sorted(set(spec.weight_shapes()) - set(weights))
    if missing:
        raise KeyError(f"{spec.name}: weights missing {missing}")
    for layer in spec.layers:
        if isinstance(layer, (S.Conv2D, S.Dense)):
            model.get_layer(layer.name).set_weights([weights[f"{layer.name}.kernel"], weights[f"{layer.name}.bias"]])
        elif isinstance(layer, S.BatchNorm):
            model.get_layer(layer.name).set_weights([weights[f"{layer.name}.{p}"] for p in _BN_PARTS])


def read_weights(model: Any, spec: S.ModelSpec) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for layer in spec.layers:
        if isinstance(layer, (S.Conv2D, S.Dense)):
            kernel, bias = model.get_layer(layer.name).get_weights()
            out[f"{layer.name}.kernel"], out[f"{layer.name}.bias"] = kernel, bias
        elif isinstance(layer, S.BatchNorm):
            for part, value in zip(_BN_PARTS, model.get_layer(layer.name).get_weights()):
                out[f"{layer.name}.{part}"] = value
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


# region: data-pipeline
def dihedral_tables(height: int, width: int) -> np.ndarray:
    """(16, H*W) int32: row ``hflip + 2*vflip + 4*rot90`` holds, for each output pixel, the flat index
    of the source pixel — the numpy reference augmentation applied to an index grid, so the TF
    pipeline applies exactly the same transform with one gather."""
    grid = np.arange(height * width).reshape(1, height, width, 1)
    tables = np.tile(np.arange(height * width), (16, 1))
    for combo in range(16):
        hflip, vflip, turns = combo & 1, (combo >> 1) & 1, combo >> 2
        if turns % 2 == 0 or height == width:  # odd turns of non-square images are refused earlier
            tables[combo] = apply_augment(grid, [hflip], [vflip], [turns]).reshape(-1)
    return tables.astype(np.int32)


def make_tf_dataset(tf: Any, batches: Batches, x_tensor: Any, binary: bool, augment: bool = True,
                    threads: int | None = None) -> Any:
    """tf.data over the epoch plan: batch the (index, transform) plan, then gather + augment +
    normalise with TF ops in a parallel map, and prefetch. ``threads`` caps tf.data's own thread
    pool, so the input pipeline stays inside the same CPU-thread budget as the other frameworks."""
    _, height, width, channels = batches.x.shape
    tables = tf.constant(dihedral_tables(height, width))
    mean = tf.constant(np.asarray(batches.mean, np.float32))
    std = tf.constant(np.asarray(batches.std, np.float32))
    labels_all = tf.constant(np.asarray(batches.y, np.int64))
    combo = (np.asarray(batches.hflip, np.int32) + 2 * np.asarray(batches.vflip, np.int32)
             + 4 * (np.asarray(batches.rot90, np.int32) % 4))
    plan = (np.asarray(batches.order, np.int64), combo)

    def load(idx, transform):
        images = tf.gather(x_tensor, idx)
        if augment:  # per-sample hflip → vflip → rot90 as one pixel permutation per sample
            flat = tf.reshape(images, [-1, height * width, channels])
            images = tf.reshape(tf.gather(flat, tf.gather(tables, transform), batch_dims=1),
                                [-1, height, width, channels])
        images = (tf.cast(images, tf.float32) / 255.0 - mean) / std
        labels = tf.gather(labels_all, idx)
        labels = tf.cast(labels, tf.float32)[:, None] if binary else labels
        return images, labels

    options = tf.data.Options()
    options.deterministic = True
    if threads is not None:
        options.threading.private_threadpool_size = int(threads)
        options.threading.max_intra_op_parallelism = 1
    return (tf.data.Dataset.from_tensor_slices(plan)
            .batch(batches.batch_size, drop_remainder=False)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options))


def make_py_dataset(keras: Any, batches: Batches, binary: bool, augment: bool = True) -> Any:
    """A ``keras.utils.PyDataset`` over the epoch plan (numpy gather + augment + normalise)."""

    class EpochPlanDataset(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.n, self.batch_size = len(batches.order), batches.batch_size

        def __len__(self) -> int:
            return math.ceil(self.n / self.batch_size)

        def __getitem__(self, i: int):
            start, stop = i * self.batch_size, min((i + 1) * self.batch_size, self.n)
            idx = batches.order[start:stop]
            images = batches.x[idx]
            if augment:
                images = apply_augment(images, batches.hflip[start:stop], batches.vflip[start:stop],
                                             batches.rot90[start:stop])
            labels = np.asarray(batches.y[idx])
            labels = labels.astype(np.float32)[:, None] if binary else labels.astype(np.int64)
            return normalise_numpy(images, batches.mean, batches.std), labels

    return EpochPlanDataset()
# endregion


def _check_plan(batches: Batches) -> None:
    n = len(batches.order)
    if not (len(batches.hflip) == len(batches.vflip) == len(batches.rot90) == n):
        raise ValueError("Batches.order/hflip/vflip/rot90 must have the same length")
    if batches.x.ndim != 4:
        raise ValueError(f"Batches.x must be uint8 (N, H, W, C), got shape {batches.x.shape}")
    if np.any(np.asarray(batches.rot90) % 2) and batches.x.shape[1] != batches.x.shape[2]:
        raise ValueError(f"rot90 by an odd number of quarter turns needs square images, got {batches.x.shape[1:3]}")


class KerasAdapter(Adapter):
    name = "keras"
    backend = "tensorflow"
    bn_moving_variance_estimator = "biased"  # BN moving-variance update uses the biased batch variance (torch: unbiased)

    def __init__(self, parity: ParitySettings, device: str = "auto", framework: str | None = None) -> None:
        super().__init__(parity, device, framework)
        if self.name not in BACKEND_OF:
            raise ValueError(f"KerasAdapter serves {sorted(BACKEND_OF)}, not {self.name!r}")
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {device!r}")
        self.backend = BACKEND_OF[self.name]
        if parity.precision not in (None, "fp32", "tf32", "mixed_bf16"):
            raise ValueError(f"precision must be fp32, tf32 or mixed_bf16, got {parity.precision!r}")
        if parity.compile not in (None, "off", "on"):
            raise ValueError(f"compile must be off or on, got {parity.compile!r}")
        _prepare_process(self.backend, parity, device)
        with _single_framework(self.backend):
            {"tensorflow": _configure_tensorflow, "torch": _configure_torch, "jax": _configure_jax}[self.backend](parity, device)
            import keras

            if keras.backend.backend() != self.backend:  # e.g. keras imported between the check and here
                raise RuntimeError(f"keras runs backend {keras.backend.backend()!r}, wanted {self.backend!r}")
            keras.utils.set_random_seed(0)  # probes (and caches) which other frameworks are importable
        self.keras = keras
        self.model = None
        self._x_cache: tuple[Any, Any] | None = None  # (numpy array, tf tensor) for tf.data gathers

    # ---- environment ------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        out = {"keras": self.keras.__version__, "numpy": np.__version__, "python": platform.python_version()}
        if self.backend == "tensorflow":
            import tensorflow as tf

            build = tf.sysconfig.get_build_info()
            out.update(tensorflow=tf.__version__, cuda=str(build.get("cuda_version")), cudnn=str(build.get("cudnn_version")))
        elif self.backend == "jax":
            import jax
            import jaxlib

            out.update(jax=jax.__version__, jaxlib=jaxlib.__version__)
        else:
            import torch

            out.update(torch=str(torch.__version__), cuda=str(torch.version.cuda))
        return out

    def device_info(self) -> dict[str, Any]:
        if self.backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.get_visible_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return {"device": "gpu:0", "device_kind": "gpu", "device_name": details.get("device_name", "gpu")}
        elif self.backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform == "gpu":
                return {"device": f"gpu:{dev.id}", "device_kind": "gpu", "device_name": dev.device_kind}
        else:
            import torch

            from keras.src.backend.torch.core import get_device

            if str(get_device()).startswith("cuda"):
                return {"device": "cuda:0", "device_kind": "gpu", "device_name": torch.cuda.get_device_name(0)}
        return {"device": "cpu", "device_kind": "cpu", "device_name": cpu_name()}

    # ---- model ------------------------------------------------------------------------
    def build(self, spec: S.ModelSpec, train: TrainSettings, weights: dict[str, np.ndarray] | None) -> None:
        keras, p = self.keras, self.parity
        if train.optimizer.lower() != "adam":
            raise ValueError(f"optimizer {train.optimizer!r} is not supported (only adam)")
        keras.backend.clear_session()  # also resets the global dtype policy and the seed generator
        if p.precision is not None:
            keras.mixed_precision.set_global_policy("mixed_bfloat16" if p.precision == "mixed_bf16" else "float32")
        with _single_framework(self.backend):
            keras.utils.set_random_seed(int(train.seed))  # native init and dropout masks
        self.spec, self.train_settings = spec, train
        self.model = build_keras_model(keras, spec, p)
        self.weights_ported = weights is not None
        if weights is not None:
            port_weights(self.model, spec, weights)
        adam_kwargs = {k: v for k, v in (("beta_1", p.adam_beta_1), ("beta_2", p.adam_beta_2),
                                           ("epsilon", p.adam_epsilon)) if v is not None}
        optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate, **adam_kwargs)
        reduction = _keras_reduction(p.loss_reduction)
        # Multi-class: SparseCategoricalCrossentropy on integer labels (the same softmax CE as one-hot
        # CategoricalCrossentropy, and what torch's CrossEntropyLoss takes), so no one-hot copy.
        if spec.binary:
            self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True, reduction=reduction)
            metric = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)  # threshold on the logit
        else:
            self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
            metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        jit = {"off": False, "on": True, None: "auto"}[p.compile]
        self.model.compile(optimizer=optimizer, loss=self.loss_fn, metrics=[metric], jit_compile=jit)

    def _require_model(self) -> Any:
        if self.model is None:
            raise RuntimeError("build() must be called first")
        return self.model

    def get_weights(self) -> dict[str, np.ndarray]:
        return read_weights(self._require_model(), self.spec)

    def param_counts(self) -> dict[str, int]:
        model = self._require_model()
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        return {"trainable": trainable, "total": int(model.count_params())}

    def knobs(self) -> dict[str, Any]:
        keras, model = self.keras, self._require_model()
        bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        opt = model.optimizer
        policy = keras.mixed_precision.global_policy()
        intra, inter, tf32 = self._runtime_facts()
        jit = bool(model.jit_compile)
        return finish_knobs({
            "framework": self.name,
            "backend": self.backend,
            "parity_mode": self.parity.mode,
            "device": self.device_info()["device"],
            "batchnorm_layers": len(bns),
            "batchnorm_momentum": single_value([1.0 - layer.momentum for layer in bns], "BatchNorm momentum"),
            "batchnorm_epsilon": single_value([layer.epsilon for layer in bns], "BatchNorm epsilon"),
            "optimizer": type(opt).__name__,
            "adam_beta_1": float(opt.beta_1),
            "adam_beta_2": float(opt.beta_2),
            "adam_epsilon": float(opt.epsilon),
            "adam_epsilon_placement": "before_bias_correction",
            "learning_rate": float(f"{float(keras.ops.convert_to_numpy(opt.learning_rate)):.7g}"),  # a float32 variable
            "weight_init": "ported" if self.weights_ported else "native:glorot_uniform+zero_bias",
            "loss": type(self.loss_fn).__name__,
            "loss_reduction": {"sum_over_batch_size": "mean"}.get(self.loss_fn.reduction, self.loss_fn.reduction),
            "loss_from_logits": bool(self.loss_fn.from_logits),
            "output_activation": "sigmoid" if self.spec.binary else "softmax",
            "precision": self.parity.precision,
            "compute_dtype": policy.compute_dtype,
            "matmul_tf32": tf32,
            "conv_tf32": tf32,
            "compile": "on" if jit else "off",
            "compile_detail": f"jit_compile={jit}" + (" (JAX: op-by-op eager dispatch)" if self.backend == "jax" and not jit else ""),
            "cpu_threads_intra_op": intra,
            "cpu_threads_inter_op": inter,
            "deterministic": self._deterministic_in_effect(),
            "data_pipeline": (f"tf.data(map+prefetch AUTOTUNE, threadpool={self.parity.cpu_threads or 'default'})" if self.backend == "tensorflow"
                              else "keras.utils.PyDataset(workers=1)"),
        })

    def _runtime_facts(self) -> tuple[int, int | None, bool]:
        """(intra-op threads, inter-op threads, TF32 allowed) as the backend reports them."""
        if self.backend == "tensorflow":
            import tensorflow as tf

            intra = tf.config.threading.get_intra_op_parallelism_threads() or _available_cores()  # 0 = all cores
            inter = tf.config.threading.get_inter_op_parallelism_threads() or _available_cores()
            return intra, inter, bool(tf.config.experimental.tensor_float_32_execution_enabled())
        if self.backend == "torch":
            import torch

            return torch.get_num_threads(), torch.get_num_interop_threads(), bool(torch.backends.cuda.matmul.allow_tf32)
        import jax

        precision = jax.config.jax_default_matmul_precision
        return _available_cores(), None, precision not in ("float32", "highest")

    def _deterministic_in_effect(self) -> bool:
        if self.backend == "tensorflow":
            import tensorflow as tf

            from tensorflow.python.framework import config as tf_config  # not exported under tf.config

            return bool(tf_config.is_op_determinism_enabled())
        if self.backend == "torch":
            import torch

            return bool(torch.are_deterministic_algorithms_enabled())
        # XLA:CPU is deterministic; on GPU the flag set in _prepare_process decides.
        return bool(self.parity.deterministic and "--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", ""))

    # ---- pipelines --------------------------------------------------------------------
    def _x_tensor(self, x: np.ndarray) -> Any:
        """The whole image array as one host-side TF tensor, converted once per array (tf.data gathers from it)."""
        import tensorflow as tf

        if self._x_cache is None or self._x_cache[0] is not x:
            with tf.device("/CPU:0"):
                self._x_cache = (x, tf.constant(np.asarray(x)))
        return self._x_cache[1]

    def make_dataset(self, batches: Batches, augment: bool = True) -> Any:
        """The native input pipeline for ``batches`` (public so tests can compare it to the numpy reference)."""
        _check_plan(batches)
        if self.backend == "tensorflow":
            import tensorflow as tf

            return make_tf_dataset(tf, batches, self._x_tensor(batches.x), self.spec.binary, augment,
                                   threads=self.parity.cpu_threads)
        return make_py_dataset(self.keras, batches, self.spec.binary, augment)

    # ---- compute ----------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        model = self._require_model()
        out = model(self.keras.ops.convert_to_tensor(np.asarray(x, np.float32)), training=training)
        return np.asarray(self.keras.ops.convert_to_numpy(out), np.float32)

    # region: training-loop
    def train_epoch(self, batches: Batches) -> EpochStats:
        model = self._require_model()
        if len(batches.order) == 0:
            raise ValueError("train_epoch got an empty epoch plan (Batches.order is empty)")
        history = model.fit(self.make_dataset(batches), epochs=1, shuffle=False, verbose=0)
        n = len(batches.order)
        return EpochStats(loss=float(history.history["loss"][-1]), accuracy=float(history.history["accuracy"][-1]),
                          samples=n, steps=math.ceil(n / batches.batch_size))
    # endregion

    def _logits(self, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray, batch_size: int) -> np.ndarray:
        n = len(x)
        plan = Batches(x=x, y=np.asarray(y, np.int64), order=np.arange(n), hflip=np.zeros(n, bool),
                       vflip=np.zeros(n, bool), rot90=np.zeros(n, np.int8), batch_size=batch_size, mean=mean, std=std)
        return np.asarray(self._require_model().predict(self.make_dataset(plan, augment=False), verbose=0), np.float32)

    def evaluate(self, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 batch_size: int) -> tuple[float, np.ndarray]:
        logits = self._logits(x, y, mean, std, batch_size)
        y = np.asarray(y)
        target = y.astype(np.float32)[:, None] if self.spec.binary else y.astype(np.int64)
        loss = self.loss_fn(target, logits)
        loss = float(self.keras.ops.convert_to_numpy(loss))
        if self.loss_fn.reduction == "sum":
            loss /= max(len(y), 1)
        return loss, probabilities_from_logits(logits, self.spec.binary)

    def predict(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        # predict_on_batch runs the compiled predict function (graph / jit per jit_compile) and
        # returns host numpy, i.e. it has waited for the device.
        logits = self._require_model().predict_on_batch(normalise_numpy(np.asarray(x), mean, std))
        return probabilities_from_logits(np.asarray(logits, np.float32), self.spec.binary)

    def sync(self) -> None:
        if self.backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
        elif self.backend == "jax":
            import jax

            jax.effects_barrier()
        # TensorFlow: fit/predict return host values, so queued device work is already done.

    # ---- memory -----------------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        kind = self.device_info()["device_kind"]
        if kind != "gpu":
            return
        if self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
        elif self.backend == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_device_memory_bytes(self) -> int | None:
        if self.device_info()["device_kind"] != "gpu":
            return None
        if self.backend == "tensorflow":
            import tensorflow as tf

            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        if self.backend == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated())
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None


def _keras_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be mean or sum, got {reduction!r}")
    return "sum_over_batch_size" if reduction == "mean" else "sum"

