"""Pieces shared by the Keras backend modules (numpy + the public ``keras.utils.PyDataset``)."""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np

from core.batches import Batches, apply_augment
from frameworks.knobs import normalise_numpy


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def labels(y: np.ndarray, binary: bool) -> np.ndarray:
    """Targets as the Keras losses take them: (n, 1) float for one logit, int64 class ids otherwise."""
    y = np.asarray(y)
    return y.astype(np.float32)[:, None] if binary else y.astype(np.int64)


def batch_dataset(keras: Any, batches: Batches, make_batch: Callable[[int, int], Any], workers: int = 1) -> Any:
    """A ``keras.utils.PyDataset`` of the plan's consecutive batches (last one partial, never dropped);
    ``make_batch(start, stop)`` returns one ``(images, targets)`` pair. ``workers=1`` without
    multiprocessing makes Keras call it in the training thread, in order."""

    class PlanDataset(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=max(1, int(workers)), use_multiprocessing=False)
            self.n, self.batch_size = len(batches.order), batches.batch_size

        def __len__(self) -> int:
            return math.ceil(self.n / self.batch_size)

        def __getitem__(self, i: int):
            return make_batch(i * self.batch_size, min((i + 1) * self.batch_size, self.n))

    return PlanDataset()


def numpy_batch_maker(batches: Batches, binary: bool) -> Callable[[int, int], Any]:
    """The native PyDataset batch: numpy gather → per-batch vectorised augmentation → normalise."""
    augmented = bool(np.any(batches.hflip) or np.any(batches.vflip) or np.any(batches.rot90))

    def make(start: int, stop: int):
        idx = batches.order[start:stop]
        images = batches.x[idx]
        if augmented:
            images = apply_augment(images, batches.hflip[start:stop], batches.vflip[start:stop],
                                         batches.rot90[start:stop])
        return normalise_numpy(images, batches.mean, batches.std), labels(batches.y[idx], binary)

    return make
