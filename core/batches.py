"""The epoch plan: one seeded permutation and one set of augmentation draws per (seed, epoch), and
the ONE numpy reference of the augmentation.

Every framework receives the same ``Batches`` and applies exactly these draws natively, so
Keras and PyTorch see the same pictures in the same order. ``apply_augment`` is the numpy
reference: the numpy-fed pipelines use it directly and the adapters' tests compare their native
transforms against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from core.errors import DataError
from core.seeding import rng

AUGMENTATIONS = ("hflip", "vflip", "rot90")


@dataclass
class Batches:
    """One epoch's batches, as index arrays into the prepared dataset and per-sample augmentation.

    ``order`` is the epoch's seeded permutation of the train indices; batches are consecutive
    slices of ``batch_size`` (last one partial, never dropped). ``hflip``/``vflip`` are bool and
    ``rot90`` is in {0,1,2,3} (counter-clockwise quarter turns), aligned with ``order``.
    Augmentations are applied in the order: hflip, vflip, rot90.
    """

    x: np.ndarray  # uint8 (N, H, W, C): the whole prepared image array (indexed by ``order``)
    y: np.ndarray  # int64 (N,)
    order: np.ndarray  # int64 (n,)
    hflip: np.ndarray  # bool (n,)
    vflip: np.ndarray  # bool (n,)
    rot90: np.ndarray  # int8 (n,)
    batch_size: int
    mean: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))  # per-channel, in [0, 1] units
    std: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))


def augment_flags(augment_cfg: Mapping[str, Any] | None) -> dict[str, bool]:
    """``{hflip, vflip, rot90}`` as bools (missing ⇒ False); ``None`` ⇒ no augmentation."""
    if augment_cfg is None:
        return dict.fromkeys(AUGMENTATIONS, False)
    if not isinstance(augment_cfg, Mapping):
        raise DataError(f"train.augment must be a mapping of {list(AUGMENTATIONS)} to booleans, got {augment_cfg!r}")
    unknown = sorted(set(augment_cfg) - set(AUGMENTATIONS))
    if unknown:
        raise DataError(f"unknown augmentation(s) {unknown} in train.augment; known: {list(AUGMENTATIONS)}")
    flags = {}
    for name in AUGMENTATIONS:
        value = augment_cfg.get(name, False)
        if not isinstance(value, (bool, np.bool_)):
            raise DataError(f"train.augment.{name} must be true or false, got {value!r}")
        flags[name] = bool(value)
    return flags


def epoch_batches(ds, seed: int, epoch: int, batch_size: int, augment_cfg: Mapping[str, Any] | None,
                  split: str = "train") -> Batches:
    """The batch plan of one epoch of ``split``: a seeded permutation and per-sample augmentation draws.

    Order comes from ``rng(seed, "order", epoch)``; draws from ``rng(seed, "augment", epoch)``:
    hflip and vflip with p = 0.5, rot90 ``k`` uniform in {0, 1, 2, 3}. All three are always drawn
    and disabled ones are then zeroed, so switching one augmentation off never changes the others.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise DataError(f"epoch must be an integer >= 0, got {epoch!r}")
    flags = augment_flags(augment_cfg)
    indices = np.asarray(ds.indices(split), dtype=np.int64)
    n = len(indices)
    order = indices[rng(seed, "order", epoch).permutation(n)]
    draws = rng(seed, "augment", epoch)
    hflip = draws.random(n) < 0.5
    vflip = draws.random(n) < 0.5
    rot90 = draws.integers(0, 4, size=n).astype(np.int8)
    if not flags["hflip"]:
        hflip[:] = False
    if not flags["vflip"]:
        vflip[:] = False
    if not flags["rot90"]:
        rot90[:] = 0
    return Batches(x=ds.x, y=ds.y, order=order, hflip=hflip, vflip=vflip, rot90=rot90,
                   batch_size=int(batch_size), mean=np.asarray(ds.mean, np.float32),
                   std=np.asarray(ds.std, np.float32))


def apply_augment(images: np.ndarray, hflip: np.ndarray, vflip: np.ndarray, rot90: np.ndarray) -> np.ndarray:
    """Reference transform of a batch ``(n, H, W, C)``: per sample, hflip (mirror left-right), then
    vflip (mirror top-bottom), then ``np.rot90(k, axes=(1, 2))`` (k counter-clockwise quarter turns).
    Returns a new array; the input is not modified."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C), got shape {images.shape}")
    n = images.shape[0]
    hflip, vflip = np.asarray(hflip, bool), np.asarray(vflip, bool)
    rot90 = np.asarray(rot90, np.int64)
    for name, draw in (("hflip", hflip), ("vflip", vflip), ("rot90", rot90)):
        if draw.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {draw.shape}")
    if np.any((rot90 < 0) | (rot90 > 3)):
        raise ValueError("rot90 values must be in {0, 1, 2, 3}")
    if np.any(rot90 % 2 == 1) and images.shape[1] != images.shape[2]:
        raise ValueError(f"odd quarter turns need square images, got {images.shape[1]}×{images.shape[2]}")
    out = images.copy()
    out[hflip] = out[hflip][:, :, ::-1]
    out[vflip] = out[vflip][:, ::-1]
    for k in (1, 2, 3):
        turn = rot90 == k
        if turn.any():
            out[turn] = np.rot90(out[turn], k, axes=(1, 2))
    return out
