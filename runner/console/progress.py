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
    """Counts, what runs where, and the ETA of a sweep's dispatch."""

    total: int
    done_ok: int = 0
    failed: int = 0
    retries: int = 0
    started: float = field(default_factory=time.time)
    #: framework → seconds of each of its finished cells, and whether that cell was its actor's first
    cell_seconds: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)  # framework → cells without a result yet
    running: dict[str, tuple[str, float, str]] = field(default_factory=dict)  # actor → (cell words, start, framework)
    slots: int = 1
    _actors_seen: set[str] = field(default_factory=set)

    @property
    def done(self) -> int:
        return self.done_ok + self.failed

    def queued(self, framework: str, n: int = 1) -> None:
        self.remaining[framework] = self.remaining.get(framework, 0) + n

    def finished(self, framework: str, actor: str, seconds: float | None) -> None:
        """A cell got its result (ok, failed or skipped) after ``seconds`` on ``actor`` (None: never ran)."""
        self.remaining[framework] = max(self.remaining.get(framework, 0) - 1, 0)
        if seconds is not None:
            first = actor not in self._actors_seen
            self._actors_seen.add(actor)
            self.cell_seconds.setdefault(framework, []).append((seconds, first))

    def typical_seconds(self, framework: str) -> float | None:
        """A framework's typical cell time: the median of its finished cells, leaving out each actor's first
        (imports, compilation, the device copy of the data) once later ones exist; other frameworks' when it
        has none yet."""
        def median(values: list[float]) -> float:
            values = sorted(values)
            mid = len(values) // 2
            return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

        own = self.cell_seconds.get(framework, [])
        later = [s for s, first in own if not first]
        if later or own:
            return median(later or [s for s, _ in own])
        known = [t for fw in self.cell_seconds if (t := self.typical_seconds(fw)) is not None]
        return median(known) if known else None

    def eta_seconds(self) -> float | None:
        """Cells still to run × their framework's typical time, plus what the running cells still need,
        spread over the slots."""
        if not self.cell_seconds:
            return None
        now = time.time()
        running_by_fw: dict[str, int] = {}
        work = 0.0
        for _, t0, framework in self.running.values():
            running_by_fw[framework] = running_by_fw.get(framework, 0) + 1
            work += max((self.typical_seconds(framework) or 0.0) - (now - t0), 0.0)
        for framework, n in self.remaining.items():
            queued = max(n - running_by_fw.get(framework, 0), 0)
            work += queued * (self.typical_seconds(framework) or 0.0)
        return work / max(self.slots, 1)


def fmt_seconds(s: float | None) -> str:
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
                 + f"  elapsed {fmt_seconds(time.time() - st.started)}  ETA {fmt_seconds(st.eta_seconds())}")
        if not self.state.running:
            return Text(title)
        table = Table(expand=False)
        table.add_column("actor")
        table.add_column("running")
        table.add_column("for", justify="right")
        now = time.time()
        for actor, (cell, t0, _) in sorted(self.state.running.items()):
            table.add_row(actor, cell, fmt_seconds(now - t0))
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
