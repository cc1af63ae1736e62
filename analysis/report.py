"""``build_report``: sweep directories → ``summary.parquet`` + one self-contained ``report.html``.

Both files are written to temporary names first and renamed only after everything has been
computed and rendered, so a failure never leaves a half-written report behind.

(Over 400 lines: it gathers every section's context for the one template — verdict, tables, the
gate, provenance, the developer-experience table; statistics are ``analysis.summary``, figures
``analysis.plots``.)
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Mapping

import jinja2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis import arms as armlib
from analysis import history as historylib
from analysis import loc
from analysis import stats
from analysis import censored, trained
from analysis.censored import decomposition_phrase
from analysis.load import Results, load_results, require_ok
from analysis.metrics import METRICS, PRIMARY, QUESTIONS, framework_sort_key
from analysis.options import AnalysisError, AnalysisOptions
from analysis.summary import NOT_MEASURED, WARNING_PREFIX, conditions_table, constant_conditions, summarize
from core.atomic import atomic_path
from core.gate import GateCheck, GateRecord
from core.registry import DX_ASPECTS, FRAMEWORKS

TEMPLATE_DIR = Path(__file__).with_name("templates")
MAX_CONDITION_FIGURES = 24  # per-condition figure sets beyond this are left to the tables
MAX_PAIRED_CONDITIONS = 6  # columns of the per-seed paired figure
PAIRED_METRICS = ("median_epoch_seconds", "accuracy")  # the headline speed and quality metric, seed by seed


def _paired_metrics(headline: pd.DataFrame) -> list[str]:
    """The seed-by-seed figure's metrics: the training-speed headline this report uses (time to target where
    a target was set, else epoch time) and accuracy."""
    speed = next((m for m in PRIMARY["Trains faster"] if (headline["metric"] == m).any()
                  and (headline.loc[headline["metric"] == m, "verdict"] != NOT_MEASURED).any()), PAIRED_METRICS[0])
    return [speed, PAIRED_METRICS[1]]

# --------------------------------------------------------------------------------------------- formatting

def _finite(x: Any) -> bool:
    try:
        return x is not None and x is not pd.NA and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_num(x: Any, digits: int = 3) -> str:
    if not _finite(x):
        return "—"
    x = float(x)
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 10 ** digits:
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(mag))))
    return f"{x:.{decimals}f}"


def fmt_p(p: Any) -> str:
    if not _finite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_value(metric: str, x: Any) -> str:
    """A per-framework value with its unit (proportions as %)."""
    info = METRICS[metric]
    if not _finite(x):
        return "—"
    if info.proportion:
        return f"{100 * float(x):.2f} %"
    return f"{fmt_num(x)} {info.unit}".strip()


def fmt_ci(metric: str, low: Any, high: Any, n: Any, *, pair: bool) -> str:
    if _finite(n) and int(n) == 0:
        return "no paired seeds"
    if _finite(n) and int(n) == 1:
        return "no interval (1 seed)"
    if not (_finite(low) and _finite(high)):
        return "—"
    info = METRICS[metric]
    if pair:
        if info.comparison == "ratio":
            return f"[{float(low):.3f}, {float(high):.3f}]"
        return f"[{float(low):+.2f}, {float(high):+.2f}]" if info.proportion else f"[{fmt_num(low)}, {fmt_num(high)}]"
    if info.proportion:
        return f"[{100 * float(low):.2f}, {100 * float(high):.2f}]"
    return f"[{fmt_num(low)}, {fmt_num(high)}]"


def fmt_estimate(metric: str, x: Any, *, pair: bool) -> str:
    if not pair:
        return fmt_value(metric, x)
    info = METRICS[metric]
    if not _finite(x):
        return "—"
    if info.comparison == "ratio":
        return f"{float(x):.3f}×"
    return f"{float(x):+.2f} pp" if info.proportion else f"{float(x):+.4g} {info.unit}"


def hint_text(verdict: str, seeds_needed: Any, n: Any) -> str:
    """The seeds hint of an inconclusive headline row (sane for one seed and for unknown spread)."""
    if verdict != stats.VERDICT_INCONCLUSIVE:
        return ""
    if _finite(n) and int(n) < 2:
        return f"{int(n) if _finite(n) else 0} paired seed(s) show no spread: run ≥ 3 seeds, then this says how many more"
    if not _finite(seeds_needed):
        return ""
    k = int(seeds_needed)
    if k > 1000:
        return "> 1000 seeds: the difference is tiny next to the seed-to-seed noise"
    return f"~{k} seeds would settle it (80 % power)"


def verdict_text(verdict: str, margin_words: Any, seeds_needed: Any, n: Any, note: Any = None) -> str:
    """Verdict words as shown: "pytorch better (exceeds the margin)", "inconclusive — ~8 seeds would settle it",
    "not measured: one epoch is the warm-up — use train.epochs ≥ 2"."""
    if not verdict:
        return ""
    if verdict == NOT_MEASURED:
        return str(note) if note else NOT_MEASURED
    if verdict == stats.VERDICT_INCONCLUSIVE:
        if isinstance(note, str) and note.startswith("no number of seeds settles it"):
            return f"{verdict} — {note}"
        hint = hint_text(verdict, seeds_needed, n)
        return f"{verdict} — {hint}" if hint else verdict
    if verdict.endswith(" better") and isinstance(margin_words, str) and margin_words:
        return f"{verdict} ({margin_words})"
    return verdict


def verdict_class(verdict: str, a: str, b: str) -> str:
    if verdict == NOT_MEASURED:
        return "v-nm"
    if verdict == "equivalent":
        return "v-eq"
    if verdict == f"{a} better":
        return "v-a"
    if verdict == f"{b} better":
        return "v-b"
    return "v-inc"


def family_text(row) -> str:
    if row.family == "headline":
        size = int(row.family_size) if _finite(row.family_size) else 0
        return f"headline (Holm, m = {size})"
    if row.family == "secondary":
        return "secondary: descriptive"
    return ""


# --------------------------------------------------------------------------------------------- sections

def _pair_label(row) -> str:
    return f"{row.framework_a} vs {row.framework_b}"


def verdict_sections(summary: pd.DataFrame, conditions: pd.DataFrame, style: dict) -> list[dict]:
    """One block per condition: the headline family rows (one primary metric per question and pair), each
    with what it rests on (``basis``): the split design of a quality verdict, the budget a time to target
    is restricted to with the reach rates and the decomposition into epochs × seconds per epoch."""
    pairs = summary[(summary["row_kind"] == "pair") & (summary["family"] == "headline")]
    out = []
    for cond in conditions.itertuples(index=False):
        cpairs = pairs[pairs["condition_id"] == cond.condition_id]
        fws = summary[(summary["row_kind"] == "framework") & (summary["condition_id"] == cond.condition_id)]
        rows = []
        for question in QUESTIONS:
            for metric in PRIMARY[question]:
                for r in cpairs[cpairs["metric"] == metric].itertuples(index=False):
                    info = METRICS[metric]
                    ratio = info.comparison == "ratio"
                    level = float(r.decision_level) if _finite(r.decision_level) else None
                    measured = r.verdict != NOT_MEASURED
                    rows.append({
                        "question": question, "metric": info.label.split(" (")[0], "pair": _pair_label(r),
                        "a": r.framework_a, "b": r.framework_b,
                        "estimate": ((f"{r.framework_a}/{r.framework_b} = " if ratio else f"{r.framework_a} − {r.framework_b} = ")
                                     + fmt_estimate(metric, r.estimate, pair=True)) if measured else "—",
                        "ci": fmt_ci(metric, r.ci_low, r.ci_high, r.n, pair=True) if measured else "",
                        "dec": fmt_ci(metric, r.dec_low, r.dec_high, r.n, pair=True) if measured else "",
                        "dec_level": f"{100 * (1 - level):.1f} %" if level is not None else "",
                        "phrase": r.phrase or "",
                        "verdict": verdict_text(r.verdict, r.margin_words, r.seeds_needed, r.n, r.note),
                        "vclass": verdict_class(r.verdict, r.framework_a, r.framework_b),
                        "winner_color": style.get(r.winner, {}).get("color", "") if r.winner else "",
                        "n": int(r.n) if _finite(r.n) else 0, "dropped": _dropped(r), "p_holm": fmt_p(r.p_holm),
                        "p_tost": fmt_p(r.p_tost_holm), "basis": _basis(summary, cond.condition_id, metric, r),
                    })
        out.append({"id": int(cond.condition_id), "label": cond.condition, "rows": rows,
                    "frameworks": sorted(fws["framework"].unique(), key=framework_sort_key)})
    return out


def _basis(summary: pd.DataFrame, condition_id: int, metric: str, r) -> str:
    """What a headline verdict rests on, in one line (empty when nothing needs saying)."""
    info = METRICS[metric]
    design = getattr(r, "split_design", None)
    if info.kind == "quality" and isinstance(design, str):
        return ("resampled splits: a claim about the data set (Nadeau–Bengio corrected variance)"
                if design == "resampled" else "one fixed split: a claim about these data (training randomness only)")
    if metric != "time_to_target_seconds":
        return ""
    here = summary[summary["condition_id"] == condition_id]
    reach = here[(here["row_kind"] == "framework") & (here["metric"] == "reach_rate")]
    parts = [f"{getattr(r, 'target', '') or 'target'}, restricted to {int(r.epochs)} epochs (a miss counts as "
             "the whole budget)" if _finite(getattr(r, "epochs", None)) else "restricted to the epoch budget"]
    rates = [f"{x.framework} {int(round(x.estimate * x.n))}/{int(x.n)}" for x in reach.itertuples(index=False)
             if x.framework in (r.framework_a, r.framework_b)]
    if rates:
        parts.append("reached: " + ", ".join(rates))
    sub = here[(here["row_kind"] == "pair") & (here["framework_a"] == r.framework_a) & (here["framework_b"] == r.framework_b)]
    epochs = sub.loc[sub["metric"] == "epochs_to_target_restricted", "estimate"]
    seconds = sub.loc[sub["metric"] == "seconds_per_epoch_to_target", "estimate"]
    if len(epochs) and len(seconds):
        phrase = decomposition_phrase(r.framework_a, float(epochs.iloc[0]), float(seconds.iloc[0]))
        if phrase:
            parts.append(phrase)
    return "; ".join(parts)


def _dropped(r) -> str:
    parts = [f"{who}: {int(k)}" for who, k in ((r.framework_a, r.seeds_only_a), (r.framework_b, r.seeds_only_b))
             if _finite(k) and int(k) > 0]
    return ("dropped " + ", ".join(parts)) if parts else ""


def _metric_tables(summary: pd.DataFrame, conditions: pd.DataFrame) -> list[dict]:
    tables = []
    fw_rows = summary[summary["row_kind"] == "framework"]
    pair_rows = summary[summary["row_kind"] == "pair"]
    for metric, info in METRICS.items():
        f = fw_rows[fw_rows["metric"] == metric]
        if f.empty:
            continue
        p = pair_rows[pair_rows["metric"] == metric]
        rows = []
        for cond in conditions.itertuples(index=False):
            for r in f[f["condition_id"] == cond.condition_id].itertuples(index=False):
                iqm = (f"IQM {fmt_value(metric, r.iqm)} {fmt_ci(metric, r.iqm_low, r.iqm_high, r.n, pair=False)}"
                       if _finite(r.iqm) else "")
                rows.append({"condition": cond.condition, "who": r.framework, "kind": "framework",
                             "estimate": fmt_value(metric, r.estimate),
                             "ci": fmt_ci(metric, r.ci_low, r.ci_high, r.n, pair=False),
                             "median": fmt_value(metric, r.median),
                             "spread": (f"sd {fmt_value(metric, r.std)}, IQR {fmt_value(metric, r.iqr)}"
                                        if _finite(r.std) else "—") + (f"; {iqm}" if iqm else ""),
                             "n": int(r.n), "family": "", "p": "", "p_holm": "", "p_tost": "", "prob": "",
                             "verdict": "", "vclass": ""})
            for r in p[p["condition_id"] == cond.condition_id].itertuples(index=False):
                prob = (f"{fmt_num(r.prob_a_better, 2)} [{fmt_num(r.prob_low, 2)}, {fmt_num(r.prob_high, 2)}]"
                        if _finite(r.prob_a_better) else "—")
                headline = r.family == "headline"
                spread = r.phrase or ""
                if _finite(r.within_share):
                    spread += f"; within-cell share of variance {100 * float(r.within_share):.0f} %"
                if r.note:
                    spread += f"; {r.note}"
                rows.append({"condition": cond.condition, "who": _pair_label(r), "kind": "pair",
                             "estimate": fmt_estimate(metric, r.estimate, pair=True),
                             "ci": fmt_ci(metric, r.ci_low, r.ci_high, r.n, pair=True),
                             "median": fmt_estimate(metric, r.median, pair=True), "spread": spread,
                             "n": int(r.n), "family": family_text(r), "p": fmt_p(r.p),
                             "p_holm": fmt_p(r.p_holm) if headline else "",
                             "p_tost": fmt_p(r.p_tost_holm if headline else r.p_tost), "prob": prob,
                             "verdict": verdict_text(r.verdict, r.margin_words, r.seeds_needed, r.n, r.note) if headline
                             else "descriptive",
                             "vclass": verdict_class(r.verdict, r.framework_a, r.framework_b) if headline else "v-inc"})
        unit = "%" if info.proportion else info.unit
        comparison = ("difference A − B in percentage points" if info.proportion else
                      f"difference A − B in {info.unit}" if info.comparison == "difference" else
                      "ratio A / B (geometric mean over seeds)")
        tables.append({"metric": metric, "label": info.label, "unit": unit, "comparison": comparison,
                       "direction": "higher is better" if info.higher_is_better else "lower is better", "rows": rows})
    return tables


def _mcnemar_table(summary: pd.DataFrame) -> list[dict]:
    rows = summary[summary["row_kind"] == "mcnemar"]
    return [{"condition": r.condition, "pair": _pair_label(r), "a": r.framework_a, "b": r.framework_b,
             "seed": int(r.seed), "n": int(r.n), "estimate": f"{r.estimate:+.2f} pp",
             "a_only": int(r.disagree_a), "b_only": int(r.disagree_b), "note": r.note or ""}
            for r in rows.itertuples(index=False)]


def _json_cell(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _knob_table(ok: pd.DataFrame) -> dict:
    frameworks = sorted(ok["framework"].unique(), key=framework_sort_key)
    modes = sorted(ok["parity_mode"].dropna().astype(str).unique()) or ["—"]
    columns = [(m, fw) for m in modes for fw in frameworks]
    values: dict[str, dict[tuple[str, str], set[str]]] = {}
    for r in ok.itertuples(index=False):
        knobs = _json_cell(getattr(r, "parity_knobs", None))
        if not isinstance(knobs, dict):
            continue
        for k, v in knobs.items():
            values.setdefault(k, {}).setdefault((str(r.parity_mode), r.framework), set()).add(_value_text(v))
    rows = []
    for knob in sorted(values):
        cells = [", ".join(sorted(values[knob].get(col, set()))) or "—" for col in columns]
        differs = any(len({", ".join(sorted(values[knob].get((m, fw), set()))) for fw in frameworks
                           if (m, fw) in values[knob]}) > 1 for m in modes)
        rows.append({"knob": knob, "cells": cells, "differs": differs})
    return {"columns": [f"{fw} ({m})" if len(modes) > 1 else fw for m, fw in columns], "rows": rows}


def _split_audit(runs: pd.DataFrame) -> dict:
    have = runs[runs["split_hash"].notna()] if "split_hash" in runs else runs.iloc[0:0]
    frameworks = sorted(have["framework"].unique(), key=framework_sort_key)
    rows, mismatches = [], 0
    for (data, seed), grp in have.groupby(["data", "seed"], dropna=False):
        cells = []
        for fw in frameworks:
            hashes = sorted(grp.loc[grp["framework"] == fw, "split_hash"].astype(str).unique())
            cells.append(", ".join(h[:12] for h in hashes) or "—")
        distinct = grp["split_hash"].astype(str).nunique()
        mismatches += distinct > 1
        rows.append({"data": str(data), "seed": int(seed), "cells": cells, "ok": distinct == 1})
    return {"frameworks": frameworks, "rows": rows, "mismatches": mismatches, "available": bool(len(have))}


def _failed_cells(runs: pd.DataFrame) -> list[dict]:
    failed = runs[runs["status"] != "ok"]
    out = []
    for r in failed.itertuples(index=False):
        cond = " · ".join(str(getattr(r, c)) for c in ("data", "model", "batch_size", "device_kind",
                                                       "precision_policy", "execution_mode", "pipeline")
                          if getattr(r, c, None) is not None)
        err = str(r.error or "").strip()
        out.append({"framework": r.framework, "seed": int(r.seed), "condition": cond,
                    "attempt": "" if not _finite(getattr(r, "attempt", None)) else int(r.attempt),
                    "error": err.splitlines()[0] if err else "(no error text)",
                    "traceback": str(getattr(r, "traceback", "") or ""), "cell_id": r.cell_id})
    return out


def gate_views(dirs) -> list[dict]:
    """One view per gate check (``core.gate.GateRecord``); a record without checks is one view."""
    views = []
    for sweep in dirs:
        gate = sweep.parity_gate
        if gate is None or not gate.checks:
            views.append(_record_view(gate, sweep.parity_gate_source, str(sweep.path)))
        else:
            views += [gate_view(check, sweep.parity_gate_source, str(sweep.path)) for check in gate.checks]
    return views


def _empty_gate_view(source: str, directory: str) -> dict:
    return {"dir": directory, "source": source, "status": "not run", "model": "", "params": [], "pairs": [],
            "knobs": {"columns": [], "rows": []}, "notes": [], "raw": ""}


def _record_view(gate: GateRecord | None, source: str, directory: str) -> dict:
    """A record with no checks (skipped, not run, or an error before any check)."""
    view = _empty_gate_view(source, directory)
    if gate is not None:
        view.update(status=_status_word(gate.status), notes=[gate.summary] if gate.summary else [],
                    raw=json.dumps(gate.to_dict(), indent=2, sort_keys=True, default=str))
    return view


def _status_word(value: Any) -> str:
    """A check's/pair's status for the page: passed, FAILED, ERROR (capitals draw the eye) or as stored."""
    if isinstance(value, bool):
        return "passed" if value else "FAILED"
    return {"passed": "passed", "failed": "FAILED", "error": "ERROR"}.get(str(value), str(value))


def gate_view(check: GateCheck, source: str, directory: str) -> dict:
    """One gate check in the fixed shape the template reads."""
    view = _empty_gate_view(source, directory)
    view["raw"] = json.dumps(dataclasses.asdict(check), indent=2, sort_keys=True, default=str)
    view["status"] = _status_word(check.status)
    view["model"] = " × ".join(str(x) for x in (check.model, check.data) if x)
    comparison = check.comparison or {}
    for fw, info in sorted(comparison.get("param_counts", {}).items(), key=lambda kv: framework_sort_key(kv[0])):
        view["params"].append({"framework": fw, "trainable": _value_text(info.get("trainable")),
                               "total": _value_text(info.get("total", "—"))})
    tolerance = comparison.get("tolerance", check.tolerance)
    for p in comparison.get("pairs", []):
        step = p.get("step") or {}
        view["pairs"].append({
            "pair": f"{p.get('a', '?')} vs {p.get('b', '?')}",
            "max_abs": _value_text(p.get("max_abs_delta_logits")),
            "max_rel": _value_text(p.get("max_rel_delta_logits")),
            "tolerance": _value_text(tolerance if tolerance is not None else "—"),
            "step": (_status_word(step.get("passed")) + (
                f" (max |Δ update| {_value_text(step['max_abs_delta_update_corrected'])})"
                if _finite(step.get("max_abs_delta_update_corrected")) else "")) if step else "—",
            "status": _status_word(p.get("passed")),
        })
    knobs = comparison.get("knobs")
    differing = set(comparison.get("knobs_differing") or [])
    if isinstance(knobs, dict) and knobs:
        cols = sorted(knobs, key=framework_sort_key)
        names = sorted({k for v in knobs.values() for k in v})
        view["knobs"] = {"columns": cols,
                         "rows": [{"knob": n, "differs": n in differing,
                                   "cells": [_value_text(knobs[c].get(n, "—")) for c in cols]} for n in names]}
    view["notes"] = check.reasons + [str(n) for n in comparison.get("cannot_match", [])]
    return view


def dx_table(ok: pd.DataFrame, source_root: Path) -> dict:
    """The developer-experience table: one column per framework in the results, one row per aspect
    (``core.registry.DX_ASPECTS``); each cell is the registry's note on that framework and what this code
    base measures for it — lines of code of its adapter (``# region:`` markers), time to first step, cold
    import time."""
    frameworks = sorted(ok["framework"].astype(str).unique(), key=framework_sort_key) if len(ok) else []
    registry = {fw: FRAMEWORKS.get(armlib.base_name(fw)) for fw in frameworks}  # an arm: its framework's row
    files = {fw: row.adapter_file for fw, row in registry.items() if row is not None}
    counts = {fw: loc.count_regions(source_root / path) for fw, path in files.items()}
    totals = {fw: loc.count_file(source_root / path) for fw, path in files.items()}

    def lines(fw: str, region: str | None) -> str:
        if fw not in files:
            return "n/a (not in the registry)"
        v = totals[fw] if region is None else counts[fw].get(region, totals[fw])
        return f"{v if v is not None else 'n/a'} lines of code" + (" (whole adapter)" if region is None else "")

    def timing(fw: str, column: str, positive_only: bool, what: str) -> str:
        v = ok.loc[ok["framework"] == fw, column].dropna() if column in ok else pd.Series(dtype=float)
        if positive_only:
            v = v[v > 0]  # results before schema 2 wrote 0 (not a measurement) for a reused process
        if not len(v):
            return f"{what}: n/a"
        return f"{what} {fmt_num(v.median())} s (median, n={len(v)}" + (" fresh processes)" if positive_only else ")")

    measured = {
        "api": lambda fw: lines(fw, None),
        "model-definition": lambda fw: lines(fw, "model-definition"),
        "data-pipeline": lambda fw: lines(fw, "data-pipeline"),
        "training-loop": lambda fw: lines(fw, "training-loop"),
        "debugging": lambda fw: timing(fw, "time_to_first_step_seconds", False, "time to first step"),
        "ecosystem": lambda fw: timing(fw, "import_seconds", True, "cold import"),
    }
    rows = [{"aspect": heading,
             "cells": [{"note": (registry[fw].notes.get(key) if registry[fw] else None) or "—",
                        "measured": measured[key](fw)} for fw in frameworks]}
            for key, heading in DX_ASPECTS.items()]
    return {"frameworks": [{"name": fw, "label": (f"{registry[fw].label}, {fw}" if fw not in FRAMEWORKS else registry[fw].label)
                            if registry[fw] else fw}
                           for fw in frameworks],
            "rows": rows, "files": files,
            "missing": [fw for fw in files if all(v is None for v in counts[fw].values())]}


def _framework_version(name: str, version: str) -> str:
    """``keras_jax: Keras (JAX), keras 3.12.0`` — the registry's label and package beside the result's name."""
    row = FRAMEWORKS.get(name)
    return f"{name}: {row.label}, {row.package} {version}" if row else f"{name} {version}"


def _environment(results: Results) -> dict:
    ok = results.ok_runs
    runs = results.runs
    versions: dict[str, dict[str, set[str]]] = {}
    for r in runs.itertuples(index=False):
        v = _json_cell(getattr(r, "versions", None))
        if isinstance(v, dict):
            for pkg, ver in v.items():
                versions.setdefault(str(pkg), {}).setdefault(r.framework, set()).add(str(ver))
    frameworks = sorted(runs["framework"].unique(), key=framework_sort_key)
    version_rows = [{"package": pkg, "cells": [", ".join(sorted(versions[pkg].get(fw, set()))) or "—" for fw in frameworks]}
                    for pkg in sorted(versions)]
    dev_cols = [c for c in ("device_kind", "device_name", "host", "gpu_index") if c in runs]
    devices = (runs[dev_cols + ["framework"]].astype("string").fillna("—").value_counts().reset_index(name="runs")
               .sort_values(dev_cols + ["framework"]).to_dict("records"))

    def uniq(col: str) -> list[str]:
        return sorted(runs[col].dropna().astype(str).unique()) if col in runs else []

    started = pd.to_datetime(runs["start_time"], utc=True).min() if "start_time" in runs else None
    ended = pd.to_datetime(runs["end_time"], utc=True).max() if "end_time" in runs else None
    sweeps = []
    for s in results.dirs:
        meta = dict(s.metadata)
        config = meta.pop("config", None)
        environment = meta.pop("environment", None)
        meta.pop("parity_gate", None)
        sweeps.append({"dir": str(s.path), "config": _pretty(config), "environment": _pretty(environment),
                       "other": _pretty(meta) if meta else "", "from_fragments": s.from_fragments})
    return {"frameworks": frameworks, "versions": version_rows, "devices": devices, "device_cols": dev_cols,
            "hosts": uniq("host"), "git_shas": uniq("git_sha"), "sweep_ids": uniq("sweep_id"),
            "framework_versions": sorted({_framework_version(r.framework, r.framework_version)
                                          for r in ok.itertuples(index=False) if getattr(r, "framework_version", None)}),
            "started": "" if started is None or pd.isna(started) else started.isoformat(timespec="seconds"),
            "ended": "" if ended is None or pd.isna(ended) else ended.isoformat(timespec="seconds"),
            "sweeps": sweeps}


def _pretty(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        import yaml

        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except Exception:  # noqa: BLE001 — any unserialisable value still shows, as JSON
        return json.dumps(value, indent=2, default=str)


def _per_class(ok: pd.DataFrame) -> list[dict]:
    """Per-class precision/recall/F1 averaged over seeds, per framework (one table per condition)."""
    out = {}
    for r in ok.itertuples(index=False):
        pc = _json_cell(getattr(r, "per_class", None))
        if not isinstance(pc, dict):
            continue
        for cls, vals in pc.items():
            if isinstance(vals, dict):
                for k in ("precision", "recall", "f1"):
                    if _finite(vals.get(k)):
                        out.setdefault((r.framework, str(cls), k), []).append(float(vals[k]))
    if not out:
        return []
    frameworks = sorted({k[0] for k in out}, key=framework_sort_key)
    classes = list(dict.fromkeys(k[1] for k in out))
    rows = []
    for cls in classes:
        cells = []
        for fw in frameworks:
            for k in ("precision", "recall", "f1"):
                v = out.get((fw, cls, k))
                cells.append(f"{100 * np.mean(v):.1f}" if v else "—")
        rows.append({"cls": cls, "cells": cells})
    return [{"frameworks": frameworks, "rows": rows}]


def _condition_figures(results: Results, conditions: pd.DataFrame, cond_codes: np.ndarray, style: dict) -> list[dict]:
    from analysis import plots

    ok = results.ok_runs.reset_index(drop=True).assign(condition_id=cond_codes)
    frameworks = sorted(ok["framework"].unique(), key=framework_sort_key)
    headline = [m for m, i in METRICS.items() if i.question]
    epochs = None
    if results.epochs is not None:
        epochs = results.epochs.drop(columns=["framework", "seed"], errors="ignore").merge(
            ok[["cell_id", "framework", "seed", "condition_id"]], on="cell_id", how="inner")
    preds = None
    if results.predictions is not None:
        preds = results.predictions[["cell_id", "y_true", "y_pred"]].assign(_row=np.arange(len(results.predictions)))
        preds = preds.merge(ok[["cell_id", "framework", "seed", "condition_id"]], on="cell_id", how="inner")
    out = []
    for cond in conditions.head(MAX_CONDITION_FIGURES).itertuples(index=False):
        runs_c = ok[ok["condition_id"] == cond.condition_id]
        fig = {"id": int(cond.condition_id), "label": cond.condition,
               "strip": plots.seed_strip_plot(runs_c, headline, frameworks, style)}
        epochs_c = epochs[epochs["condition_id"] == cond.condition_id] if epochs is not None else None
        fig["curves"] = plots.learning_curves(epochs_c, style) if epochs is not None else None
        n_epochs = 0 if epochs_c is None else epochs_c["epoch"].nunique()
        fig["curves_note"] = ("One epoch per run: a curve needs two (the final values are in the tables)." if n_epochs == 1
                              else "Not available (no per-epoch rows for this condition).")
        fig["roc"] = plots.roc_curves(preds[preds["condition_id"] == cond.condition_id], results.scores, style) \
            if preds is not None else None
        fig["roc_zoomed"] = plots.figure_has_text(fig["roc"], "top-left corner")
        matrices, classes = {}, []
        for fw, grp in sorted(runs_c.groupby("framework"), key=lambda kv: framework_sort_key(kv[0])):
            mats = [np.asarray(m) for m in (_json_cell(x) for x in grp.get("confusion_matrix", [])) if m]
            mats = [m for m in mats if m.ndim == 2 and m.shape[0] == m.shape[1]]
            if mats and len({m.shape for m in mats}) == 1:
                matrices[fw] = np.sum(mats, axis=0)
                cl = _json_cell(grp["classes"].dropna().iloc[0]) if "classes" in grp and grp["classes"].notna().any() else None
                classes = [str(c) for c in cl] if isinstance(cl, list) else classes
        fig["confusion"] = plots.confusion_matrices(matrices, classes) if len({m.shape for m in matrices.values()}) == 1 else None
        fig["per_class"] = _per_class(runs_c)
        out.append(fig)
    return out


def figure_notes(fw_rows: pd.DataFrame, conditions: pd.DataFrame, frameworks: list[str]) -> dict[str, str]:
    """The sentence shown where a figure is left out because it would show nothing."""
    from analysis import plots

    notes = {"scaling": "", "paired": "", "forest": ""}
    if plots.speed_axis(fw_rows) is None and not fw_rows.empty:
        batch = sorted(fw_rows["batch_size"].dropna().astype(int).unique())
        device = sorted(fw_rows["device_label"].dropna().astype(str).unique())
        notes["scaling"] = (f"Every run used one training batch size ({', '.join(map(str, batch)) or '—'}) and one device "
                            f"({', '.join(device) or '—'}): a line through one point says nothing, so this figure is left out. "
                            "Sweep batch sizes (+sweep=batch_sizes) or devices (+sweep=devices) to see it.")
    if len(frameworks) < 2:
        notes["paired"] = f"Only {', '.join(frameworks)} ran: there is no second framework to pair seeds with."
        notes["forest"] = f"Only {', '.join(frameworks)} ran: there is no paired comparison to plot."
    elif len(conditions) > MAX_PAIRED_CONDITIONS:
        notes["paired"] = (f"Drawn for the first {MAX_PAIRED_CONDITIONS} of {len(conditions)} conditions; "
                           "the per-condition sections below show every condition.")
    if len(frameworks) > 2:
        notes["paired"] = (notes["paired"] + f" Lines join {frameworks[0]} and {frameworks[1]}; "
                           "the per-condition figures below join every framework.").strip()
    return notes


# --------------------------------------------------------------------------------------------- entry point

def _environment_jinja() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env


def render_html(context: Mapping[str, Any]) -> str:
    return _environment_jinja().get_template("report.html.j2").render(**context)


def _summary_table(summary: pd.DataFrame) -> pa.Table:
    """Every row with an explicit ``unit`` and ``scale``; every column described (``analysis.columns``)."""
    from analysis.columns import described, with_units

    return described(pa.Table.from_pandas(with_units(summary), preserve_index=False))


def build(results_dirs: list[str | Path], out_dir: str | Path, options: Mapping[str, Any] | AnalysisOptions | None = None,
          *, source_root: str | Path | None = None) -> dict[str, Path]:
    from core.paths import PROJECT_ROOT

    opts = options if isinstance(options, AnalysisOptions) else AnalysisOptions.from_mapping(options)
    results = load_results([Path(d) for d in results_dirs])
    require_ok(results)
    from analysis import plots  # matplotlib only once the input is known to be usable
    ok = results.ok_runs.reset_index(drop=True)
    summary, conditions, notes = summarize(ok, opts, results.predictions, epochs=results.epochs)
    from analysis.deploy import add_deploy_evidence, deploy_section  # deployments.parquet: rows, Deploys section

    deploys = deploy_section(results, summary, conditions, opts)
    notes = results.notes + notes
    warnings = [n[len(WARNING_PREFIX):] for n in notes if n.startswith(WARNING_PREFIX)]
    notes = [n for n in notes if not n.startswith(WARNING_PREFIX)]
    _, cond_codes = conditions_table(ok)
    frameworks = sorted(ok["framework"].unique(), key=framework_sort_key)
    style = plots.framework_style(results.runs["framework"].unique())

    pairs = summary[summary["row_kind"] == "pair"]
    headline = pairs[pairs["family"] == "headline"]
    fw_rows = summary[summary["row_kind"] == "framework"].copy()
    fw_rows["device_label"] = (fw_rows["device_kind"].astype("string").fillna("?") + " "
                               + fw_rows["device_name"].astype("string").fillna("")).str.strip()
    split = _split_audit(results.runs)
    failed = _failed_cells(results.runs)
    seeds_per_fw = ok.groupby("framework")["seed"].nunique().to_dict()
    context = {
        "title": " vs ".join(frameworks) + " — benchmark report",
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dirs": [str(s.path) for s in results.dirs],
        "frameworks": frameworks,
        "framework_labels": [f"{fw} = {FRAMEWORKS[fw].label}" if fw in FRAMEWORKS else fw for fw in frameworks],
        "style": style,
        "constant_conditions": constant_conditions(conditions),
        "n_ok": len(ok), "n_failed": len(failed), "n_conditions": len(conditions),
        "seeds": {fw: int(seeds_per_fw.get(fw, 0)) for fw in frameworks},
        "options": opts,
        "margin_ratio_low": f"{1 / (1 + opts.margin_time_ratio):.3f}", "margin_ratio_high": f"{1 + opts.margin_time_ratio:.3f}",
        "family_size": int(np.isfinite(headline["p"].to_numpy(float)).sum()),
        "n_secondary": int((pairs["family"] == "secondary").sum()),
        "notes": notes, "warnings": warnings,
        "adaptive": [{"dir": str(s.path), **s.metadata["adaptive_seeds"]} for s in results.dirs
                     if isinstance(s.metadata.get("adaptive_seeds"), dict)],
        "verdict_sections": verdict_sections(summary, conditions, style),
        "metric_tables": _metric_tables(summary, conditions),
        "mcnemar": _mcnemar_table(summary),
        "forest": plots.forest_plot(headline, style),
        "paired": plots.paired_seed_plot(censored.derive(ok).assign(condition_id=cond_codes),
                                         _paired_metrics(headline), frameworks, conditions, style,
                                         max_conditions=MAX_PAIRED_CONDITIONS),
        "figure_notes": figure_notes(fw_rows, conditions, frameworks),
        "scaling": plots.scaling_plot(fw_rows, style),
        "memory": plots.memory_plot(fw_rows, style),
        "condition_figures": _condition_figures(results, conditions, cond_codes, style),
        "more_conditions": max(0, len(conditions) - MAX_CONDITION_FIGURES),
        "has_epochs": results.epochs is not None, "has_predictions": results.predictions is not None,
        "knobs": _knob_table(ok),
        "gates": gate_views(results.dirs),
        "split": split,
        "failed": failed,
        "dx": dx_table(ok, Path(source_root) if source_root else PROJECT_ROOT),
        "env": _environment(results),
        "notebook": trained.notebook_table(summary, conditions, verdict_text),
        "time_to_target": trained.time_to_target(ok, results.epochs, conditions, cond_codes, style),
        "tuning": trained.tuning_table(ok),
        "unmeasured": trained.unmeasured_lines(ok),
        "energy_notes": sorted({str(n) for n in ok["energy_note"].dropna()}) if "energy_note" in ok else [],
        "deploys": deploys.context,
    }
    add_deploy_evidence(context["dx"], results)  # the DX table's "Ecosystem & deployment" row, measured
    # Arms and history (analysis.arms, analysis.history): which versions the report compares; over
    # several sweeps of one grid, each arm's values in time order and the steps the paired test flags.
    context["versions_compared"] = armlib.versions_compared(ok)
    history = (historylib.analyse(results.history_cells, opts) if historylib.has_history(results.history_cells)
               else None)
    context["history"] = historylib.report_view(*history) if history is not None else None
    html = render_html(context)

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalysisError(f"{out}: cannot create the output directory ({exc})") from None
    targets = {"summary": out / "summary.parquet", "report": out / "report.html"}
    try:
        with atomic_path(targets["summary"]) as summary_tmp, atomic_path(targets["report"]) as report_tmp:
            pq.write_table(_summary_table(pd.concat([summary, deploys.summary], ignore_index=True)
                                          if len(deploys.summary) else summary), summary_tmp)
            report_tmp.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise AnalysisError(f"{out}: cannot write the report ({exc})") from None
    history_path = historylib.write(out, history)
    if history_path is not None:
        targets["history"] = history_path
    return targets
