"""The report's view of a trained model: the seed notebook's table measured, time-to-target curves,
the device's measured choices, and what could not be measured.

- ``notebook_table``: per condition and framework, after the configured epochs: validation accuracy,
  weighted precision / recall / F1 (test split) and training time per epoch (all epochs, warm-up
  included), each as the mean over seeds with its 95 % interval (the summary's framework rows), and the
  accuracy pair row at convergence with its verdict (equivalent or different at the ±1 pp margin, or how
  many seeds would settle it at 80 % power) — the table the seed notebook (M2 comparison) printed from
  mock values.
- ``time_to_target``: per condition with a target, the survival view (``analysis.censored.reach_curves``)
  drawn by ``analysis.plots.reach_figure``.
- ``tuning_table``: the hardware-dependent choices each framework's cells measured (``runs.tuning``).
- ``unmeasured_lines``: each column some cells could not measure as their label says, and why.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from analysis import censored
from analysis.metrics import METRICS, framework_sort_key

#: The seed notebook's columns: (summary metric, heading).
NOTEBOOK_COLUMNS = (("val_accuracy", "Validation accuracy"), ("precision", "Precision (weighted)"),
                    ("recall", "Recall (weighted)"), ("f1", "F1 (weighted)"),
                    ("mean_epoch_seconds", "Training time per epoch (warm-up included)"))


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _value(metric: str, x: Any) -> str:
    if not _finite(x):
        return "—"
    info = METRICS[metric]
    return f"{100 * float(x):.2f} %" if info.proportion else f"{float(x):.3g} {info.unit}"


def _interval(metric: str, low: Any, high: Any, n: Any) -> str:
    if _finite(n) and int(n) < 2:
        return "(1 seed)"
    if not (_finite(low) and _finite(high)):
        return ""
    info = METRICS[metric]
    if info.proportion:
        return f"[{100 * float(low):.2f}, {100 * float(high):.2f}]"
    return f"[{float(low):.3g}, {float(high):.3g}]"


def notebook_table(summary: pd.DataFrame, conditions: pd.DataFrame, verdict_text) -> list[dict[str, Any]]:
    """One block per condition (see the module doc); ``verdict_text`` formats the accuracy pair's verdict."""
    blocks = []
    fw_rows = summary[summary["row_kind"] == "framework"]
    pairs = summary[(summary["row_kind"] == "pair") & (summary["metric"] == "accuracy")]
    for cond in conditions.itertuples(index=False):
        here = fw_rows[fw_rows["condition_id"] == cond.condition_id]
        frameworks = sorted(here["framework"].dropna().unique(), key=framework_sort_key)
        rows = []
        for fw in frameworks:
            cells = []
            for metric, _ in NOTEBOOK_COLUMNS:
                r = here[(here["framework"] == fw) & (here["metric"] == metric)]
                if r.empty:
                    cells.append({"value": "—", "ci": ""})
                    continue
                x = r.iloc[0]
                cells.append({"value": _value(metric, x["estimate"]), "ci": _interval(metric, x["ci_low"], x["ci_high"], x["n"])})
            n = here.loc[here["framework"] == fw, "n"].max()
            rows.append({"framework": fw, "cells": cells, "n": int(n) if _finite(n) else 0})
        accuracy = []
        for r in pairs[pairs["condition_id"] == cond.condition_id].itertuples(index=False):
            accuracy.append({"pair": f"{r.framework_a} − {r.framework_b}",
                             "estimate": f"{float(r.estimate):+.2f} pp" if _finite(r.estimate) else "—",
                             "ci": (f"[{float(r.ci_low):+.2f}, {float(r.ci_high):+.2f}]"
                                    if _finite(r.ci_low) and _finite(r.ci_high) else ""),
                             "verdict": verdict_text(r.verdict, r.margin_words, r.seeds_needed, r.n, r.note) if r.verdict else
                             "descriptive (no headline verdict in this condition)"})
        epochs = getattr(cond, "epochs", None)
        blocks.append({"label": cond.condition, "epochs": int(epochs) if _finite(epochs) else None,
                       "headings": [h for _, h in NOTEBOOK_COLUMNS], "rows": rows, "accuracy": accuracy})
    return [b for b in blocks if b["rows"]]


def time_to_target(ok: pd.DataFrame, epochs: pd.DataFrame | None, conditions: pd.DataFrame,
                   cond_codes: np.ndarray, style: dict) -> list[dict[str, Any]]:
    """Per condition with a target: the reach curves (seconds, epochs) and the validation curves per seed."""
    from analysis import plots

    out = []
    if not censored.has_target(ok).any():
        return out
    for cond in conditions.itertuples(index=False):
        rows = ok[(cond_codes == cond.condition_id) & censored.has_target(ok).to_numpy()]
        if rows.empty:
            continue
        curves = censored.reach_curves(rows)
        ep = epochs[epochs["cell_id"].isin(rows["cell_id"])] if epochs is not None else None
        target = str(rows["target"].iloc[0])
        out.append({"label": cond.condition, "target": target, "budget": censored.budget_words(rows),
                    "figure": plots.reach_figure(curves, ep, target, style),
                    "reached": {fw: f"{int(c['reached'][0])} of {int(c['n'][0])}" for fw, c in curves.items()}})
    return out


def tuning_table(ok: pd.DataFrame) -> list[dict[str, Any]]:
    """Per framework and knob: the choice its cells used, each candidate's seconds per training step (median of
    the cells that measured it) and how many cells measured rather than reused it."""
    if "tuning" not in ok:
        return []
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for fw, text in zip(ok["framework"], ok["tuning"]):
        if not isinstance(text, str) or not text:
            continue
        for knob, result in json.loads(text).items():
            entry = found.setdefault((fw, knob), {"choices": Counter(), "seconds": {}, "measured": 0})
            entry["choices"][result["choice"]] += 1
            if result.get("measured_in") == "this cell":
                entry["measured"] += 1
                for candidate, seconds in result.get("seconds_per_step", {}).items():
                    entry["seconds"].setdefault(candidate, []).append(float(seconds))
    rows = []
    for (fw, knob), e in sorted(found.items(), key=lambda kv: (framework_sort_key(kv[0][0]), kv[0][1])):
        seconds = ", ".join(f"{c}: {1000 * float(np.median(v)):.1f} ms" for c, v in sorted(e["seconds"].items()))
        rows.append({"framework": fw, "knob": knob,
                     "choice": ", ".join(f"{c} ({k} cell{'s' if k != 1 else ''})" for c, k in e["choices"].most_common()),
                     "seconds": seconds or "—", "measured": e["measured"]})
    return rows


def unmeasured_lines(ok: pd.DataFrame) -> list[str]:
    """``<column>: not measured: <why> (keras 3 cells, pytorch 3 cells)`` — one line per column and reason."""
    if "unmeasured" not in ok:
        return []
    seen: dict[tuple[str, str], Counter] = {}
    for fw, text in zip(ok["framework"], ok["unmeasured"]):
        if isinstance(text, str) and text:
            for column, why in json.loads(text).items():
                seen.setdefault((column, why), Counter())[fw] += 1
    lines = []
    for (column, why), counts in sorted(seen.items()):
        who = ", ".join(f"{fw} {k} cell{'s' if k != 1 else ''}" for fw, k in
                        sorted(counts.items(), key=lambda kv: framework_sort_key(kv[0])))
        lines.append(f"{column}: {why} ({who})")
    return lines
