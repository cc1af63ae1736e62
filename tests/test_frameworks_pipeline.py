"""The framework-neutral pipeline pieces (numpy only) and the one-framework-per-process guarantee of
keras_torch (in a subprocess, so the check sees a fresh interpreter and can fail)."""
from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from frameworks import pipeline as P
from frameworks.knobs import EXECUTION_TABLE, unsupported
from core.batches import apply_augment
from frameworks_support import ROOT


def _bank_numpy(x: np.ndarray, orientations) -> np.ndarray:
    """The orientation bank as the framework modules build it (hflip, then quarter turns), in numpy."""
    views = []
    for o in orientations:
        hflip, turns = P.ORIENTATIONS[o]
        view = x[:, :, ::-1] if hflip else x
        views.append(np.rot90(view, turns, axes=(1, 2)))
    return np.concatenate(views)


def test_every_draw_is_one_bank_orientation_with_the_reference_pixels():
    g = np.random.default_rng(0)
    x = g.integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    bank = _bank_numpy(x, P.bank_orientations(6, 6, augmented=True))
    for h, v, k in itertools.product([False, True], [False, True], range(4)):  # all 16 (hflip, vflip, rot90) codes
        order = np.array([3, 0, 4])
        draws = (np.full(3, h), np.full(3, v), np.full(3, k, np.int8))
        rows = P.bank_rows(order, *draws, len(x), P.bank_orientations(6, 6, True))
        np.testing.assert_array_equal(bank[rows], apply_augment(x[order], *draws))


def test_bank_rows_refuse_odd_turns_of_non_square_images_and_identity_needs_no_bank():
    assert P.bank_orientations(4, 6, augmented=True) == (0, 1, 4, 5)  # half turns only
    assert P.bank_orientations(6, 6, augmented=False) == (0,)
    with pytest.raises(ValueError, match="square"):
        P.bank_rows(np.array([0]), np.array([False]), np.array([False]), np.array([1]), 2, (0, 1, 4, 5))
    rows = P.bank_rows(np.array([1, 0]), np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, np.int8), 2, (0,))
    np.testing.assert_array_equal(rows, [1, 0])


def test_normalisation_affine_equals_the_reference_formula():
    x = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)
    mean, std = np.array([0.3, 0.4, 0.5], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    scale, shift = P.normalisation_affine(mean, std)
    np.testing.assert_allclose(x * scale + shift, (x.astype(np.float32) / 255 - mean) / std, atol=2e-6)


def test_pipeline_settings_and_step_summary():
    assert P.PipelineSettings.from_config({"name": "native", "workers": 3}).workers == 3
    for bad, culprit in (({"name": "gpu"}, "train.pipeline.name"), ({"workers": -1}, "train.pipeline.workers"),
                         ({"threads": 2}, "threads"), ({"prefetch": True}, "train.pipeline.prefetch"),
                         ({"workers": 2.5}, "train.pipeline.workers")):
        with pytest.raises(ValueError, match=culprit):
            P.PipelineSettings.from_config(bad)
    summary = P.step_time_summary([0.1] * 9 + [1.1])
    assert summary["steps"] == 10 and summary["step_seconds_median"] == pytest.approx(0.1)
    assert summary["step_seconds_p99"] > summary["step_seconds_p90"] > summary["step_seconds_p10"]
    assert P.step_time_summary(None)["steps"] is None


def test_execution_table_names_every_mode_and_the_impossible_ones():
    assert all(set(modes) == {"default", "compiled"} for modes in EXECUTION_TABLE.values())
    assert "XLA" in unsupported("keras", "compiled", True, "gpu")
    assert unsupported("keras", "compiled", False, "gpu") is None
    assert unsupported("keras_jax", "default", True, "cpu") is None


@pytest.mark.slow  # ~35 s: a fresh keras_torch process
def test_keras_torch_never_imports_tensorflow():
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, "tests")
        import numpy as np
        from frameworks_support import pipeline_plan, TINY_MODEL, IMAGE_SIZE
        from core import spec as S
        from frameworks.base import ParitySettings, TrainSettings, eval_plan, get_adapter
        from frameworks.parity import build_spec
        from frameworks.pipeline import PipelineSettings
        plan = pipeline_plan()
        spec = build_spec(TINY_MODEL, 4, IMAGE_SIZE)
        adapter = get_adapter("keras_torch", ParitySettings(cpu_threads=1), "cpu", PipelineSettings())
        adapter.build(spec, TrainSettings(batch_size=16), S.init_weights(spec, 0))
        for pipe in ("device", "native"):
            adapter.set_pipeline(PipelineSettings(name=pipe, workers=1))
            adapter.train_epoch(plan)
            adapter.evaluate(eval_plan(plan.x, plan.y, np.arange(8), plan.mean, plan.std, 4))
            adapter.predict(plan.x[:3], plan.mean, plan.std)
        adapter.knobs()
        print("MODULES", sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "torch", "jax"}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES"))
    assert "tensorflow" not in line and "torch" in line, line


def test_settings_are_checked_by_the_one_schema_of_their_config_group():
    """The adapters' settings and the Hydra schemas (core.config) have the same knobs, and a direct
    caller's bad value gets the composition's message naming the knob."""
    from core.config import ParityConfig, PipelineConfig
    from frameworks.base import ParitySettings

    assert set(ParitySettings.__dataclass_fields__) == set(ParityConfig.__dataclass_fields__)
    assert set(P.PipelineSettings.__dataclass_fields__) == set(PipelineConfig.__dataclass_fields__)
    assert ParitySettings.from_config({"execution": "compiled"}).execution == "compiled"
    for bad, culprit in (({"execution": "eager"}, "parity.execution"), ({"adam_beta_1": 1.0}, "parity.adam_beta_1"),
                         ({"cpu_threads": 0}, "parity.cpu_threads"), ({"compile": "on"}, "parity.execution"),
                         ({"jit": True}, "jit")):
        with pytest.raises(ValueError, match=culprit):
            ParitySettings.from_config(bad)
