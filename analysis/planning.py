"""Adaptive seeds: is every headline interval narrow enough, or should the sweep add a seed?

The stopping rule looks only at interval WIDTHS: a headline row is "settled" when the half-width of
its 95 % interval (analysis scale: pp or log ratio) is at most ``target`` × its equivalence margin.
The 95 % interval, not the decision interval: the decision interval's level comes from Holm and so
from the p-values, i.e. from the estimates; the 95 % half-width t(0.975, n − 1)·sd/√n does not.

Why this keeps the error rates: the width of a paired t-interval is t·sd/√n — it depends on the
seeds' spread, never on the mean or its sign. For normal values the sample mean and the sample
variance are independent, so stopping on width does not steer the estimate towards "better" or
"no difference" (no optional stopping on p). What remains is a small, second-order effect: a
sample whose sd happens to be small stops early with a slightly narrow interval (the Chow–Robbins /
Stein setting). ``benchmarks/bench_calibration.py`` measures the family-wise false "better" rate
and the coverage of the whole sequential procedure (3 → max seeds) by simulation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DEFAULT_TARGET = 0.5  # × the equivalence margin: half-width ≤ half the margin


@dataclass(frozen=True)
class SeedDecision:
    """What the sweep should do after analysing its current seeds."""

    more: bool  # add seeds
    reason: str  # one line for the log and the report
    paired_seeds: int  # smallest number of paired seeds over the headline rows
    unsettled: list[str] = field(default_factory=list)  # "condition · metric · pair: half-width x > y"


def half_widths(summary: pd.DataFrame) -> pd.DataFrame:
    """Headline pair rows with ``half_width`` and ``allowed`` (the margin) on the analysis scale."""
    head = summary[(summary["row_kind"] == "pair") & (summary["family"] == "headline")].copy()
    ratio = (head["comparison"] == "ratio").to_numpy()
    low, high = head["ci_low"].to_numpy(float), head["ci_high"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.where(ratio, (np.log(high) - np.log(low)) / 2, (high - low) / 2)
        margin = np.where(ratio, np.log(head["margin_high"].to_numpy(float)), head["margin_high"].to_numpy(float))
    head["half_width"] = half
    head["margin_scale"] = margin
    return head


def decide_more_seeds(summary: pd.DataFrame, *, seeds_run: int, max_seeds: int,
                      target: float = DEFAULT_TARGET) -> SeedDecision:
    """Stop when every headline row's 95 % half-width ≤ ``target`` × its margin, or when
    ``seeds_run`` has reached ``max_seeds``; otherwise ask for more. Rows with no interval yet (fewer
    than two paired seeds) are unsettled."""
    if not target > 0:
        raise ValueError(f"target must be > 0, got {target}")
    head = half_widths(summary)
    if head.empty:
        return SeedDecision(False, "no headline comparison (fewer than two frameworks): nothing to settle", 0)
    n = head["n"].astype(float).to_numpy()
    paired = int(np.nanmin(n)) if np.isfinite(n).any() else 0
    allowed = target * head["margin_scale"].to_numpy(float)
    half = head["half_width"].to_numpy(float)
    unsettled = ~(np.isfinite(half) & (half <= allowed))
    lines = [f"{r.condition} · {r.metric} · {r.framework_a} vs {r.framework_b}: half-width "
             f"{h:.4g} > {a:.4g}" if np.isfinite(h) else
             f"{r.condition} · {r.metric} · {r.framework_a} vs {r.framework_b}: no interval yet (n = {int(r.n)})"
             for r, h, a, bad in zip(head.itertuples(index=False), half, allowed, unsettled) if bad]
    if not lines:
        return SeedDecision(False, f"every headline interval is within {target:g} × its margin at {paired} paired "
                                   f"seeds", paired)
    if seeds_run >= max_seeds:
        return SeedDecision(False, f"maximum of {max_seeds} seeds reached with {len(lines)} headline interval(s) "
                                   f"wider than {target:g} × the margin", paired, lines)
    return SeedDecision(True, f"{len(lines)} headline interval(s) wider than {target:g} × the margin at {paired} "
                              f"paired seeds", paired, lines)
