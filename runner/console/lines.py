"""Console lines for people: time of day and what happened, short enough for the terminal.

The console handler of ``python -m runner`` (``conf/config.yaml``: ``hydra.job_logging``) formats each
record as ``HH:MM:SS  <message>``; a record may carry a shorter text for people in ``extra={"console":
…}`` (the cell in words rather than its id, the actor's slot left out) while ``sweep.log`` keeps the full
logging format and message. Warnings and errors say so in words. On a terminal, a line longer than the
terminal is wrapped by us at word boundaries with an indent, so nothing wraps in the middle of a word;
piped output (CI, tests, ``| tee``) keeps one line per record.
"""
from __future__ import annotations

import logging
import shutil
import sys
import textwrap
import time

#: The width assumed when the terminal does not say (and the README's promise for the default job).
DEFAULT_WIDTH = 100
_INDENT = " " * 10  # under the message, past "HH:MM:SS  "


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS  message`` (``record.console`` where a call gave one), wrapped to the terminal on a tty."""

    def __init__(self, stream=None) -> None:
        super().__init__()
        self._stream = stream

    def _width(self) -> int | None:
        stream = self._stream or sys.stdout
        try:
            if not stream.isatty():
                return None
        except (AttributeError, ValueError):
            return None
        return max(shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns - 1, 40)

    def format(self, record: logging.LogRecord) -> str:
        text = getattr(record, "console", None) or record.getMessage()
        if record.levelno >= logging.ERROR and not text.startswith("error"):
            text = f"error: {text}"
        elif record.levelno >= logging.WARNING and not text.startswith("warning"):
            text = f"warning: {text}"
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))}  {text}"
        width = self._width()
        if width is not None and len(line) > width:
            line = "\n".join(textwrap.wrap(line, width=width, subsequent_indent=_INDENT, break_long_words=False,
                                           break_on_hyphens=False))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
