"""The adapters on a CUDA GPU: device placement, both execution modes, augmentation equality on the
device. Marked ``gpu`` (skipped with a reason where no CUDA GPU is visible); each framework runs in
its own subprocess (``tests/frameworks_support.py gpu FW OUT``)."""
from __future__ import annotations

import numpy as np
import pytest

from core.batches import apply_augment
from core.registry import REAL_FRAMEWORKS
from frameworks_support import PIPELINE_BATCH, PIPELINE_SAMPLES, pipeline_plan, probe_gpu

pytestmark = pytest.mark.gpu
FRAMEWORKS = list(REAL_FRAMEWORKS)  # every real adapter of the registry


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_device_pipeline_runs_on_the_gpu_with_the_reference_pixels(framework):
    result = probe_gpu(framework)
    if framework == "keras" and result.get("skip"):
        pytest.skip(result["skip"])
    assert result["device_kind"] == "gpu", result["device_info"]
    if framework == "keras":  # tf.data maps run on the host: the bank stays there (stated in the knob table)
        assert "host-side on a GPU" in result["modes"]["default"]["knobs"]["data_pipeline"]
    else:
        assert result["bank_on_gpu"], "the device pipeline's image bank is not on the GPU"
    plan = pipeline_plan()
    batches = result["batches"]
    assert [len(y) for _, y in batches] == [PIPELINE_BATCH, PIPELINE_BATCH, PIPELINE_SAMPLES - 2 * PIPELINE_BATCH]
    expected = apply_augment(plan.x[plan.order], plan.hflip, plan.vflip, plan.rot90)
    expected = (expected.astype(np.float32) / 255.0 - plan.mean) / plan.std
    np.testing.assert_allclose(np.concatenate([x for x, _ in batches]), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_both_execution_modes_train_on_the_gpu_and_are_read_back(framework):
    result = probe_gpu(framework)
    if framework == "keras" and result.get("skip"):
        pytest.skip(result["skip"])
    for mode in ("default", "compiled"):
        run = result["modes"][mode]
        assert run["knobs"]["execution"] == mode and run["knobs"]["device"].startswith(("cuda", "gpu"))
        assert np.isfinite(run["loss"]) and run["steps"] == len(run["step_seconds"]) == 3
        assert all(t > 0 for t in run["step_seconds"])
        assert run["probs"].shape == (10, 4) and np.allclose(run["probs"].sum(axis=1), 1, atol=1e-4)
    if framework == "keras_jax":  # never op by op: both modes jit with XLA
        assert all("XLA" in result["modes"][m]["knobs"]["compile_detail"] for m in ("default", "compiled"))
    if framework == "pytorch":
        assert result["modes"]["default"]["knobs"]["memory_format"] == "channels_last"  # auto on CUDA
