"""Statistics and the HTML report (see the README, "Statistics and the report").

``build_report`` is what the runner calls at the end of a sweep; ``python -m analysis`` is the same
from the command line. Heavy imports (matplotlib, the report module) happen inside the call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from analysis.options import AnalysisError, AnalysisOptions

__all__ = ["AnalysisError", "AnalysisOptions", "build_report", "plan_seeds", "print_history", "print_verdict"]


def build_report(results_dirs: list[Path], out_dir: Path, options: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Read sweep directories, write ``summary.parquet`` and ``report.html`` into ``out_dir``.

    ``options`` is the ``report`` config node (confidence, n_resamples, random_state,
    margin_quality_pp, margin_time_ratio, alpha; ``enabled`` is ignored). Returns
    ``{"summary": path, "report": path}``, plus ``"history": path`` when the directories are sweeps of
    one grid taken at different times (``analysis.history``). Raises :class:`AnalysisError` (one clear message) on input
    it cannot use; nothing is written then.
    """
    from analysis.report import build

    return build(list(results_dirs), out_dir, dict(options) if options is not None else None)


def plan_seeds(results_dirs: list[Path], options: Mapping[str, Any] | None, *, seeds_run: int, max_seeds: int,
               target: float):
    """Adaptive seeds: read the sweep's results so far (fragments are fine), analyse them as the report
    would, and say whether to add seeds (``analysis.planning.SeedDecision``; the rule and why it keeps
    the error rates are in that module)."""
    from analysis.load import load_results, require_ok
    from analysis.planning import decide_more_seeds
    from analysis.summary import summarize

    opts = AnalysisOptions.from_mapping(options)
    results = load_results([Path(d) for d in results_dirs])
    require_ok(results)
    summary, _, _ = summarize(results.ok_runs.reset_index(drop=True), opts, None, epochs=results.epochs)
    return decide_more_seeds(summary, seeds_run=seeds_run, max_seeds=max_seeds, target=target)


def print_verdict(summary_path: str | Path, file=None) -> None:
    """Print the report's first screen — the headline verdict rows of ``summary.parquet`` — as a compact
    table (question, metric, A vs B, estimate [CI], verdict) on ``file`` (stdout)."""
    from analysis.terminal import print_verdict as _print

    _print(Path(summary_path), file=file)


def print_history(history_path: str | Path, file=None) -> None:
    """Print the history's regression table (``history.parquet``: each arm's steps between sweeps, old →
    new, ratio or difference with its interval, verdict) on ``file`` (stdout)."""
    from analysis.terminal import print_history as _print

    _print(Path(history_path), file=file)
