"""Framework-neutral pieces of the input pipelines (numpy only; no deep-learning import).

``pipeline=device`` (the default for timed cells) keeps the data where the model computes:

- The prepared uint8 images are put on the compute device ONCE per adapter and prepared array (the
  cache is keyed by ``images_key``), together with their eight dihedral orientations (hflip ×
  quarter turns), built there with the framework's own flip/rotate ops. The eight are exactly the
  group the data layer's draws (hflip, vflip, rot90) generate, so per-sample augmentation becomes
  a row gather: ``row = orientation * N + image index``.
- Each batch is then one gather of uint8 rows plus one fused scale-and-shift to normalised float32,
  whole-batch ops on the device with no per-sample Python and no host round trip. The same draws
  give the same pixels as ``core.batches.apply_augment`` (the tests check it per framework).

Why a bank of orientations and not per-sample flips: on a 2-core CPU, per-sample ``where(flip)``
over a batch costs several full passes of uint8 work (measured ~30× slower than one row gather),
which would time the harness rather than the framework. The bank costs 8× the images' memory on
the device (2,000 EuroSAT-mini images: 197 MB; 27,000 EuroSAT images: 2.6 GB) and is only built
when the plan draws augmentations.

``pipeline=native`` is each framework's own loading tools as its documentation advises (see the
adapters and ``conf/pipeline/native.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from core.config import PipelineConfig

#: Orientation ``o`` = ``hflip + 2 * quarter_turns``: hflip (mirror left-right) first, then ``k``
#: counter-clockwise quarter turns (``np.rot90(k, axes=(1, 2))``). Every (hflip, vflip, rot90) draw is
#: one of these eight (vflip = hflip followed by a half turn).
ORIENTATIONS: tuple[tuple[bool, int], ...] = tuple((bool(o & 1), o >> 1) for o in range(8))


def _orientation_grid(height: int, width: int, hflip: bool, vflip: bool, turns: int) -> np.ndarray:
    grid = np.arange(height * width).reshape(height, width)
    if hflip:
        grid = grid[:, ::-1]
    if vflip:
        grid = grid[::-1]
    return np.rot90(grid, turns)


def orientation_of_draws(hflip: np.ndarray, vflip: np.ndarray, rot90: np.ndarray) -> np.ndarray:
    """int64 orientation index (see ``ORIENTATIONS``) of each (hflip, vflip, rot90) draw.

    Derived by applying both descriptions to a square index grid, so it cannot drift from the
    reference transform's definition.
    """
    table = np.empty(16, np.int64)
    size = 3
    by_grid = {_orientation_grid(size, size, h, False, k).tobytes(): o for o, (h, k) in enumerate(ORIENTATIONS)}
    for code in range(16):
        h, v, k = bool(code & 1), bool(code & 2), code >> 2
        table[code] = by_grid[_orientation_grid(size, size, h, v, k).tobytes()]
    code = (np.asarray(hflip, np.int64) + 2 * np.asarray(vflip, np.int64) + 4 * (np.asarray(rot90, np.int64) % 4))
    return table[code]


def bank_orientations(height: int, width: int, augmented: bool) -> tuple[int, ...]:
    """Orientations the device bank holds: all eight for square images (identity only without
    augmentation); odd quarter turns of non-square images change the shape and are refused earlier."""
    if not augmented:
        return (0,)
    return tuple(o for o, (_, k) in enumerate(ORIENTATIONS) if height == width or k % 2 == 0)


def bank_rows(order: np.ndarray, hflip: np.ndarray, vflip: np.ndarray, rot90: np.ndarray, n_images: int,
              orientations: tuple[int, ...]) -> np.ndarray:
    """int64 rows of the orientation bank (``slot * n_images + index``) for one plan."""
    orient = orientation_of_draws(hflip, vflip, rot90)
    slot = np.full(8, -1, np.int64)
    slot[list(orientations)] = np.arange(len(orientations))
    slots = slot[orient]
    if np.any(slots < 0):
        raise ValueError("the plan draws an orientation the device bank does not hold "
                         "(odd quarter turns need square images)")
    return slots * int(n_images) + np.asarray(order, np.int64)


def plan_is_augmented(hflip: np.ndarray, vflip: np.ndarray, rot90: np.ndarray) -> bool:
    return bool(np.any(hflip) or np.any(vflip) or np.any(np.asarray(rot90) % 4))


def normalisation_affine(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per channel with ``(x / 255 - mean) / std == x * scale + shift`` (float32)."""
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def images_key(x: np.ndarray) -> str:
    """Identity of a prepared image array: a memmap of the dataset cache is the same data in every
    cell that prepares it (same file), so an adapter reuses what it put on the device."""
    if isinstance(x, np.memmap) and getattr(x, "filename", None):
        return f"file:{x.filename}:{x.offset}:{x.shape}:{x.dtype}"
    return f"mem:{id(x)}:{x.__array_interface__['data'][0]}:{x.shape}:{x.dtype}"


def step_time_summary(step_seconds: Any) -> dict[str, float | int | None]:
    """Count, median and p10/p90/p99 of one epoch's per-step wall times (``None`` when not recorded)."""
    if step_seconds is None:
        return {"steps": None, "step_seconds_median": None, "step_seconds_p10": None, "step_seconds_p90": None,
                "step_seconds_p99": None}
    t = np.asarray(step_seconds, np.float64)
    if t.size == 0:
        return {"steps": 0, "step_seconds_median": None, "step_seconds_p10": None, "step_seconds_p90": None,
                "step_seconds_p99": None}
    p10, p50, p90, p99 = np.percentile(t, [10, 50, 90, 99])
    return {"steps": int(t.size), "step_seconds_median": float(p50), "step_seconds_p10": float(p10),
            "step_seconds_p90": float(p90), "step_seconds_p99": float(p99)}
