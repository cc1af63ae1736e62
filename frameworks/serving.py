"""Serving runtimes: load one exported artifact in a fresh process, predict the test split, time it.

``runner.cell.deploy`` runs ``python -m frameworks.serving REQUEST.json`` once per artifact, in a new
process that holds no training objects and imports only the artifact's runtime (never the framework that
trained it, where the runtime does not need it: ONNX Runtime and LiteRT serve without TensorFlow, torch or
JAX). The process writes the probabilities it predicted for the test images (``probs_out``, compared with the
trained model's own by the runner) and a JSON result (``result_out``): the runtime's import and cold-load
seconds, the first call, latency at batch 1 and throughput at the requested batch size (the cell's) under the same
repeat rule as in-framework inference (``core.timing.timed_calls``, ``train.inference``), its peak RSS, and
which deep-learning modules it had loaded.

What one timed call is, for every runtime alike (and what ``Adapter.infer`` is in-framework): a uint8 NHWC
batch is normalised with the train split's mean/std (numpy, float32), put in the artifact's input layout,
run, and the logits turned into probabilities (numpy) — i.e. what a serving endpoint does per request.

Runtimes (``core.registry.DEPLOY_FORMATS``): ``onnxruntime`` (CPU execution provider; CUDA where the
installed build has it and the cell ran on a GPU), ``tensorflow`` (``tf.saved_model.load``, the ``serve``
endpoint Keras exports), ``torch`` (``torch.export.load(...).module()`` under ``inference_mode``),
``litert`` (``ai_edge_litert``'s interpreter) and ``numpy`` (the test stand-in's ``.npz``). Each gets the
cell's ``parity.cpu_threads`` as its intra-op (and inter-op) threads, as training did.

Imports here: numpy, ``core.timing`` and ``frameworks.knobs`` only (no config or registry machinery), so a
serving process pays for its runtime and nothing else.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from core import proc
from core.timing import latency_summary, throughput_summary, timed_calls
from frameworks.knobs import normalise_numpy, probabilities_from_logits


def grid_features(x: np.ndarray, grid: int) -> np.ndarray:
    """The numpy stand-in's model input (``frameworks.fake_adapter``): the mean of each of ``grid``×``grid``
    cells per channel of a normalised NHWC batch, flattened (float64)."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    hh, ww = h // grid, w // grid
    return x[:, : hh * grid, : ww * grid].reshape(n, grid, hh, grid, ww, c).mean(axis=(2, 4)).reshape(n, -1)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class Runtime:
    """One serving runtime: ``load`` an artifact, ``run`` a normalised float32 batch in its layout → logits."""

    name = ""
    package = ""  # the distribution whose version is the row's runtime_version

    def __init__(self, threads: int | None, device: str) -> None:
        self.threads, self.device = threads, device
        self.detail: dict[str, Any] = {}

    def load(self, path: str) -> None:
        raise NotImplementedError

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRuntime(Runtime):
    name, package = "onnxruntime", "onnxruntime"

    def load(self, path: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = int(self.threads)
        cuda = self.device == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.served_on = "gpu" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.detail = {"providers": self.session.get_providers(), "intra_op_num_threads": options.intra_op_num_threads,
                       "inter_op_num_threads": options.inter_op_num_threads,
                       "graph_optimization_level": str(options.graph_optimization_level)}

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TensorFlowRuntime(Runtime):
    name, package = "tensorflow", "tensorflow"

    def load(self, path: str) -> None:
        import tensorflow as tf

        if self.threads:
            tf.config.threading.set_intra_op_parallelism_threads(int(self.threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(self.threads))
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
        self.tf = tf
        loaded = tf.saved_model.load(path)
        self.fn = loaded.serve if hasattr(loaded, "serve") else loaded.signatures["serving_default"]
        self.loaded = loaded  # keeps the endpoint's variables alive
        self.served_on = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
        self.detail = {"endpoint": "serve" if hasattr(loaded, "serve") else "serving_default",
                       "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.fn(self.tf.constant(x))
        if isinstance(out, dict):  # a signature returns {name: tensor}
            out = next(iter(out.values()))
        return out.numpy()


class TorchRuntime(Runtime):
    name, package = "torch", "torch"

    def load(self, path: str) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
            try:
                torch.set_num_interop_threads(int(self.threads))
            except RuntimeError:
                pass
        self.torch = torch
        self.target = torch.device("cuda" if self.device == "gpu" and torch.cuda.is_available() else "cpu")
        self.module = torch.export.load(path).module().to(self.target)
        self.served_on = "gpu" if self.target.type == "cuda" else "cpu"
        self.detail = {"loader": "torch.export.load(...).module()", "device": str(self.target),
                       "num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads()}

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(x).to(self.target)).float().cpu().numpy()


class LiteRTRuntime(Runtime):
    name, package = "litert", "ai-edge-litert"

    def load(self, path: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=int(self.threads) if self.threads else None)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shape: tuple[int, ...] | None = None
        self.served_on = "cpu"
        self.detail = {"interpreter": "ai_edge_litert.interpreter.Interpreter", "num_threads": self.threads}

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self.shape:  # LiteRT tensors have static shapes: resize for a new batch size
            self.interpreter.resize_tensor_input(self.input, list(x.shape))
            self.interpreter.allocate_tensors()
            self.shape = x.shape
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


class NumpyRuntime(Runtime):
    """The test stand-in's ``.npz`` (kernel, bias, grid): a softmax regression over ``grid_features``."""

    name, package = "numpy", "numpy"

    def load(self, path: str) -> None:
        with np.load(path) as data:
            self.kernel, self.bias, self.grid = data["kernel"], data["bias"], int(data["grid"])
        self.served_on = "cpu"
        self.detail = {"model": "grid_features @ kernel + bias"}

    def run(self, x: np.ndarray) -> np.ndarray:
        return grid_features(x, self.grid) @ self.kernel + self.bias


RUNTIMES: dict[str, type[Runtime]] = {r.name: r for r in (OnnxRuntime, TensorFlowRuntime, TorchRuntime,
                                                          LiteRTRuntime, NumpyRuntime)}


def _request_input(images: np.ndarray, mean: np.ndarray, std: np.ndarray, layout: str) -> np.ndarray:
    x = normalise_numpy(images, mean, std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x


def serve(request: dict[str, Any]) -> dict[str, Any]:
    """Load, check and time one artifact as ``request`` says (see the module doc); returns the result."""
    started = time.perf_counter()
    if request["device"] != "gpu":  # a CPU cell serves on the CPU, whatever the node has
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    images = np.load(request["images"])
    mean, std = np.asarray(request["mean"], np.float32), np.asarray(request["std"], np.float32)
    layout, binary = request["input_layout"], bool(request["binary"])
    with _clock() as import_clock:
        runtime = RUNTIMES[request["runtime"]](request.get("threads"), request["device"])
        _import_runtime(runtime.name)
    with _clock() as load_clock:
        runtime.load(request["artifact"])

    def predict(batch_uint8: np.ndarray) -> np.ndarray:
        logits = runtime.run(_request_input(batch_uint8, mean, std, layout))
        return probabilities_from_logits(np.asarray(logits, np.float32), binary)

    with _clock() as first_clock:
        predict(images[:1])
    step = int(request["eval_batch_size"])
    probs = np.concatenate([predict(images[i: i + step]) for i in range(0, len(images), step)]).astype(np.float32)
    np.save(request["probs_out"], probs)
    rules = request["inference"]
    one = images[:1]
    latency = timed_calls(lambda: predict(one), **rules)
    batch_size = int(request["throughput_batch_size"])
    batch = images[np.resize(np.arange(len(images)), batch_size)]
    throughput = timed_calls(lambda: predict(batch), **rules)
    watched = request.get("watch_modules") or []
    result = {"runtime": runtime.name, "runtime_version": _version(runtime.package), "serving_device": runtime.served_on,
              "runtime_threads": request.get("threads"), "runtime_detail": runtime.detail,
              "runtime_import_seconds": import_clock.seconds, "load_seconds": load_clock.seconds,
              "first_call_ms": first_clock.seconds * 1e3, "test_samples": int(len(images)),
              **latency_summary(latency)[0], **throughput_summary(throughput, batch_size)[0],
              "throughput_batch_size": batch_size, "peak_rss_mib": _peak_rss_mib(),
              "serving_imports": sorted(m for m in watched if m in sys.modules),
              "process_seconds": time.perf_counter() - started}
    return result


def _import_runtime(name: str) -> None:
    """Import the runtime's package (what the fresh process pays before it can load anything)."""
    module = {"onnxruntime": "onnxruntime", "tensorflow": "tensorflow", "torch": "torch",
              "litert": "ai_edge_litert.interpreter", "numpy": "numpy"}[name]
    __import__(module)


class _clock:
    def __enter__(self) -> "_clock":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def _peak_rss_mib() -> float:
    """This process's peak RSS: Linux VmHWM (``core.proc``); elsewhere ``ru_maxrss``."""
    peak = proc.peak_rss_mib()
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def die_with_parent(parent_pid: int | None) -> None:
    """A serving process never outlives the cell that started it (an actor killed mid-deployment, a stopped sweep):
    on Linux the kernel sends it SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); a parent already gone by the
    time that is armed ends it here."""
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    if proc.die_with_parent() and os.getppid() != int(parent_pid):
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m frameworks.serving REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(args[0]).read_text())
    die_with_parent(request.get("parent_pid"))
    result = serve(request)
    Path(request["result_out"]).write_text(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
