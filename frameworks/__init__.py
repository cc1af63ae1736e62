"""Framework adapters behind one contract (``frameworks.base.Adapter``).

Importing this package imports no deep-learning framework: each adapter module imports its
framework inside, and only the process that runs a cell (an actor, or ``runner.cell``) loads one.
Never load TensorFlow and PyTorch in the same process.
"""
from __future__ import annotations

# The list of frameworks (name → adapter, backend, package, label) is core.registry.FRAMEWORKS.
