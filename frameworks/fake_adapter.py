"""A numpy-only stand-in framework (``framework=fake``): a real, tiny learner behind the Adapter contract.

It imports no deep-learning framework, so the runner's and the analysis' tests and overhead benchmarks run in
any process in a second. The model is a multinomial logistic regression (softmax, trained with
Adam) on a 4×4 grid of per-channel mean intensities of each normalised image. It honours the
``Batches`` contract exactly — the epoch's seeded order, the batch size (last batch partial) and
the per-sample augmentation draws through ``core.batches.apply_augment`` — so its metrics move with
the data and the seed like a real framework's do.

It does **not** build the ``ModelSpec``'s layers: ``param_counts()`` reports its own
``grid×grid×C×K + K`` weights and ``builds_spec = False`` tells ``run_cell`` to skip the
"adapter count == spec count" check (the row records the fake's real counts).

Test hooks, read from the cell's ``framework.fake`` block (``conf/framework/fake.yaml``) with the
environment variable as a fallback (config wins):

==================  ======================  =========================================================
key                 env                     effect
==================  ======================  =========================================================
step_sleep_s        KVP_FAKE_SLEEP          sleep this long per training step (cells take time)
compile_sleep_s     —                       extra sleep in the first ``train_epoch`` call after each
                                            ``build`` (a stand-in for JIT compilation)
predict_warmup_s    —                       extra sleep in the first ``predict`` call after each build
fail                KVP_FAKE_FAIL           ``true`` or a list of seeds (env: ``1`` or ``"3,5"``):
                                            raise ``RuntimeError`` in ``train_epoch``
crash               KVP_FAKE_CRASH          ``true`` or a list of seeds: ``SIGKILL`` this process in
                                            ``train_epoch`` (actor death)
crash_signal        —                       the signal a crash sends: SIGKILL (default), SIGSEGV, SIGABRT, …
crash_once_file     KVP_FAKE_CRASH_ONCE     crash only while this file does not exist; it is created
                                            just before dying, so a retry succeeds
record_file         KVP_FAKE_RECORD         append one JSON line per ``train_epoch`` call:
                                            ``{event, pid, host, cuda_visible_devices, seed, start,
                                            end}`` (``time.time()`` seconds), for overlap/pinning tests
export_fail         —                       ``true`` or a list of deployment formats: ``export`` raises
export_perturb      —                       ``true`` or a list of formats: the written artifact's weights
                                            are perturbed after export (a wrong artifact to catch)
==================  ======================  =========================================================

Deployment (``runner.cell.deploy``): its own format is ``npz`` (kernel, bias, grid; served by the numpy
runtime of ``frameworks.serving``), and it exports real ONNX — the same computation as an ONNX graph built
with ``onnx.helper`` — that ONNX Runtime serves, so the runner's and analysis' deployment paths are tested
with a real runtime and no deep-learning framework.
"""
from __future__ import annotations

import json
import dataclasses
import os
import platform
import signal
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.batches import apply_augment
from core.spec import ModelSpec
from core.config import FakeFrameworkConfig, ParityConfig, TrainConfig
from frameworks.base import Adapter, Artifact, Batches, EpochStats
from frameworks.knobs import finish_knobs
from frameworks.serving import grid_features

_GRID = 4  # feature grid (cells per side); 4×4×3 = 48 features for RGB


def _flag_for_format(value: Any, fmt: str) -> bool:
    """``true`` ⇒ every format; a list (or ``"onnx,npz"``) ⇒ only those; ``false``/empty ⇒ none."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        text = value.strip().lower()
        return text in ("1", "true", "yes", "on") or fmt in {s.strip() for s in text.split(",")}
    if isinstance(value, (list, tuple)):
        return fmt in {str(s) for s in value}
    return bool(value)


def _flag_for_seed(value: Any, seed: int | None) -> bool:
    """``true``/``1`` ⇒ always; a list of seeds ⇒ only those seeds; ``false``/empty ⇒ never."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "0", "false", "no", "off"):
            return False
        if text in ("1", "true", "yes", "on"):
            return True
        return seed is not None and str(seed) in {s.strip() for s in text.split(",")}
    if isinstance(value, (list, tuple)):
        return seed is not None and seed in {int(s) for s in value}
    return bool(value)


class FakeAdapter(Adapter):
    name = "fake"
    backend = "numpy"
    builds_spec = False  # run_cell: do not compare param_counts() with the spec's; the gate does not check it
    bn_moving_variance_estimator = "none"  # no BatchNorm
    config_schema = FakeFrameworkConfig

    def __init__(self, parity: ParityConfig, device: str = "auto", framework: str | None = None,
                 pipeline=None) -> None:
        super().__init__(parity, device, framework, pipeline)
        self._hooks: dict[str, Any] = {}
        self._seed: int | None = None
        self._spec: ModelSpec | None = None
        self._train: TrainConfig | None = None
        self._built = False
        self.configure(FakeFrameworkConfig(name=self.name, backend="numpy"))  # KVP_FAKE_* apply unconfigured too

    # ---- options ----------------------------------------------------------------------
    def configure(self, options: FakeFrameworkConfig) -> None:
        """The layout (``auto`` is measured like the real frameworks' layouts) and the test hooks:
        ``framework.fake.*`` where set, else the ``KVP_FAKE_*`` environment."""
        self.layout = options.layout
        self._measured_layout: str | None = None
        env = {"step_sleep_s": "KVP_FAKE_SLEEP", "fail": "KVP_FAKE_FAIL", "crash": "KVP_FAKE_CRASH",
               "crash_once_file": "KVP_FAKE_CRASH_ONCE", "record_file": "KVP_FAKE_RECORD"}
        hooks = {key: os.environ[var] for key, var in env.items() if os.environ.get(var, "") != ""}
        hooks.update({k: v for k, v in dataclasses.asdict(options.fake).items() if v is not None})
        if os.environ.get("KVP_MEMORY_PROBE"):  # the memory probe's fresh process is not a cell: no test hook fires
            hooks = {k: v for k, v in hooks.items() if k == "layout_sleep_s"}
        self._hooks = hooks

    def _hook_float(self, key: str) -> float:
        try:
            return float(self._hooks.get(key) or 0.0)
        except (TypeError, ValueError):
            raise ValueError(f"framework.fake.{key}: expected seconds (a number), got {self._hooks.get(key)!r}") from None

    LAYOUTS = ("nhwc", "nchw")

    def tunables(self) -> dict[str, tuple[str, ...]]:
        return {"layout": self.LAYOUTS} if self.layout == "auto" else {}

    def use(self, knob: str, value: str) -> None:
        if knob != "layout" or value not in self.LAYOUTS:
            raise KeyError(f"{self.name}: no tunable {knob}={value!r}; tunables: layout in {self.LAYOUTS}")
        self._measured_layout = value

    @property
    def effective_layout(self) -> str:
        return (self._measured_layout or "nhwc") if self.layout == "auto" else self.layout

    def release(self) -> None:
        self._built = False
        self.W = self.b = None
        self._m = self._v = []

    # ---- environment ------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        return {"fake": "1", "numpy": np.__version__}

    def device_info(self) -> dict[str, Any]:
        return {"device": "cpu", "device_kind": "cpu", "device_name": platform.processor() or platform.machine() or "cpu"}

    # ---- model ------------------------------------------------------------------------
    def build(self, spec: ModelSpec, train: TrainConfig, weights: dict[str, np.ndarray] | None,
              seed: int = 0) -> None:
        # ``weights`` are the spec's conv/dense arrays, which this model does not have: start from zeros
        # (deterministic, and the unique optimum of a convex loss does not depend on the start).
        if train.optimizer.lower() != "adam":
            raise ValueError(f"fake framework: only optimizer 'adam' is implemented, got {train.optimizer!r}")
        h, w, c = spec.input_shape
        self._grid = min(_GRID, h, w)
        features = self._grid * self._grid * c
        self._spec, self._train, self._seed = spec, train, int(seed)
        self.W = np.zeros((features, spec.num_classes), np.float64)
        self.b = np.zeros(spec.num_classes, np.float64)
        self._beta1 = 0.9 if self.parity.adam_beta_1 is None else float(self.parity.adam_beta_1)
        self._beta2 = 0.999 if self.parity.adam_beta_2 is None else float(self.parity.adam_beta_2)
        self._eps = 1e-8 if self.parity.adam_epsilon is None else float(self.parity.adam_epsilon)
        self._m = [np.zeros_like(self.W), np.zeros_like(self.b)]
        self._v = [np.zeros_like(self.W), np.zeros_like(self.b)]
        self._t = 0
        self._trained_once = False
        self._predicted_once = False
        self._built = True

    def _require_built(self) -> None:
        if not self._built:
            raise RuntimeError("fake framework: build() must be called first")

    def get_weights(self) -> dict[str, np.ndarray]:
        self._require_built()
        return {"fake.kernel": self.W.astype(np.float32), "fake.bias": self.b.astype(np.float32)}

    def param_counts(self) -> dict[str, int]:
        self._require_built()
        n = int(self.W.size + self.b.size)
        return {"trainable": n, "total": n}

    def knobs(self) -> dict[str, Any]:
        """The shared knob table (``frameworks.knobs.KNOB_KEYS``); knobs a softmax regression lacks are None."""
        self._require_built()
        return finish_knobs({
            "framework": self.name, "backend": self.backend, "parity_mode": self.parity.mode, "device": "cpu",
            "batchnorm_layers": 0, "batchnorm_momentum": None, "batchnorm_epsilon": None,
            "optimizer": "Adam (numpy)", "adam_beta_1": self._beta1, "adam_beta_2": self._beta2,
            "adam_epsilon": self._eps, "adam_epsilon_placement": "after_bias_correction",
            "learning_rate": float(self._train.learning_rate),
            "weight_init": f"zeros (softmax regression on {self._grid}x{self._grid} channel means; spec weights unused)",
            "loss": "softmax cross-entropy", "loss_reduction": "mean", "loss_from_logits": True,
            "output_activation": "softmax", "precision": "fp64", "compute_dtype": "float64",
            "matmul_tf32": False, "conv_tf32": False, "execution": self.parity.execution,
            "compile_detail": "numpy (no compilation)", "memory_format": self.effective_layout.upper(),
            "cpu_threads_intra_op": None, "cpu_threads_inter_op": None, "deterministic": True,
            "pipeline": self.pipeline.name, "data_pipeline": "numpy slices + core.batches.apply_augment",
        })

    # ---- compute ----------------------------------------------------------------------
    def _features(self, x: np.ndarray) -> np.ndarray:
        """Normalised float NHWC → mean of each grid cell per channel, flattened (the same numbers in
        both layouts; ``nchw`` computes them on a channels-first copy)."""
        n, h, w, c = x.shape
        g = self._grid
        hh, ww = h // g, w // g
        if self.effective_layout != "nchw":
            return grid_features(x, g)  # the numpy serving runtime's model (frameworks.serving)
        first = np.ascontiguousarray(x.transpose(0, 3, 1, 2))[:, :, : hh * g, : ww * g]
        return first.reshape(n, c, g, hh, g, ww).mean(axis=(3, 5)).transpose(0, 2, 3, 1).reshape(n, -1)

    @staticmethod
    def _normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        return (images.astype(np.float64) / 255.0 - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)

    def _logits(self, feats: np.ndarray) -> np.ndarray:
        return feats @ self.W + self.b

    @staticmethod
    def _softmax(logits: np.ndarray) -> np.ndarray:
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._require_built()
        return self._logits(self._features(np.asarray(x, np.float64))).astype(np.float32)

    def train_epoch(self, batches: Batches) -> EpochStats:

        self._require_built()
        start = time.time()
        self._maybe_fail_or_crash()
        if not self._trained_once:
            self._trained_once = True
            time.sleep(self._hook_float("compile_sleep_s"))
        step_sleep = self._hook_float("step_sleep_s")
        if self.effective_layout == "nchw":
            step_sleep += self._hook_float("layout_sleep_s")
        lr = float(self._train.learning_rate)
        loss_sum, correct, samples, steps = 0.0, 0, 0, 0
        marks = [time.perf_counter()]
        for lo in range(0, len(batches.order), batches.batch_size):
            idx = batches.order[lo: lo + batches.batch_size]
            sl = slice(lo, lo + len(idx))
            images = apply_augment(batches.x[idx], batches.hflip[sl], batches.vflip[sl], batches.rot90[sl])
            feats = self._features(self._normalise(images, batches.mean, batches.std))
            y = batches.y[idx]
            probs = self._softmax(self._logits(feats))
            loss_sum += float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).sum())
            correct += int((probs.argmax(axis=1) == y).sum())
            grad = probs
            grad[np.arange(len(y)), y] -= 1.0
            grad /= len(y)
            self._adam_step(lr, [feats.T @ grad, grad.sum(axis=0)])
            samples += len(y)
            steps += 1
            if step_sleep:
                time.sleep(step_sleep)
            marks.append(time.perf_counter())
        self._record("train_epoch", start)
        return EpochStats(loss=loss_sum / max(samples, 1), accuracy=correct / max(samples, 1),
                          samples=samples, steps=steps, step_seconds=list(np.diff(marks)))

    def _adam_step(self, lr: float, grads: list[np.ndarray]) -> None:
        self._t += 1
        params = [self.W, self.b]
        for p, g, m, v in zip(params, grads, self._m, self._v):
            m *= self._beta1
            m += (1 - self._beta1) * g
            v *= self._beta2
            v += (1 - self._beta2) * g * g
            m_hat = m / (1 - self._beta1 ** self._t)
            v_hat = v / (1 - self._beta2 ** self._t)
            p -= lr * m_hat / (np.sqrt(v_hat) + self._eps)

    def evaluate(self, plan: Batches) -> tuple[float, np.ndarray]:
        self._require_built()
        x, y, mean, std, batch_size = plan.x[plan.order], plan.y[plan.order], plan.mean, plan.std, plan.batch_size
        probs = np.concatenate([self._softmax(self._logits(self._features(self._normalise(x[i: i + batch_size], mean, std))))
                                for i in range(0, len(x), batch_size)]) if len(x) else np.zeros((0, self.b.size))
        y = np.asarray(y)
        loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean()) if len(y) else float("nan")
        return loss, probs.astype(np.float32)

    def inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray):
        return np.asarray(x), mean, std

    def infer(self, batch) -> np.ndarray:
        x, mean, std = batch
        self._require_built()
        if not self._predicted_once:
            self._predicted_once = True
            time.sleep(self._hook_float("predict_warmup_s"))
        return self._softmax(self._logits(self._features(self._normalise(x, mean, std)))).astype(np.float32)

    def sync(self) -> None:
        return None  # numpy is synchronous

    # ---- deployment -------------------------------------------------------------------
    def deploy_formats(self) -> tuple[str, ...]:
        return ("npz", "onnx")

    def export(self, fmt: str, directory: Path) -> Artifact:
        """``npz``: kernel, bias, grid. ``onnx``: the same computation as an ONNX graph (``onnx.helper``, float64
        inside like the numpy model). Hooks: ``export_fail`` raises, ``export_perturb`` perturbs the written weights."""
        self._require_built()
        if _flag_for_format(self._hooks.get("export_fail"), fmt):
            raise RuntimeError(f"fake framework: export failure requested (framework.fake.export_fail) for {fmt}")
        if fmt == "npz":
            path = directory / "model.npz"
            np.savez(path, kernel=self.W, bias=self.b, grid=np.int64(self._grid))
            exporter = f"numpy.savez (numpy {np.__version__})"
        elif fmt == "onnx":
            import onnx

            path = directory / "model.onnx"
            onnx.save(self._onnx_model(), str(path))
            exporter = f"onnx.helper graph (onnx {onnx.__version__})"
        else:
            return super().export(fmt, directory)
        if _flag_for_format(self._hooks.get("export_perturb"), fmt):
            _perturb_weights(path, fmt, self._seed or 0)
            exporter += ", weights perturbed after export (framework.fake.export_perturb)"
        return Artifact(str(path), "NHWC", exporter)

    def _onnx_model(self):
        """image (batch, H, W, C) float32 → logits (batch, K) float32: crop, grid means, affine — in float64."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        h, w, c = self._spec.input_shape
        g = self._grid
        hh, ww = h // g, w // g
        const = lambda name, value: numpy_helper.from_array(np.asarray(value), name)  # noqa: E731
        inits = [const("kernel", self.W), const("bias", self.b), const("starts", [0, 0]),
                 const("ends", [hh * g, ww * g]), const("axes", [1, 2]), const("cells", [-1, g, hh, g, ww, c]),
                 const("cell_axes", [2, 4]), const("flat", [-1, g * g * c])]
        nodes = [helper.make_node("Cast", ["image"], ["x64"], to=TensorProto.DOUBLE),
                 helper.make_node("Slice", ["x64", "starts", "ends", "axes"], ["crop"]),
                 helper.make_node("Reshape", ["crop", "cells"], ["grid"]),
                 helper.make_node("ReduceMean", ["grid", "cell_axes"], ["means"], keepdims=0),
                 helper.make_node("Reshape", ["means", "flat"], ["features"]),
                 helper.make_node("MatMul", ["features", "kernel"], ["scores"]),
                 helper.make_node("Add", ["scores", "bias"], ["logits64"]),
                 helper.make_node("Cast", ["logits64"], ["logits"], to=TensorProto.FLOAT)]
        graph = helper.make_graph(nodes, "fake_softmax_regression",
                                  [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", h, w, c])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", self.b.size])],
                                  initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="kvp-bench fake")
        model.ir_version = 8  # readable by every ONNX Runtime of the last years
        onnx.checker.check_model(model)
        return model

    # ---- test hooks -------------------------------------------------------------------
    def _crash(self) -> None:
        """Die by ``crash_signal`` (default SIGKILL; SIGSEGV/SIGABRT stand in for a native crash)."""
        name = str(self._hooks.get("crash_signal") or "SIGKILL").upper()
        os.kill(os.getpid(), getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))
        time.sleep(5)  # the signal is delivered asynchronously; never go on with the cell

    def _maybe_fail_or_crash(self) -> None:
        marker = self._hooks.get("crash_once_file")
        if marker and not Path(marker).exists():
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            Path(marker).write_text(f"crashed pid {os.getpid()}\n")
            self._crash()
        if _flag_for_seed(self._hooks.get("crash"), self._seed):
            self._crash()
        if _flag_for_seed(self._hooks.get("fail"), self._seed):
            raise RuntimeError(f"fake framework: failure requested (framework.fake.fail / KVP_FAKE_FAIL), seed {self._seed}")

    def _record(self, event: str, start: float) -> None:
        path = self._hooks.get("record_file")
        if not path:
            return
        line = json.dumps({"event": event, "pid": os.getpid(), "host": socket.gethostname(),
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "niceness": os.nice(0),
                           "seed": self._seed, "start": start, "end": time.time()})
        with open(path, "a", encoding="utf-8") as fh:  # one short write per line: O_APPEND keeps lines whole
            fh.write(line + "\n")


def _perturb_weights(path: Path, fmt: str, seed: int) -> None:
    """Add noise of the weights' own scale to the kernel inside a written artifact (a planted wrong artifact)."""
    rng = np.random.default_rng(seed)
    if fmt == "npz":
        with np.load(path) as data:
            arrays = dict(data)
        arrays["kernel"] = arrays["kernel"] + rng.normal(0, np.abs(arrays["kernel"]).max() + 0.1, arrays["kernel"].shape)
        np.savez(path, **arrays)
        return
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "kernel":
            kernel = numpy_helper.to_array(init)
            noisy = kernel + rng.normal(0, np.abs(kernel).max() + 0.1, kernel.shape)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy.astype(kernel.dtype), "kernel"))
    onnx.save(model, str(path))
