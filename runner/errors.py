"""The runner's errors and the exit code each one ends in (``python -m runner``).

- ``GridError`` — invalid input (config, grid, data, a device the cluster lacks): one line naming the
  culprit, exit 2, nothing written (``runner.planning`` raises it before Ray starts).
- ``SweepError`` — the sweep cannot go on (Ray unavailable, actors unplaceable, data unreachable on a
  node, a failed equivalence gate): one line, exit 1, finished cells stay on disk.
- A stop signal ends in 128 + its number (``runner.sweep.stopping``).

Every sub-package may import this module; it imports nothing of ours.
"""
from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class GridError(ValueError):
    """An invalid grid or config: one message that names the culprit (exit code 2)."""


class SweepError(RuntimeError):
    """The sweep cannot go on (Ray unavailable, actors unplaceable, failed gate): one line, exit 1."""
