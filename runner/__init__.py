"""Benchmark runner: config composition, data preparation, grid expansion and Ray dispatch.

Nothing here imports a deep-learning framework; those live in ``frameworks/`` and are imported
only inside the process that runs a cell.
"""
from __future__ import annotations

import core.config  # noqa: F401  (registers the config schemas with Hydra before any composition)
from core.paths import CONF_DIR, PROJECT_ROOT, register_resolvers

__all__ = ["CONF_DIR", "PROJECT_ROOT", "register_resolvers"]
