"""One seeded source of randomness for everything that must match across frameworks.

Each purpose ("split", "order", "augment", "weights", …) gets its own independent stream derived
from (seed, purpose, *extra) with numpy's SeedSequence, so adding a draw for one purpose never
shifts another, and every framework replays exactly the same numbers.
"""
from __future__ import annotations

import hashlib

import numpy as np


def _purpose_key(purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")


def rng(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """A generator for ``purpose`` (e.g. ``rng(seed, "augment", epoch)``); same inputs, same stream."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), _purpose_key(purpose), *map(int, extra)]))
