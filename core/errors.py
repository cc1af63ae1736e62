"""Error types raised in the ground floor and caught above it."""
from __future__ import annotations


class DataError(ValueError):
    """Bad dataset input; the message names the culprit (a path, a file, a class or an option)."""
