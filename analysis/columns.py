"""``summary.parquet`` described: an explicit ``unit`` and ``scale`` on every row, and a description
and unit in every column's Arrow field metadata (the results tables' are in ``core.results``).

Row ``scale`` says how ``estimate``, ``ci_low``/``ci_high``, ``dec_*``, ``eq_*``, ``margin_*``,
``mean``, ``median`` … of that row are expressed:

- ``value``      a per-framework value in ``unit`` (``fraction`` = 0–1 for proportions such as accuracy);
- ``difference`` A − B in ``unit`` (``pp`` = percentage points for proportions);
- ``ratio``      A / B (unit ``×``; 1 = equal, < 1 = A smaller), intervals computed on log(A/B).
"""
from __future__ import annotations

import pandas as pd
import pyarrow as pa

from analysis.metrics import CONDITION_COLUMNS, METRICS

#: How a row's numbers are expressed (see the module doc).
SCALES = {"value": "value", "difference": "difference", "ratio": "ratio"}

_ROW = "per row: see `unit` and `scale`"

SUMMARY_DOCS: dict[str, tuple[str, str]] = {
    "row_kind": ("none", "framework (one framework's values) | pair (A vs B, paired by seed) | mcnemar (per-seed disagreements)"),
    "metric": ("none", "runs.parquet column the row is about (deployments.parquet column on deployment rows)"),
    "metric_label": ("none", "the metric's name as shown in the report"),
    "metric_kind": ("none", "quality | time | throughput | memory"),
    "comparison": ("none", "value (framework rows) | difference (A − B) | ratio (A / B)"),
    "unit": ("none", "unit of the row's estimate and intervals: s, ms, MiB, images/s, nats, fraction (0–1), "
                     "pp (percentage points), × (ratio)"),
    "scale": ("none", "how the row's numbers are expressed: value | difference (A − B) | ratio (A / B, 1 = equal)"),
    "higher_is_better": ("none", "true when a larger value of the metric is better"),
    "condition_id": ("none", "number of the condition (data, model, epochs, batch, device, precision, compile, parity)"),
    "condition": ("none", "the condition as text"),
    **{c: ("none", f"condition column: {c} of the runs compared") for c in CONDITION_COLUMNS},
    "framework": ("none", "framework of a framework row"),
    "framework_a": ("none", "A of a pair row (estimate = A − B or A / B)"),
    "framework_b": ("none", "B of a pair row"),
    "seed": ("none", "seed of a per-seed row (mcnemar)"),
    "estimate": (_ROW, "framework: mean (geometric for time/throughput/memory); pair: mean paired difference or "
                       "geometric-mean ratio"),
    "ci_low": (_ROW, "lower end of the confidence interval (level in `confidence`)"),
    "ci_high": (_ROW, "upper end of the confidence interval"),
    "n": ("count", "seeds (framework rows) or paired seeds (pair rows)"),
    "mean": (_ROW, "arithmetic mean over seeds (framework rows)"),
    "median": (_ROW, "median over seeds"),
    "std": (_ROW, "standard deviation over seeds"),
    "iqr": (_ROW, "interquartile range over seeds"),
    "iqm": (_ROW, "interquartile mean (from 10 seeds)"),
    "iqm_low": (_ROW, "lower end of the IQM's percentile-bootstrap interval"),
    "iqm_high": (_ROW, "upper end of the IQM's percentile-bootstrap interval"),
    "family": ("none", "headline (Holm-adjusted verdict family) | secondary (descriptive)"),
    "family_size": ("count", "number of tests in the row's Holm family"),
    "p": ("probability", "paired t-test p value (unadjusted)"),
    "p_holm": ("probability", "Holm-adjusted p value (headline rows)"),
    "decision_level": ("probability", "significance level of the row's decision interval after Holm"),
    "dec_low": (_ROW, "lower end of the decision interval (at the Holm level)"),
    "dec_high": (_ROW, "upper end of the decision interval"),
    "p_tost": ("probability", "equivalence (TOST) p value, unadjusted"),
    "p_tost_holm": ("probability", "equivalence (TOST) p value, Holm-adjusted"),
    "eq_low": (_ROW, "lower end of the equivalence (TOST) interval"),
    "eq_high": (_ROW, "upper end of the equivalence (TOST) interval"),
    "margin_low": (_ROW, "lower equivalence margin"),
    "margin_high": (_ROW, "upper equivalence margin"),
    "prob_a_better": ("fraction", "share of paired seeds where A beat B"),
    "prob_low": ("fraction", "Clopper–Pearson lower bound of prob_a_better"),
    "prob_high": ("fraction", "Clopper–Pearson upper bound of prob_a_better"),
    "seeds_only_a": ("count", "seeds only A ran (not paired, left out)"),
    "seeds_only_b": ("count", "seeds only B ran (not paired, left out)"),
    "within_share": ("fraction", "share of the seed-to-seed variance that is epoch-to-epoch noise"),
    "disagree_a": ("count", "test samples A got right and B wrong (mcnemar rows)"),
    "disagree_b": ("count", "test samples B got right and A wrong (mcnemar rows)"),
    "verdict": ("none", "<A> better | <B> better | equivalent | inconclusive (headline rows)"),
    "winner": ("none", "the better framework, when the verdict names one"),
    "margin_words": ("none", "exceeds the margin | within the margin"),
    "phrase": ("none", "the estimate in words, e.g. 'pytorch 1.4× faster'"),
    "seeds_needed": ("count", "seeds that would likely settle an inconclusive verdict"),
    "note": ("none", "remarks on the row (dropped seeds, no interval, …)"),
    "confidence": ("fraction", "confidence level of ci_low/ci_high"),
    "n_resamples": ("count", "bootstrap resamples (IQM interval)"),
    "deployment": ("none", "deployment rows (metric: a deployments.parquet column): '<format> · <runtime>' (e.g. "
                           "'onnx · onnxruntime') or 'native' (each framework in its own serving format); null on "
                           "the runs' rows"),
}


def with_units(summary: pd.DataFrame) -> pd.DataFrame:
    """``unit`` filled on every row (``fraction`` for per-framework proportions) and a ``scale`` column."""
    out = summary.copy()
    comparison = out.get("comparison", pd.Series([None] * len(out), index=out.index))
    out["scale"] = [SCALES.get(str(c), "value") for c in comparison]
    units = []
    for metric, scale, unit in zip(out.get("metric", []), out["scale"], out.get("unit", [None] * len(out))):
        info = METRICS.get(metric)
        if unit is None or unit == "" or (isinstance(unit, float) and pd.isna(unit)):
            if scale == "ratio":
                unit = "×"
            elif info is not None and info.proportion:
                unit = "fraction" if scale == "value" else "pp"
            else:
                unit = info.unit if info is not None and info.unit else "none"
        units.append(unit)
    out["unit"] = units
    if "unit" in out.columns:  # scale right after unit
        cols = [c for c in out.columns if c != "scale"]
        cols.insert(cols.index("unit") + 1, "scale")
        out = out[cols]
    return out


def described(table: pa.Table, docs: dict[str, tuple[str, str]] = SUMMARY_DOCS) -> pa.Table:
    """``table`` with ``description`` and ``unit`` field metadata on every column (``?`` where undocumented)."""
    fields = []
    for f in table.schema:
        unit, text = docs.get(f.name, ("?", "(undocumented)"))
        fields.append(f.with_metadata({"unit": unit, "description": text}))
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
