"""Statistics and the HTML report (see ../shared/DESIGN.md, "Statistics" and "The report").

``build_report`` is what the runner calls at the end of a sweep; ``python -m analysis`` is the same
from the command line. Heavy imports (matplotlib, the report module) happen inside the call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from analysis.options import AnalysisError, AnalysisOptions

__all__ = ["AnalysisError", "AnalysisOptions", "build_report"]


def build_report(results_dirs: list[Path], out_dir: Path, options: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Read sweep directories, write ``summary.parquet`` and ``report.html`` into ``out_dir``.

    ``options`` is the ``report`` config node (confidence, n_resamples, random_state,
    margin_quality_pp, margin_time_ratio, alpha; ``enabled`` is ignored). Returns
    ``{"summary": path, "report": path}``. Raises :class:`AnalysisError` (one clear message) on input
    it cannot use; nothing is written then.
    """
    from analysis.report import build

    return build(list(results_dirs), out_dir, dict(options) if options is not None else None)
