"""Analysis options (the ``report`` config node) and the one error type of the analysis."""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from core.config import ConfigError, ReportConfig, check_node, load_option


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

    def __post_init__(self) -> None:  # ranges: the report schema (core.config.ReportConfig), as for the conf
        try:
            check_node(ReportConfig, dataclasses.asdict(self), "report")
        except ConfigError as exc:
            raise AnalysisError(f"report options: {exc}") from None

    @property
    def log_ratio_margin(self) -> float:
        return math.log1p(self.margin_time_ratio)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> "AnalysisOptions":
        """Build from the ``report`` config node, checked against its schema; ``enabled`` (a runner switch)
        is accepted and ignored."""
        try:
            report = check_node(ReportConfig, dict(options or {}), "report")
        except ConfigError as exc:
            raise AnalysisError(f"report options: {exc}") from None
        return cls(**{f.name: getattr(report, f.name) for f in dataclasses.fields(cls)})


def default_options() -> AnalysisOptions:
    """Defaults from ``conf/report/default.yaml`` (the single source of truth), else the dataclass's."""
    from core.paths import CONF_DIR

    path = Path(CONF_DIR) / "report" / "default.yaml"
    if not path.is_file():
        return AnalysisOptions()
    return AnalysisOptions.from_mapping(OmegaConf.to_container(load_option("report", path)))
