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


def test_pipeline_config_and_step_summary():
    from core.config import PipelineConfig, check_node

    assert check_node(PipelineConfig, {"name": "native", "workers": 3}, "train.pipeline").workers == 3
    for bad, culprit in (({"name": "gpu"}, "train.pipeline.name"), ({"workers": -1}, "train.pipeline.workers"),
                         ({"threads": 2}, "threads"), ({"prefetch": True}, "train.pipeline.prefetch"),
                         ({"workers": 2.5}, "train.pipeline.workers")):
        with pytest.raises(ValueError, match=culprit):
            check_node(PipelineConfig, bad, "train.pipeline")
    summary = P.step_time_summary([0.1] * 9 + [1.1])
    assert summary["steps"] == 10 and summary["step_seconds_median"] == pytest.approx(0.1)
    assert summary["step_seconds_p99"] > summary["step_seconds_p90"] > summary["step_seconds_p10"]
    assert P.step_time_summary(None)["steps"] is None


def test_adapters_name_the_combinations_they_cannot_honour():
    from frameworks.base import Adapter
    from frameworks.keras_adapter import KerasAdapter  # imports no framework until an instance is made

    assert "XLA" in KerasAdapter.unsupported("keras", "compiled", True, "gpu")
    assert KerasAdapter.unsupported("keras", "compiled", False, "gpu") is None
    assert KerasAdapter.unsupported("keras_jax", "default", True, "cpu") is None
    assert Adapter.unsupported("anything", "compiled", True, "cpu") is None  # the contract's default


@pytest.mark.slow  # ~35 s: a fresh keras_torch process
def test_keras_torch_never_imports_tensorflow():
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, "tests")
        import numpy as np
        from frameworks_support import pipeline_plan, TINY_MODEL, IMAGE_SIZE
        from core import spec as S
        from core.config import ParityConfig, PipelineConfig, TrainConfig
        from frameworks.base import eval_plan, get_adapter
        from frameworks.parity import build_spec
        plan = pipeline_plan()
        spec = build_spec(TINY_MODEL, 4, IMAGE_SIZE)
        adapter = get_adapter("keras_torch", ParityConfig(cpu_threads=1), "cpu", PipelineConfig())
        adapter.build(spec, TrainConfig(batch_size=16), S.init_weights(spec, 0))
        for pipe in ("device", "native"):
            adapter.set_pipeline(PipelineConfig(name=pipe, workers=1))
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


def test_adapters_receive_the_one_frozen_schema_of_their_config_group():
    """One typed dataclass per config group, from composition to the adapter: the parity, train and
    pipeline nodes an adapter gets are the frozen schemas of core.config, checked with the composition's
    message naming the knob for a direct caller too."""
    import dataclasses

    from core.config import ParityConfig, PipelineConfig, TrainConfig, check_node

    assert check_node(ParityConfig, {"execution": "compiled"}, "parity").execution == "compiled"
    for cls in (ParityConfig, PipelineConfig, TrainConfig):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(), next(iter(cls.__dataclass_fields__)), None)
    for bad, culprit in (({"execution": "eager"}, "parity.execution"), ({"adam_beta_1": 1.0}, "parity.adam_beta_1"),
                         ({"cpu_threads": 0}, "parity.cpu_threads"), ({"compile": "on"}, "parity.compile"),
                         ({"jit": True}, "jit")):
        with pytest.raises(ValueError, match=culprit):
            check_node(ParityConfig, bad, "parity")
