"""Library versions written the same way for every framework (cuDNN as ``major.minor.patch``)."""
from __future__ import annotations

import ctypes
import sys


def cudnn_text(value) -> str | None:
    """cuDNN's integer version as ``x.y.z``: ``92600`` → ``9.26.0`` (cuDNN ≥ 9: M·10000 + m·100 + p),
    ``8902`` → ``8.9.2`` (cuDNN 8: M·1000 + m·100 + p); text that already has dots is kept; ``None``,
    ``"None"`` and ``""`` → ``None``."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.lower() == "none":
        return None
    if not text.isdigit():
        return text
    v = int(text)
    if v >= 90000:
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"
    if v >= 1000:
        return f"{v // 1000}.{v % 1000 // 100}.{v % 100}"
    return text  # a major version only (e.g. TensorFlow's build info says "9")


def loaded_cudnn() -> str | None:
    """The cuDNN library this process has loaded (``cudnnGetVersion``), as ``x.y.z``; ``None`` if none is."""
    if not sys.platform.startswith("linux"):
        return None
    for name in ("libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"):
        try:
            lib = ctypes.CDLL(name, mode=ctypes.RTLD_NOLOAD)  # only if already loaded: never loads a library
        except (OSError, AttributeError):
            continue
        try:
            lib.cudnnGetVersion.restype = ctypes.c_size_t
            return cudnn_text(int(lib.cudnnGetVersion()))
        except (AttributeError, OSError):
            continue
    return None
