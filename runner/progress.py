"""Live sweep progress (rich): cells done/total, failures, ETA, and what each actor is running.

Shown only on an interactive terminal and when ``runner.progress`` is true; otherwise the per-cell
log lines (which always go to the sweep's log file) are the progress report.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field


@dataclass
class ProgressState:
    total: int
    done_ok: int = 0
    failed: int = 0
    retries: int = 0
    started: float = field(default_factory=time.time)
    cell_seconds: list[float] = field(default_factory=list)
    running: dict[str, tuple[str, float]] = field(default_factory=dict)  # actor label → (cell label, start)
    slots: int = 1

    @property
    def done(self) -> int:
        return self.done_ok + self.failed

    def eta_seconds(self) -> float | None:
        """Remaining cells × mean cell time ÷ slots, minus the time the running cells have already had."""
        if not self.cell_seconds:
            return None
        mean = sum(self.cell_seconds) / len(self.cell_seconds)
        now = time.time()
        in_flight = sum(max(mean - (now - t0), 0.0) for _, t0 in self.running.values())
        queued = max(self.total - self.done - len(self.running), 0)
        return (queued * mean + in_flight) / max(self.slots, 1)


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class LiveProgress:
    """A rich ``Live`` table; console log handlers are pointed at rich's stdout proxy while it runs."""

    def __init__(self, state: ProgressState) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state = state
        self._console = Console(file=sys.stderr)
        self._live = Live(self._render(), console=self._console, refresh_per_second=2, transient=False,
                          redirect_stdout=True, redirect_stderr=True)
        self._swapped: list[tuple[logging.StreamHandler, object]] = []

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        st = self.state
        title = (f"cells {st.done}/{st.total}  ok {st.done_ok}  failed {st.failed}"
                 + (f"  retries {st.retries}" if st.retries else "")
                 + f"  elapsed {_fmt_seconds(time.time() - st.started)}  ETA {_fmt_seconds(st.eta_seconds())}")
        if not self.state.running:
            return Text(title)
        table = Table(expand=False)
        table.add_column("actor")
        table.add_column("running")
        table.add_column("for", justify="right")
        now = time.time()
        for actor, (cell, t0) in sorted(self.state.running.items()):
            table.add_row(actor, cell, _fmt_seconds(now - t0))
        return Group(Text(title), table)

    def __enter__(self) -> "LiveProgress":
        self._live.__enter__()
        # Log records must go through rich's redirected streams, or they tear the live display.
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler and handler.stream in (sys.__stdout__, sys.__stderr__):
                self._swapped.append((handler, handler.setStream(sys.stdout)))
        return self

    def update(self) -> None:
        self._live.update(self._render())

    def __exit__(self, *exc) -> None:
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped.clear()
        self._live.update(self._render())
        self._live.__exit__(*exc)


class NoProgress:
    def __init__(self, state: ProgressState) -> None:
        self.state = state

    def __enter__(self) -> "NoProgress":
        return self

    def update(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


def progress_view(state: ProgressState, enabled: bool):
    interactive = sys.stderr.isatty() and sys.stdout.isatty()
    return LiveProgress(state) if enabled and interactive else NoProgress(state)
