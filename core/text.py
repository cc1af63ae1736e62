"""One-line error text: what a console line, a ``runs.error`` cell or a log line shows of an exception."""
from __future__ import annotations


def one_line(exc: BaseException, limit: int = 1000) -> str:
    """``Type: message`` on one line (whitespace collapsed), capped at ``limit`` characters."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
