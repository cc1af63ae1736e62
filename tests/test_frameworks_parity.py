"""The equivalence gate and the adapters' parity knobs, input pipelines and process hygiene.

Real framework code runs in one subprocess per framework (``tests/frameworks_support.py``), each
probe cached for the session; this process imports no deep-learning framework.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from frameworks.parity import compare, gate_batch, main as parity_main, bn_sample_counts, without_dropout, build_spec
from frameworks.knobs import KNOB_KEYS
from core.spec import Dropout
from core.batches import apply_augment
from frameworks_support import (HEADS, IMAGE_SIZE, ODD_PARITY, PIPELINE_BATCH, PIPELINE_SAMPLES, ROOT,
                                      TINY_MODEL, pipeline_plan, probe)

DL_MODULES = {"tensorflow", "torch", "jax", "jaxlib"}


# ---- pure parts (no framework) -------------------------------------------------------------
def _fake_result(name, logits, updates, placement, estimator, counts=None, knobs=None):
    base = {k: None for k in KNOB_KEYS}
    base.update(framework=name, parity_mode="strict", adam_epsilon=1e-7, adam_beta_2=0.999, learning_rate=1e-3,
                batchnorm_momentum=0.1, adam_epsilon_placement=placement, **(knobs or {}))
    return {"framework": name, "model": "m", "num_classes": 2, "image_size": 16, "seed": 0, "batch": 4,
            "param_counts": counts or {"trainable": 3, "total": 5}, "spec_param_counts": {"trainable": 3, "total": 5},
            "logits": np.asarray(logits, np.float32), "knobs": base, "versions": {}, "device_info": {},
            "bn_moving_variance_estimator": estimator,
            "step": {"loss": 0.5, "updates": updates, "logits_train_after": np.zeros((4, 1)),
                     "logits_eval_after": np.zeros((4, 1)), "bn_sample_counts": {"bn": 4}}}


def _adam_step1(g, lr, e_eff):
    return -lr * g / (np.abs(g) + e_eff)


def test_compare_undoes_exactly_the_documented_convention_differences():
    lr, eps, beta_2, m, n = 1e-3, 1e-7, 0.999, 0.1, 4
    g = np.array([3e-9, -5e-7, 2e-6, 0.3, -1e-3])
    batch_var = np.array([0.5, 2.0])
    torch_like = {"w.kernel": _adam_step1(g, lr, eps), "bn.moving_variance": m * (batch_var * n / (n - 1) - 1.0),
                  "bn.moving_mean": np.array([0.01, -0.02])}
    keras_like = {"w.kernel": _adam_step1(g, lr, eps / math.sqrt(1 - beta_2)), "bn.moving_variance": m * (batch_var - 1.0),
                  "bn.moving_mean": np.array([0.01, -0.02])}
    logits = [[0.25], [-1.0], [2.0], [0.0]]
    verdict = compare({"pytorch": _fake_result("pytorch", logits, torch_like, "after_bias_correction", "unbiased"),
                       "keras": _fake_result("keras", logits, keras_like, "before_bias_correction", "biased")})
    step = verdict["pairs"][0]["step"]
    assert verdict["passed"], verdict["reasons"]
    assert step["max_abs_delta_update_raw"] > 1e-4  # the epsilon placement really shows ...
    assert step["max_abs_delta_update_corrected"] < 1e-12  # ... and is exactly what the correction removes
    assert step["max_abs_delta_update_raw"] <= step["epsilon_placement_bound"] + 1e-12
    assert step["max_abs_delta_moving_variance_raw"] > 1e-2
    assert step["max_abs_delta_moving_variance_corrected"] < 1e-12
    json.dumps(verdict)  # the stored gate result is JSON


def test_compare_fails_with_reasons():
    upd = {"w.kernel": np.zeros(3)}
    a = _fake_result("pytorch", [[0.0]], upd, "after_bias_correction", "unbiased")
    b = _fake_result("keras", [[2e-4]], upd, "after_bias_correction", "unbiased", counts={"trainable": 3, "total": 6},
                     knobs={"batchnorm_epsilon": 1e-5})
    verdict = compare({"pytorch": a, "keras": b}, tolerance=1e-4)
    text = " ".join(verdict["reasons"])
    assert not verdict["passed"]
    assert "parameter counts" in text and "max |Δ logits|" in text and "batchnorm_epsilon" in text
    assert verdict["pairs"][0]["max_abs_delta_logits"] == pytest.approx(2e-4, rel=1e-3)


def test_gate_helpers_are_framework_free_and_consistent():
    spec = build_spec(TINY_MODEL, 2, IMAGE_SIZE)
    assert all(layer.rate == 0.0 for layer in without_dropout(spec).layers if isinstance(layer, Dropout))
    x, y, mean, std = gate_batch(spec, 0, 8)
    assert x.dtype == np.uint8 and x.shape == (8, 16, 16, 3) and set(y) == {0, 1}
    assert bn_sample_counts(spec, 8) == {"bn1": 8 * 8 * 8, "bn2": 8 * 4 * 4, "bn_dense": 8}
    # In a fresh process: this one may already hold a framework that another test imported.
    probe = ("import sys; from frameworks.parity import build_spec, gate_batch, bn_sample_counts, without_dropout; "
             f"s = build_spec({TINY_MODEL!r}, 2, {IMAGE_SIZE}); without_dropout(s); gate_batch(s, 0, 8); "
             "bn_sample_counts(s, 8); import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not DL_MODULES & set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_rejects_bad_input_with_one_clear_error(capsys):
    assert parity_main(["frameworks=[keras]"]) == 2
    assert "at least two distinct" in capsys.readouterr().err
    assert parity_main(["model=no_such_model"]) == 2
    assert "config" in capsys.readouterr().err
    assert parity_main(["--bogus", "1"]) == 2


# ---- real frameworks (one subprocess each) ---------------------------------------------------
@pytest.mark.parametrize("head", [pytest.param(HEADS[0], marks=pytest.mark.slow),  # ~1 min; multiclass stays
                                  HEADS[1]], ids=["binary", "multiclass"])
def test_gate_passes_keras_vs_pytorch(head):
    keras, torch = probe("keras"), probe("pytorch")
    verdict = compare({"keras": keras["gate"][head], "pytorch": torch["gate"][head]}, tolerance=1e-4)
    assert verdict["passed"], verdict["reasons"]
    pair = verdict["pairs"][0]
    assert pair["max_abs_delta_logits"] < 1e-4
    assert keras["gate"][head]["logits"].shape == (8, 1 if head == 2 else head)
    # identical starting weights + same batch ⇒ same loss at the first step
    assert pair["step"]["loss_delta"] < 1e-5
    for fw in (keras, torch):
        assert fw["gate"][head]["param_counts"] == build_spec(TINY_MODEL, head, IMAGE_SIZE).param_counts()


@pytest.mark.slow  # ~1 min; the keras-vs-pytorch multiclass gate and the default job's gate stay in the default suite
def test_gate_passes_keras_jax_vs_pytorch():
    for head in HEADS:
        verdict = compare({"keras_jax": probe("keras_jax")["gate"][head], "pytorch": probe("pytorch")["gate"][head]})
        assert verdict["passed"], verdict["reasons"]


@pytest.mark.slow  # one more framework process (~30 s); the CLI runs of the README cover it too
def test_gate_passes_keras_torch_vs_keras():
    for head in HEADS:
        verdict = compare({"keras_torch": probe("keras_torch")["gate"][head], "keras": probe("keras")["gate"][head]})
        assert verdict["passed"], verdict["reasons"]


@pytest.mark.parametrize("framework", ["pytorch", "keras", "keras_jax"])
def test_knobs_are_applied_and_read_back(framework):
    knobs = probe(framework)["knobs"]
    odd, defaults = knobs["odd"], knobs["defaults"]
    assert list(odd) == list(KNOB_KEYS)
    # Keras stores momentum as the weight of the OLD value: read back 0.8 ⇒ reported 0.2 (torch convention)
    assert odd["batchnorm_momentum"] == pytest.approx(ODD_PARITY["batchnorm_momentum"])
    assert odd["batchnorm_epsilon"] == pytest.approx(ODD_PARITY["batchnorm_epsilon"])
    assert (odd["adam_beta_1"], odd["adam_beta_2"]) == pytest.approx((0.85, 0.995))
    assert odd["adam_epsilon"] == pytest.approx(3e-7)
    assert odd["weight_init"] == "ported" and odd["loss_from_logits"] is True and odd["loss_reduction"] == "mean"
    assert odd["execution"] == "default" and odd["matmul_tf32"] is False and odd["compute_dtype"] == "float32"
    assert odd["cpu_threads_intra_op"] == 1 and odd["deterministic"] is True
    assert odd["output_activation"] == "softmax" and odd["batchnorm_layers"] == 3
    # framework_defaults: None knobs are not passed, so each framework's own default shows up
    native = {"pytorch": (0.1, 1e-5, 1e-8)}.get(framework, (0.01, 1e-3, 1e-7))
    assert (defaults["batchnorm_momentum"], defaults["batchnorm_epsilon"], defaults["adam_epsilon"]) == pytest.approx(native)
    assert defaults["weight_init"].startswith("native")


@pytest.mark.parametrize("pipeline", ["device", "native"])
@pytest.mark.parametrize("framework", ["pytorch", "keras", "keras_jax"])
def test_pipelines_match_the_numpy_reference(framework, pipeline):
    plan = pipeline_plan()
    batches = probe(framework)["pipeline"][pipeline]
    assert [len(y) for _, y in batches] == [PIPELINE_BATCH, PIPELINE_BATCH, PIPELINE_SAMPLES - 2 * PIPELINE_BATCH]
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([np.asarray(y).reshape(len(y), -1)[:, 0] for _, y in batches])
    expected = apply_augment(plan.x[plan.order], plan.hflip, plan.vflip, plan.rot90)
    expected = (expected.astype(np.float32) / 255.0 - plan.mean) / plan.std
    np.testing.assert_allclose(images, expected, rtol=0, atol=2e-6)  # the same pixels, to float rounding
    np.testing.assert_array_equal(labels.astype(np.int64), plan.y[plan.order])
    assert np.any(plan.rot90 % 2) and plan.hflip.any() and plan.vflip.any()  # the check covers every transform


@pytest.mark.parametrize("framework", ["pytorch", "keras", "keras_jax"])
def test_evaluate_and_predict_return_probabilities(framework):
    result = probe(framework)
    for pipeline in ("device", "native"):
        loss, probs = result["evaluate"][pipeline]
        assert probs.shape == (10, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert math.isfinite(loss) and loss > 0
        np.testing.assert_allclose(result["predict"][pipeline], probs, atol=1e-5)


@pytest.mark.parametrize("framework", ["pytorch", "keras", "keras_jax"])
def test_train_epoch_records_every_step_time(framework):
    for pipeline in ("device", "native"):
        steps, seconds = probe(framework)["steps"][pipeline]
        # Keras runs batch-end callbacks on a thread (JAX, TF): two steps' completions can be observed
        # at one instant, so a step may read 0 s — never negative, and the epoch's steps add up.
        assert steps == len(seconds) == 3 and all(t >= 0 for t in seconds) and sum(seconds) > 0


@pytest.mark.parametrize("framework,forbidden", [("pytorch", {"tensorflow", "jax", "jaxlib"}),
                                                 ("keras", {"torch"}),
                                                 ("keras_jax", {"tensorflow", "torch"})])
def test_one_framework_per_process(framework, forbidden):
    # keras 3.15 itself imports jax on every backend (its orbax checkpoint callback); nothing of jax
    # runs outside keras_jax. keras_jax/keras_torch must never import TensorFlow, pytorch nothing else.
    modules = set(probe(framework)["modules"])
    assert not modules & forbidden, modules


@pytest.mark.slow  # runs two framework processes through the real CLI (~1 min)
def test_cli_end_to_end(tmp_path):
    out = tmp_path / "gate.json"
    proc = subprocess.run([sys.executable, "-m", "frameworks.parity", "model=small_cnn", "num_classes=3",
                           "image_size=16", "model.filters=[4,8]", "model.dense_units=8", f"--out={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = json.loads(out.read_text())
    assert verdict["passed"] and verdict["frameworks"] == ["keras", "pytorch"]
    assert "max |Δ|" in proc.stdout and "cannot match" in proc.stdout
