"""Analysis options (the ``report`` config node) and the one error type of the analysis."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping


class AnalysisError(Exception):
    """Input the analysis cannot use; the message names the culprit (shown as one line on stderr)."""


@dataclass(frozen=True)
class AnalysisOptions:
    confidence: float = 0.95
    n_resamples: int = 2000  # bootstrap resamples (IQM intervals, from 10 seeds on)
    random_state: int = 0
    margin_quality_pp: float = 1.0  # TOST margin for proportions, ± percentage points (log loss: ± pp/100 nats)
    margin_time_ratio: float = 0.05  # TOST margin for ratios: A/B within [1/(1+m), 1+m]
    alpha: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.confidence < 1:
            problems.append(f"confidence must be in (0, 1), got {self.confidence}")
        if int(self.n_resamples) < 10:
            problems.append(f"n_resamples must be ≥ 10, got {self.n_resamples}")
        if not 0 < self.alpha < 0.5:
            problems.append(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not self.margin_quality_pp > 0:
            problems.append(f"margin_quality_pp must be > 0, got {self.margin_quality_pp}")
        if not self.margin_time_ratio > 0:
            problems.append(f"margin_time_ratio must be > 0, got {self.margin_time_ratio}")
        if problems:
            raise AnalysisError("report options: " + "; ".join(problems))

    @property
    def log_ratio_margin(self) -> float:
        return math.log1p(self.margin_time_ratio)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> "AnalysisOptions":
        """Build from the ``report`` config node; ``enabled`` (a runner switch) is accepted and ignored."""
        data = dict(options or {})
        data.pop("enabled", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnalysisError(f"report options: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            typed = {k: (int(v) if k in ("n_resamples", "random_state") else float(v)) for k, v in data.items()}
        except (TypeError, ValueError) as exc:
            raise AnalysisError(f"report options: {exc}") from None
        return replace(cls(), **typed)


def default_options() -> AnalysisOptions:
    """Defaults from ``conf/report/default.yaml`` (the single source of truth), else the dataclass's."""
    from core.paths import CONF_DIR

    path = Path(CONF_DIR) / "report" / "default.yaml"
    if not path.is_file():
        return AnalysisOptions()
    import yaml

    return AnalysisOptions.from_mapping(yaml.safe_load(path.read_text()) or {})
