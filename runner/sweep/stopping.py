"""How a sweep stops early: one stop path for SIGINT (Ctrl-C), SIGTERM (schedulers, ``docker stop``,
Kubernetes) and SIGHUP (a closed terminal).

Every stop signal leads to the same orderly stop:

1. **While cells run** (the dispatch loop): no new cell is dispatched; the cells in flight get a grace
   period (``runner.stop_grace_s``, default 5 s — short, so that ``docker stop``'s 10 s and
   Kubernetes' 30 s leave time to consolidate) to finish and be written. A cell still running after
   it, or when the signal comes again, is abandoned: it is named in the log and in ``sweep.json``
   (the invocation's ``interrupted_cells``), gets no row, and the resume runs it again.
2. **Before that** (Ray start-up, actor placement, the gate): the step is abandoned at once.
3. **Clean-up** (actors and the Ray we started are shut down, the fragments on disk are consolidated,
   the summary and the resume command are printed): further signals cannot interrupt it; each one
   only says that clean-up is under way. ``kill -9`` remains the way to abandon it (the finished
   cells' fragments are safe on disk either way; a resume consolidates them).
4. **The report step** (after every cell finished): a signal ends the report (no traceback) with a
   hint how to build it later; the results are complete.

Exit status: 128 + the signal number — 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.

Ray's driver installs native handlers for some of these signals when it starts, so the handlers are
(re-)installed after Ray is up (``StopState.install``); they are restored when the sweep ends.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger("runner.sweep")

#: The signals that stop a sweep in order (those the platform has).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopRequested(KeyboardInterrupt):
    """Raised in the main thread by the first stop signal outside the dispatch loop (a KeyboardInterrupt,
    so code that already lets Ctrl-C through lets this through too)."""


def exit_code_for(signum: int | None) -> int:
    """128 + the signal number (130 for SIGINT and for a plain KeyboardInterrupt)."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


def signal_name(signum: int | None) -> str:
    if signum is None:
        return "SIGINT"
    try:
        return signal.Signals(signum).name
    except ValueError:  # pragma: no cover
        return f"signal {signum}"


class StopState:
    """Whether (and by which signal) the sweep was asked to stop, and what a signal does right now.

    ``phase``: ``run`` (a signal raises ``StopRequested``), ``dispatch`` (a signal sets the flag; the
    dispatch loop stops dispatching and gives the cells in flight their grace period; a second signal
    ends the grace period), ``cleanup`` (signals are only acknowledged), ``report`` (a signal raises).
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal (None: not stopped)
        self.count = 0  # stop signals received
        self.phase = "run"
        self.abandon = False  # the grace period was cut short by a repeated signal
        self.in_flight: list[str] = []  # cells abandoned while running (set by the dispatcher)
        self._saved: dict[int, Any] = {}

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)

    # ---- handlers ---------------------------------------------------------------------------
    def install(self) -> None:
        """(Re-)install the handlers; call again after anything that may replace them (``ray.init``)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals are delivered to the main thread only; a sweep in a worker thread keeps defaults
        for signum in STOP_SIGNALS:
            try:
                previous = signal.signal(signum, self._handle)
            except (OSError, ValueError):  # pragma: no cover - e.g. not allowed here
                continue
            self._saved.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, previous in self._saved.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (OSError, ValueError, TypeError):  # pragma: no cover
                pass
        self._saved.clear()

    @contextmanager
    def handling(self) -> Iterator["StopState"]:
        """Handlers installed for the block, restored after it."""
        self.install()
        try:
            yield self
        finally:
            self.restore()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        name = signal_name(signum)
        if self.signum is None:
            self.signum = signum
        if self.phase == "dispatch":
            if self.count == 1:
                log.warning("%s: stopping — no new cells; the cells in flight get a grace period to finish "
                            "(send it again to stop them now)", name)
            else:
                self.abandon = True
                log.warning("%s again: the cells in flight are abandoned; consolidating", name)
            return
        if self.phase == "cleanup":
            log.warning("%s: already stopping — consolidating results and shutting down Ray, please wait "
                        "(finished cells are safe on disk)", name)
            return
        # run / report: leave what is running now; from here on, clean-up
        self.phase = "cleanup"
        log.warning("%s: stopping", name)
        raise StopRequested(name)

    # ---- phases -----------------------------------------------------------------------------
    @contextmanager
    def dispatching(self) -> Iterator["StopState"]:
        """Within the block the dispatcher polls ``stopping`` instead of being interrupted."""
        if self.interrupted:
            raise StopRequested(signal_name(self.signum))
        self.phase = "dispatch"
        try:
            yield self
        finally:
            if self.phase == "dispatch":
                self.phase = "run" if not self.interrupted else "cleanup"

    def cleanup(self) -> None:
        """From here on signals are acknowledged, never raised."""
        self.phase = "cleanup"

    def reporting(self) -> None:
        """The report step: a signal ends it (``StopRequested``)."""
        self.phase = "report"

    @property
    def stopping(self) -> bool:
        return self.interrupted

    def grace_over(self, since: float, grace_s: float) -> bool:
        return self.abandon or time.time() - since >= grace_s
