"""Runs real framework code for tests/test_frameworks_*.py in a SUBPROCESS (one framework per process).

``probe(framework)`` (in the test process) starts ``python tests/frameworks_support.py FW OUT.pkl``,
which, inside that one framework: runs the equivalence gate's ``gate_outputs`` for a binary and a
multi-class head on a tiny model; builds adapters with non-default strict knobs and with
``framework_defaults`` and reads their knobs back; pushes one epoch plan through the adapter's
native input pipeline and returns the batches; and lists which frameworks the process imported.
"""
from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = {"_target_": "core.spec.small_cnn", "filters": [4, 8], "kernel_size": 3, "dense_units": 8,
              "dropout": 0.25}
IMAGE_SIZE = 16
HEADS = (2, 4)  # binary (one logit) and multi-class (softmax)
# Strict parity with values unlike any framework default, so a knob that is not applied shows up.
ODD_PARITY = {"mode": "strict", "batchnorm_momentum": 0.2, "batchnorm_epsilon": 2e-3, "adam_beta_1": 0.85,
              "adam_beta_2": 0.995, "adam_epsilon": 3e-7, "weight_init": "ported", "loss_reduction": "mean",
              "precision": "fp32", "execution": "default", "cpu_threads": 1, "deterministic": True}
STRICT_PARITY = {**ODD_PARITY, "batchnorm_momentum": 0.1, "batchnorm_epsilon": 1e-3, "adam_beta_1": 0.9,
                 "adam_beta_2": 0.999, "adam_epsilon": 1e-7}
DEFAULTS_PARITY = {"mode": "framework_defaults", "batchnorm_momentum": None, "batchnorm_epsilon": None,
                   "adam_beta_1": None, "adam_beta_2": None, "adam_epsilon": None, "weight_init": "native",
                   "loss_reduction": "mean", "precision": "fp32", "execution": "default", "cpu_threads": 1,
                   "deterministic": False}
PIPELINE_SAMPLES, PIPELINE_BATCH = 37, 16  # last batch partial (5)


def pipeline_plan():
    """A small epoch plan with every augmentation present (numpy only, same in every process)."""
    from frameworks.base import Batches

    g = np.random.default_rng(123)
    n_images = 50
    x = g.integers(0, 256, size=(n_images, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    y = g.integers(0, 4, size=n_images).astype(np.int64)
    order = g.permutation(n_images)[:PIPELINE_SAMPLES].astype(np.int64)
    return Batches(x=x, y=y, order=order, hflip=g.random(PIPELINE_SAMPLES) < 0.5, vflip=g.random(PIPELINE_SAMPLES) < 0.5,
                   rot90=g.integers(0, 4, size=PIPELINE_SAMPLES).astype(np.int8), batch_size=PIPELINE_BATCH,
                   mean=np.array([0.4, 0.5, 0.6], np.float32), std=np.array([0.2, 0.25, 0.3], np.float32))


def pipeline_batches(framework: str, adapter, plan) -> list[tuple[np.ndarray, np.ndarray]]:
    """Iterate the adapter's input pipeline (its current ``pipeline`` setting); images back as NHWC
    float32 numpy, labels as numpy."""
    if framework == "pytorch":
        return [(xb.permute(0, 2, 3, 1).cpu().numpy(), yb.cpu().numpy()) for xb, yb in adapter._batches(plan)]
    from frameworks.keras_adapter import make_dataset

    ds = make_dataset(adapter, plan)
    if hasattr(ds, "as_numpy_iterator"):  # tf.data
        return [(np.asarray(xb), np.asarray(yb)) for xb, yb in ds.as_numpy_iterator()]
    to_numpy = adapter.keras.ops.convert_to_numpy
    return [(to_numpy(xb), to_numpy(yb)) for xb, yb in (ds[i] for i in range(len(ds)))]


def _run(framework: str) -> dict:
    from core import spec as S
    from core.config import ParityConfig, PipelineConfig, TrainConfig, check_node
    from frameworks.base import eval_plan, get_adapter
    from frameworks.parity import build_spec, gate_outputs

    out: dict = {"gate": {}, "knobs": {}}
    for n in HEADS:
        out["gate"][n] = gate_outputs(framework, TINY_MODEL, n, IMAGE_SIZE, STRICT_PARITY, seed=0, batch=8)
    spec = build_spec(TINY_MODEL, 4, IMAGE_SIZE)
    for name, parity in (("odd", ODD_PARITY), ("defaults", DEFAULTS_PARITY)):
        adapter = get_adapter(framework, check_node(ParityConfig, parity, "parity"), "cpu")
        weights = S.init_weights(spec, 0) if parity["weight_init"] == "ported" else None
        adapter.build(spec, TrainConfig(batch_size=PIPELINE_BATCH), weights)
        out["knobs"][name] = adapter.knobs()
        if name == "odd":
            plan = pipeline_plan()
            out["pipeline"], out["evaluate"], out["predict"], out["steps"] = {}, {}, {}, {}
            for pipe in ("device", "native"):
                adapter.set_pipeline(PipelineConfig(name=pipe, workers=1, prefetch=2))
                out["pipeline"][pipe] = pipeline_batches(framework, adapter, plan)
                out["evaluate"][pipe] = adapter.evaluate(eval_plan(plan.x, plan.y, np.arange(10), plan.mean,
                                                                   plan.std, batch_size=4))
                out["predict"][pipe] = adapter.predict(plan.x[:10], plan.mean, plan.std)
                stats = adapter.train_epoch(plan)
                out["steps"][pipe] = (stats.steps, [float(t) for t in stats.step_seconds])
    out["modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "torch", "jax", "jaxlib", "keras"})
    return out


def _run_gpu(framework: str) -> dict:
    """On a CUDA GPU: where the device pipeline's bank lives, its batches, and both execution modes."""
    from core import spec as S
    from core.config import ParityConfig, PipelineConfig, TrainConfig, check_node
    from frameworks.base import eval_plan, get_adapter
    from frameworks.parity import build_spec

    plan, spec = pipeline_plan(), build_spec(TINY_MODEL, 4, IMAGE_SIZE)
    out: dict = {"modes": {}}
    for mode in ("default", "compiled"):
        parity = check_node(ParityConfig, {**STRICT_PARITY, "execution": mode, "deterministic": False}, "parity")
        try:
            adapter = get_adapter(framework, parity, "gpu", PipelineConfig())
        except RuntimeError as exc:  # e.g. TensorFlow built without CUDA on this machine
            if framework == "keras":
                return {"skip": f"TensorFlow sees no GPU here: {exc}"}
            raise
        adapter.build(spec, TrainConfig(batch_size=PIPELINE_BATCH), S.init_weights(spec, 0))
        if mode == "default":
            out["device_info"] = adapter.device_info()
            out["device_kind"] = out["device_info"]["device_kind"]
            out["batches"] = pipeline_batches(framework, adapter, plan)
            out["bank_on_gpu"] = _bank_on_gpu(framework, adapter)
        stats = adapter.train_epoch(plan)
        _, probs = adapter.evaluate(eval_plan(plan.x, plan.y, np.arange(10), plan.mean, plan.std, 4))
        out["modes"][mode] = {"knobs": adapter.knobs(), "loss": float(stats.loss), "steps": int(stats.steps),
                              "step_seconds": [float(t) for t in stats.step_seconds], "probs": probs}
    return out


def _bank_on_gpu(framework: str, adapter) -> bool:
    if framework == "pytorch":
        return adapter._device_data.bank.device.type == "cuda"
    if framework == "keras_torch":
        return adapter.ops._data.bank.device.type == "cuda"
    bank = adapter.ops._bank[2]
    if framework == "keras_jax":
        return all(d.platform == "gpu" for d in bank.devices())
    return "GPU" in bank.device


@functools.lru_cache(maxsize=None)
def probe_gpu(framework: str) -> dict:
    """Run ``_run_gpu(framework)`` in a fresh interpreter; cached per test session."""
    return probe(framework, "gpu")


@functools.lru_cache(maxsize=None)
def probe(framework: str, kind: str = "cpu") -> dict:
    """Run ``_run(framework)`` (``kind="gpu"``: ``_run_gpu``) in a fresh interpreter; cached per test session."""
    with tempfile.TemporaryDirectory(prefix="fw-probe-") as tmp:
        out = Path(tmp) / "out.pkl"
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), kind, framework, str(out)], cwd=ROOT,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if proc.returncode != 0:
            raise AssertionError(f"{framework} probe failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with open(out, "rb") as fh:
            return _NumpyOnlyUnpickler(fh).load()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """What a framework process hands back must unpickle without importing that framework."""

    def find_class(self, module: str, name: str):
        if not module.startswith(("numpy", "builtins", "collections", "copyreg", "_codecs")):
            raise AssertionError(f"framework output carries a {module}.{name} object (would import {module})")
        return super().find_class(module, name)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    result = (_run_gpu if sys.argv[1] == "gpu" else _run)(sys.argv[2])
    with open(sys.argv[3], "wb") as fh:
        pickle.dump(result, fh)
