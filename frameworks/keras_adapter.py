"""Native Keras 3 on three backends: ``keras`` (TensorFlow), ``keras_jax`` (JAX), ``keras_torch`` (torch).

This module is written once against Keras' public API and ``frameworks.keras_backends.KerasBackend``;
everything that differs between backends (runtime settings, device facts, seeding, the input
pipelines, synchronisation, memory counters) lives in one small module per backend there.

The backend is chosen by ``KERAS_BACKEND``, read once at the first ``import keras``, so keras is
imported only inside ``KerasAdapter.__init__``, after the backend module prepared the process.
``keras_jax`` and ``keras_torch`` never import TensorFlow (keras itself imports jax on every
backend; nothing of it runs outside ``keras_jax``).
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from frameworks import keras_backends
from core import spec as S
from core.config import KerasFrameworkConfig, ParityConfig, PipelineConfig, TrainConfig
from frameworks.base import Adapter, Artifact, Batches, EpochStats, check_plan
from frameworks.knobs import finish_knobs, probabilities_from_logits, single_value
from frameworks.pipeline import normalisation_affine


# region: model-definition
def build_keras_model(keras: Any, spec: S.ModelSpec, parity: ParityConfig, data_format: str = "channels_last") -> Any:
    """The spec as a functional Keras model; named layers carry the spec's names (for weight porting).
    ``channels_first``: the NHWC input is permuted once, then every conv/pool/BN layer runs NCHW (same
    weights: Keras keeps HWIO kernels in both formats)."""
    bn_kwargs: dict[str, Any] = {"axis": 1 if data_format == "channels_first" else -1}
    if parity.batchnorm_momentum is not None:
        bn_kwargs["momentum"] = 1.0 - parity.batchnorm_momentum  # Keras weighs the OLD value
    if parity.batchnorm_epsilon is not None:
        bn_kwargs["epsilon"] = parity.batchnorm_epsilon
    L = keras.layers
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x = L.Permute((3, 1, 2), name="to_channels_first")(inputs) if data_format == "channels_first" else inputs
    flat = False  # after global pooling BN normalises (N, C): the channel axis is the last one in both formats
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, S.Conv2D):
            x = L.Conv2D(layer.filters, layer.kernel_size, padding="same", data_format=data_format, name=layer.name)(x)
            flat = False
        elif isinstance(layer, S.ReLU):
            x = L.ReLU(name=f"relu_{i}")(x)
        elif isinstance(layer, S.MaxPool2D):
            x = L.MaxPooling2D(layer.pool_size, data_format=data_format, name=f"pool_{i}")(x)
        elif isinstance(layer, S.BatchNorm):
            x = L.BatchNormalization(name=layer.name, **(dict(bn_kwargs, axis=-1) if flat else bn_kwargs))(x)
        elif isinstance(layer, S.GlobalAvgPool):
            x = L.GlobalAveragePooling2D(data_format=data_format, name=f"gap_{i}")(x)
            flat = True
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
def make_dataset(adapter: "KerasAdapter", batches: Batches) -> Any:
    """What ``fit``/``predict`` consume for ``batches`` under the adapter's pipeline setting."""
    check_plan(batches)
    if adapter.pipeline.name == "device":
        return adapter.ops.device_dataset(adapter.keras, batches, adapter.spec.binary)
    return adapter.ops.native_dataset(adapter.keras, batches, adapter.spec.binary, adapter.pipeline)
# endregion


class StepTimes:
    """A Keras callback recording when each training step's outputs were ready.

    ``async_safe``: on backends where Keras dispatches batch-end callbacks to a thread (JAX, TF),
    they run after Keras has turned the step's logs into Python numbers — i.e. when the step has
    finished on the device — without blocking the training loop; on torch Keras does that in the
    loop itself anyway. So recording adds no synchronisation Keras does not already do."""

    def __new__(cls, keras: Any):
        class _StepTimes(keras.callbacks.Callback):
            async_safe = True

            def __init__(self) -> None:
                super().__init__()
                self.start, self.ends = time.perf_counter(), {}

            def on_train_batch_end(self, batch, logs=None):
                self.ends[int(batch)] = time.perf_counter()

            def seconds(self) -> list[float]:
                marks, last = [], self.start
                for batch in sorted(self.ends):  # threads may record out of order: completion is monotone
                    last = max(last, self.ends[batch])
                    marks.append(last)
                return list(np.diff([self.start, *marks]))

        return _StepTimes()


class KerasAdapter(Adapter):
    name = "keras"
    backend = "tensorflow"
    bn_moving_variance_estimator = "biased"  # BN moving-variance update uses the biased batch variance (torch: unbiased)
    config_schema = KerasFrameworkConfig
    DATA_FORMATS = ("channels_last", "channels_first")

    @classmethod
    def unsupported(cls, framework: str, execution: str, deterministic: bool, device: str) -> str | None:
        import shutil

        if execution == "compiled" and framework == "keras" and deterministic:
            return ("keras (TF) execution=compiled with deterministic=true: Keras switches XLA off when TensorFlow op "
                    "determinism is on (not every op has a deterministic XLA kernel), so the cell would silently run "
                    "the tf.function graph")
        if (execution == "compiled" and framework == "keras_torch" and device == "cpu"
                and not (shutil.which("c++") or shutil.which("g++"))):
            return (f"{framework} execution=compiled is torch.compile (inductor), which needs a C++ compiler on CPU; "
                    "none is on PATH")
        return None

    def __init__(self, parity: ParityConfig, device: str = "auto", framework: str | None = None,
                 pipeline: PipelineConfig | None = None) -> None:
        super().__init__(parity, device, framework, pipeline)
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {device!r}")
        if parity.precision not in (None, "fp32", "tf32", "mixed_bf16"):
            raise ValueError(f"precision must be fp32, tf32 or mixed_bf16, got {parity.precision!r}")
        self.ops = keras_backends.load(self.name)
        self.backend = self.ops.name
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.backend.backend() != self.backend:
            raise RuntimeError(
                f"keras is already imported in this process with backend {loaded.backend.backend()!r}; backend "
                f"{self.backend!r} needs its own process (KERAS_BACKEND is read once, at the first `import keras`)")
        self.ops.prepare_process(parity, device)
        os.environ["KERAS_BACKEND"] = self.backend
        self.ops.configure(parity, device)
        import keras

        if keras.backend.backend() != self.backend:  # e.g. keras imported between the check and here
            raise RuntimeError(f"keras runs backend {keras.backend.backend()!r}, wanted {self.backend!r}")
        self.keras = keras
        self.model = None
        self.data_format = "auto"  # framework.data_format (``configure``)
        self._measured_format: str | None = None  # the tuner's choice for data_format=auto (``use``)

    def configure(self, options: KerasFrameworkConfig) -> None:
        self.data_format = options.data_format
        self._measured_format = None  # the runner measures (or reuses its measurement) per condition

    def tunables(self) -> dict[str, tuple[str, ...]]:
        return {"data_format": self.DATA_FORMATS} if self.data_format == "auto" else {}

    def use(self, knob: str, value: str) -> None:
        if knob != "data_format" or value not in self.DATA_FORMATS:
            raise KeyError(f"{self.name}: no tunable {knob}={value!r}; tunables: data_format in {self.DATA_FORMATS}")
        self._measured_format = value

    @property
    def effective_data_format(self) -> str:
        """``auto`` before any measurement (e.g. the equivalence gate) is Keras' own default, channels_last."""
        if self.data_format == "auto":
            return self._measured_format or "channels_last"
        return self.data_format

    def release(self) -> None:
        import gc

        self.model = None
        self.keras.backend.clear_session()  # the graphs/compiled functions of earlier models
        self.ops.release()  # the device copy of the data and the framework's own caches
        gc.collect()

    # ---- environment ------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        return {"keras": self.keras.__version__, "numpy": np.__version__, "python": platform.python_version(),
                **self.ops.versions()}

    def device_info(self) -> dict[str, Any]:
        return self.ops.device_info(self.keras)

    # ---- model ------------------------------------------------------------------------
    def build(self, spec: S.ModelSpec, train: TrainConfig, weights: dict[str, np.ndarray] | None,
              seed: int = 0) -> None:
        keras, p = self.keras, self.parity
        if train.optimizer.lower() != "adam":
            raise ValueError(f"optimizer {train.optimizer!r} is not supported (only adam)")
        keras.backend.clear_session()  # also resets the global dtype policy and the seed generator
        if p.precision is not None:
            keras.mixed_precision.set_global_policy("mixed_bfloat16" if p.precision == "mixed_bf16" else "float32")
        self.ops.seed(keras, int(seed))  # native init and dropout masks
        self.spec, self.train_settings = spec, train
        self.model = build_keras_model(keras, spec, p, self.effective_data_format)
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
        # default: Keras' own "auto" (XLA on JAX, tf.function graph on TF, eager on torch); compiled: XLA / torch.compile
        jit = {"default": "auto", "compiled": True}[p.execution]
        self.model.compile(optimizer=optimizer, loss=self.loss_fn, metrics=[metric], jit_compile=jit)
        if p.execution == "compiled" and not self.model.jit_compile:
            raise RuntimeError(f"execution=compiled: Keras on {self.backend} resolved jit_compile to False")

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
        intra, inter, tf32 = self.ops.runtime_facts()
        jit = bool(model.jit_compile)
        detail = self.ops.compile_detail(jit) + (", run_eagerly" if model.run_eagerly else "")
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
            # The policy word (the built model holds the resolved jit_compile, shown in compile_detail).
            "execution": self.parity.execution,
            "compile_detail": detail,
            "memory_format": _built_data_format(self.model),
            "cpu_threads_intra_op": intra,
            "cpu_threads_inter_op": inter,
            "deterministic": self.ops.deterministic_in_effect(self.parity),
            "pipeline": self.pipeline.name,
            "data_pipeline": self._pipeline_detail(),
        })

    def _pipeline_detail(self) -> str:
        w = self.pipeline.workers
        if self.pipeline.name == "device":
            where = ("tf.data map over a TF tensor (host-side on a GPU)" if self.backend == "tensorflow"
                     else "jax.jit gather+normalise" if self.backend == "jax" else "torch index_select+normalise")
            return f"device-resident uint8 orientation bank, {where}"
        if self.backend == "tensorflow":
            return f"tf.data(per-sample map AUTOTUNE, batch, prefetch AUTOTUNE, threadpool={w or 'default'})"
        return f"keras.utils.PyDataset(workers={max(1, w)}, numpy per-batch augment)"

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
        clock = StepTimes(self.keras)
        history = model.fit(make_dataset(self, batches), epochs=1, shuffle=False, verbose=0, callbacks=[clock])
        n = len(batches.order)
        return EpochStats(loss=float(history.history["loss"][-1]), accuracy=float(history.history["accuracy"][-1]),
                          samples=n, steps=math.ceil(n / batches.batch_size), step_seconds=clock.seconds())
    # endregion

    def evaluate(self, plan: Batches) -> tuple[float, np.ndarray]:
        logits = np.asarray(self._require_model().predict(make_dataset(self, plan), verbose=0), np.float32)
        y = np.asarray(plan.y)[np.asarray(plan.order)]
        target = y.astype(np.float32)[:, None] if self.spec.binary else y.astype(np.int64)
        loss = float(self.keras.ops.convert_to_numpy(self.loss_fn(target, logits)))
        if self.loss_fn.reduction == "sum":
            loss /= max(len(y), 1)
        return loss, probabilities_from_logits(logits, self.spec.binary)

    def inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
        if self.pipeline.name == "device":
            return self.ops.device_inference_input(np.asarray(x), mean, std)
        scale, shift = normalisation_affine(mean, std)
        return np.ascontiguousarray(x), scale, shift

    def infer(self, batch: Any) -> np.ndarray:
        # predict_on_batch runs the compiled predict function (graph / XLA / torch per the execution
        # mode) and returns host numpy, i.e. it has waited for the device.
        logits = self._require_model().predict_on_batch(self.ops.normalise(batch))
        return probabilities_from_logits(np.asarray(logits, np.float32), self.spec.binary)

    def sync(self) -> None:
        self.ops.sync()

    # ---- deployment -------------------------------------------------------------------
    def deploy_formats(self) -> tuple[str, ...]:
        return self.ops.deploy_formats

    def export_unsupported(self, fmt: str) -> str | None:
        return self.ops.export_unsupported(fmt)

    def export(self, fmt: str, directory: Path) -> Artifact:
        """Keras' own ``model.export(path, format=…)`` of the trained model (no surgery), batch dimension dynamic,
        channels-last input; what differs by backend is in ``self.ops.export_options``."""
        model = self._require_model()
        names = {"tf_saved_model": ("tf_saved_model", "saved_model"), "onnx": ("onnx", "model.onnx"),
                 "litert": ("litert", "model.tflite"), "torch_export": ("torch", "model.pt2")}
        if fmt not in names:
            return super().export(fmt, directory)
        keras_format, name = names[fmt]
        kwargs, how = self.ops.export_options(fmt)
        # model.export needs a model that has been called (fit on JAX calls it statelessly): one eval-mode call.
        model(self.keras.ops.zeros((1, *self.spec.input_shape), dtype="float32"), training=False)
        path = directory / name
        model.export(str(path), format=keras_format, verbose=False, **kwargs)
        return Artifact(str(path), "NHWC", f"keras {self.keras.__version__} model.export(format={keras_format!r})"
                                           + (f" via {how}" if how else ""))

    # ---- memory -----------------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        self.ops.reset_peak_memory()

    def peak_device_memory_bytes(self) -> int | None:
        return self.ops.peak_memory_bytes()

    def device_memory_bytes(self) -> int | None:
        return self.ops.memory_bytes()


def _built_data_format(model: Any) -> str:
    """The layout the built model computes in, read from its first convolution."""
    conv = next((layer for layer in model.layers if hasattr(layer, "data_format") and hasattr(layer, "kernel_size")), None)
    if conv is None:
        return "n/a (no convolution)"
    return "channels_first (NCHW; the NHWC input permuted once)" if conv.data_format == "channels_first" \
        else "channels_last (NHWC)"


def _keras_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be mean or sum, got {reduction!r}")
    return "sum_over_batch_size" if reduction == "mean" else "sum"
