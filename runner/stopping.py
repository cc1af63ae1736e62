"""How a sweep stops early: today Ctrl-C (``KeyboardInterrupt``) is turned into an orderly stop.

What is finished stays on disk; the sweep then consolidates and prints the resume command
(``runner.outcome.say_interrupted``, exit 130). Other signals (SIGTERM, SIGHUP) belong here too.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class StopState:
    """Whether the sweep was asked to stop; ``with state.on_interrupt():`` records it instead of raising."""

    def __init__(self) -> None:
        self.interrupted = False

    @contextmanager
    def on_interrupt(self) -> Iterator["StopState"]:
        try:
            yield self
        except KeyboardInterrupt:
            self.interrupted = True
