"""The one exception the data layer raises for bad input (paths, layouts, images, options)."""
from __future__ import annotations


class DataError(ValueError):
    """Bad dataset input; the message names the culprit (a path, a file, a class or an option)."""
