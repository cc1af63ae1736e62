"""The report's "Deploys" section: ``deployments.parquet`` through the same paired engine as the runs.

Each ``ok`` deployment row is joined to its cell's ``runs`` row (its condition), then summarised with
``analysis.summary.summarize`` — the same per-framework estimates, paired intervals and p-values as every
other metric — once per *deployment*: every (format, runtime) that rows exist for (e.g. ``onnx · onnxruntime``:
keras vs pytorch in one runtime), and ``native``: each framework in its own serving format (SavedModel vs
ExportedProgram). Deployment metrics are secondary (descriptive) rows: never part of the headline family.
The rows go into ``summary.parquet`` with their ``deployment`` named; condition ids are the report's.

The common-runtime comparison: per condition and pair, the in-framework "Infers faster" row (batch-1
latency p50, headline) next to the same pair served from ONNX Runtime, with one sentence on what the
difference between the two means.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.load import Results
from analysis.metrics import CONDITION_COLUMNS, DEPLOY_METRICS, METRICS, framework_sort_key
from analysis.options import AnalysisOptions
from analysis.summary import WARNING_PREFIX, summarize
from core.registry import DEPLOY_FORMATS, DX_ASPECTS

#: The ``deployment`` of the rows that pair each framework in its own serving format.
NATIVE = "native"
#: The common runtime: both frameworks' ONNX graphs in ONNX Runtime.
COMMON = "onnx · onnxruntime"
#: Columns of the per-framework table of one deployment, in order.
TABLE_METRICS = ("served_latency_p50_ms", "served_throughput_images_per_second", "load_seconds",
                 "runtime_import_seconds", "first_call_ms", "export_seconds", "artifact_mib", "serving_peak_rss_mib",
                 "argmax_agreement", "max_abs_prob_diff")
#: Pair rows shown per deployment (the rest are in summary.parquet).
PAIR_METRICS = ("served_latency_p50_ms", "served_throughput_images_per_second", "load_seconds", "artifact_mib",
                "serving_peak_rss_mib", "argmax_agreement", "max_abs_prob_diff")


@dataclass
class DeploySection:
    summary: pd.DataFrame  # summary rows (``SUMMARY_COLUMNS``, ``deployment`` named) to append to summary.parquet
    context: dict[str, Any] = field(default_factory=dict)  # what templates/_deploys.html.j2 reads


def deployment_name(fmt: str, runtime: str) -> str:
    return f"{fmt} · {runtime}"


def _num(x: Any, digits: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(x):
        return "—"
    if x == 0:
        return "0"
    if abs(x) < 1e-3:
        return f"{x:.1e}"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))}f}"


def _value(metric: str, x: Any) -> str:
    info = METRICS[metric]
    if info.proportion:
        return "—" if _num(x) == "—" else f"{100 * float(x):.2f} %"
    return f"{_num(x)} {info.unit}".strip() if _num(x) != "—" else "—"


def _interval(metric: str, low: Any, high: Any, n: Any, pair: bool) -> str:
    if pd.isna(n) or int(n) < 2:
        return "no interval (1 seed)" if not pd.isna(n) and int(n) == 1 else "—"
    info = METRICS[metric]
    if pair and info.comparison == "ratio":
        return f"[{float(low):.3f}, {float(high):.3f}]"
    if pair:
        return f"[{float(low):+.3g}, {float(high):+.3g}]"
    if info.proportion:
        return f"[{100 * float(low):.2f}, {100 * float(high):.2f}]"
    return f"[{_num(low)}, {_num(high)}]"


def _estimate(metric: str, x: Any, pair: bool) -> str:
    if not pair:
        return _value(metric, x)
    info = METRICS[metric]
    if pd.isna(x):
        return "—"
    if info.comparison == "ratio":
        return f"{float(x):.3f}×"
    return f"{float(x):+.2f} pp" if info.proportion else f"{float(x):+.3g}"


def _condition_key(frame: pd.DataFrame) -> pd.Series:
    return frame[list(CONDITION_COLUMNS)].astype("string").fillna("∅").agg("\x1f".join, axis=1)


def deployment_frame(results: Results) -> pd.DataFrame:
    """The ``ok`` deployment rows of ``ok`` cells with their cell's condition columns (and accelerator type)."""
    dep = results.deployments
    if dep is None or not len(dep):
        return pd.DataFrame()
    ok_runs = results.ok_runs
    cols = ["cell_id", *CONDITION_COLUMNS] + (["accelerator_type"] if "accelerator_type" in ok_runs else [])
    ok = dep[dep["status"] == "ok"].drop(columns=[c for c in cols if c != "cell_id" and c in dep], errors="ignore")
    return ok.merge(ok_runs[cols], on="cell_id", how="inner").reset_index(drop=True)


def summarize_deployments(results: Results, conditions: pd.DataFrame, options: AnalysisOptions
                          ) -> tuple[pd.DataFrame, list[str]]:
    """Summary rows per deployment (every (format, runtime), and ``native``), condition ids of ``conditions``
    (the report's), with a ``deployment`` column; and the pairing notes (warnings turned into notes)."""
    frame = deployment_frame(results)
    if not len(frame):
        return pd.DataFrame(), []
    # Order: the common runtime, each framework in its own format, then every format on its own.
    order = {name: i for i, name in enumerate(DEPLOY_FORMATS)}
    groups = [(deployment_name(fmt, runtime), grp) for (fmt, runtime), grp in frame.groupby(["format", "runtime"])]
    native = frame[frame["role"] == "native"]
    if native["framework"].nunique() > 1:
        groups.append((NATIVE, native))
    groups.sort(key=lambda g: (g[0] != COMMON, g[0] != NATIVE, order.get(g[0].split(" · ")[0], 99)))
    main_ids = dict(zip(_condition_key(conditions), conditions["condition_id"]))
    main_labels = dict(zip(conditions["condition_id"], conditions["condition"]))
    parts, notes = [], []
    for name, grp in groups:
        summary, local, group_notes = summarize(grp.reset_index(drop=True), options, None, metrics=list(DEPLOY_METRICS))
        if not len(summary):
            continue
        local_to_main = dict(zip(local["condition_id"], _condition_key(local).map(main_ids)))
        main = summary["condition_id"].map(local_to_main)
        known = main.notna()
        summary.loc[known, "condition"] = main[known].map(main_labels)
        summary.loc[known, "condition_id"] = main[known]
        summary["deployment"] = name
        parts.append(summary)
        notes += [f"{name}: {n[len(WARNING_PREFIX):] if n.startswith(WARNING_PREFIX) else n}" for n in group_notes]
    if not parts:
        return pd.DataFrame(), notes
    out = pd.concat(parts, ignore_index=True)
    out["condition_id"] = out["condition_id"].astype("int64")
    return out, notes


def _matrix(dep: pd.DataFrame, ok_cells: set[str]) -> dict[str, Any]:
    """Framework × format: what happened to every export (ok with its equality numbers, failed, skipped)."""
    dep = dep[dep["cell_id"].isin(ok_cells)]
    frameworks = sorted(dep["framework"].astype(str).unique(), key=framework_sort_key)
    order = list(DEPLOY_FORMATS)
    formats = sorted(dep["format"].astype(str).unique(), key=lambda f: order.index(f) if f in order else 99)
    rows = []
    for fw in frameworks:
        cells = []
        for fmt in formats:
            grp = dep[(dep["framework"] == fw) & (dep["format"] == fmt)]
            cells.append(_matrix_cell(grp))
        rows.append({"framework": fw, "cells": cells})
    heads = [{"format": f, "label": DEPLOY_FORMATS[f].label if f in DEPLOY_FORMATS else f,
              "runtime": DEPLOY_FORMATS[f].runtime_label if f in DEPLOY_FORMATS else "?"} for f in formats]
    return {"formats": heads, "rows": rows}


def _matrix_cell(grp: pd.DataFrame) -> dict[str, str]:
    if not len(grp):
        return {"status": "none", "text": "—", "detail": "not listed by this framework's adapter"}
    counts = grp["status"].value_counts().to_dict()
    n = len(grp)
    ok = grp[grp["status"] == "ok"]
    if counts.get("skipped", 0) == n:
        return {"status": "skipped", "text": "skipped", "detail": str(grp["error"].dropna().iloc[0])}
    parts, detail = [], ""
    if len(ok):
        parts.append(f"ok {len(ok)}/{n}")
        worst = float(ok["argmax_agreement"].min())
        detail = (f"max |Δ prob| ≤ {_num(ok['max_abs_prob_diff'].max())}, same class on "
                  + ("every test sample" if worst >= 1 else f"≥ {100 * worst:.2f} % of the test samples"))
    failed = grp[grp["status"] == "failed"]
    if len(failed):
        parts.append(f"failed {len(failed)}/{n}")
        detail = (detail + "; " if detail else "") + str(failed["error"].dropna().iloc[0])
    status = "ok" if len(failed) == 0 else ("failed" if len(ok) == 0 else "mixed")
    return {"status": status, "text": ", ".join(parts), "detail": detail}


def _framework_table(rows: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    fws = sorted(rows["framework"].dropna().unique(), key=framework_sort_key)
    for cond_id, cond_rows in rows.groupby("condition_id", sort=True):
        for fw in fws:
            r = cond_rows[cond_rows["framework"] == fw]
            if not len(r):
                continue
            cells, n = [], None
            for metric in TABLE_METRICS:
                m = r[r["metric"] == metric]
                if not len(m):
                    cells.append({"value": "—", "ci": ""})
                    continue
                m = m.iloc[0]
                n = m["n"]
                cells.append({"value": _value(metric, m["estimate"]), "ci": _interval(metric, m["ci_low"], m["ci_high"],
                                                                                      m["n"], False)})
            out.append({"condition": cond_rows["condition"].iloc[0], "framework": fw, "n": "" if n is None else int(n),
                        "cells": cells})
    return out


def _pair_table(rows: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for metric in PAIR_METRICS:
        for r in rows[rows["metric"] == metric].itertuples(index=False):
            out.append({"condition": r.condition, "metric": METRICS[metric].label,
                        "pair": f"{r.framework_a} vs {r.framework_b}",
                        "estimate": _estimate(metric, r.estimate, True),
                        "ci": _interval(metric, r.ci_low, r.ci_high, r.n, True), "n": int(r.n) if not pd.isna(r.n) else 0,
                        "phrase": r.phrase or "", "p": "—" if pd.isna(r.p) else ("< 0.001" if r.p < 0.001 else f"{r.p:.3f}"),
                        "note": r.note or ""})
    return out


def _excludes_one(low: Any, high: Any) -> bool | None:
    if pd.isna(low) or pd.isna(high):
        return None
    return bool(low > 1 or high < 1)


def meaning(in_framework: pd.Series, served: pd.Series) -> str:
    """One sentence on what the in-framework latency ratio and the ONNX Runtime one, side by side, mean."""
    a, b = in_framework["framework_a"], in_framework["framework_b"]
    if int(served["n"]) < 2 or int(in_framework["n"]) < 2:
        return ("One paired seed: no interval yet, so what separates the two rows cannot be told apart from noise; "
                "run more seeds (the ONNX rows use the same seeds as the in-framework ones).")
    inside, outside = _excludes_one(in_framework["ci_low"], in_framework["ci_high"]), _excludes_one(
        served["ci_low"], served["ci_high"])
    same_side = (in_framework["estimate"] > 1) == (served["estimate"] > 1)
    if inside and not outside:
        return (f"In-framework {in_framework['phrase']}, but both exported graphs serve equally fast from ONNX Runtime "
                f"(the interval includes 1×): the in-framework difference is {a}'s and {b}'s own runtime and Python "
                f"overhead per call, not the model.")
    if inside and outside and same_side:
        return (f"The difference persists when both graphs run in ONNX Runtime ({served['phrase']}): part of it is "
                f"in the exported graphs themselves (their operators and layouts), not only in the frameworks' runtimes.")
    if inside and outside:
        return (f"In ONNX Runtime the order reverses ({served['phrase']}): in-framework, the frameworks' own runtime "
                f"overhead outweighs a graph that is itself slower.")
    if outside:
        return (f"In-framework the two cannot be told apart, but in ONNX Runtime {served['phrase']}: the exported "
                f"graphs differ, and the frameworks' runtimes hide it.")
    return ("Neither interval excludes 1×: on these seeds the models serve equally fast in-framework and in ONNX "
            "Runtime alike; more seeds would narrow both.")


def _common_runtime(main_summary: pd.DataFrame, deploy_rows: pd.DataFrame) -> list[dict[str, Any]]:
    pairs = main_summary[(main_summary["row_kind"] == "pair") & (main_summary["metric"] == "latency_p50_ms")]
    served = deploy_rows[(deploy_rows["row_kind"] == "pair") & (deploy_rows["deployment"] == COMMON)
                         & (deploy_rows["metric"] == "served_latency_p50_ms")]
    out = []
    for r in pairs.itertuples(index=False):
        s = served[(served["condition_id"] == r.condition_id) & (served["framework_a"] == r.framework_a)
                   & (served["framework_b"] == r.framework_b)]
        if not len(s):
            continue
        s = s.iloc[0]
        inside = pd.Series(r._asdict())
        out.append({"condition": r.condition, "pair": f"{r.framework_a} vs {r.framework_b}",
                    "in_framework": _estimate("latency_p50_ms", r.estimate, True),
                    "in_framework_ci": _interval("latency_p50_ms", r.ci_low, r.ci_high, r.n, True),
                    "in_framework_phrase": r.phrase or "", "verdict": r.verdict or "",
                    "served": _estimate("served_latency_p50_ms", s["estimate"], True),
                    "served_ci": _interval("served_latency_p50_ms", s["ci_low"], s["ci_high"], s["n"], True),
                    "served_phrase": s["phrase"] or "", "n": int(s["n"]), "meaning": meaning(inside, s)})
    return out


def _exporters(dep: pd.DataFrame) -> list[dict[str, str]]:
    ok = dep[dep["exporter"].notna()]
    rows = ok.drop_duplicates(["framework", "format", "exporter"])
    return [{"framework": r.framework, "format": r.format, "exporter": r.exporter}
            for r in sorted(rows.itertuples(index=False), key=lambda r: (framework_sort_key(r.framework), r.format))]


def _threads(dep: pd.DataFrame) -> str:
    threads = sorted({int(t) for t in dep["runtime_threads"].dropna()}) if "runtime_threads" in dep else []
    return ", ".join(str(t) for t in threads) or "the runtime's default"


def _imports(dep: pd.DataFrame) -> list[dict[str, str]]:
    out = {}
    for r in dep[dep["serving_imports"].notna()].itertuples(index=False):
        try:
            mods = json.loads(r.serving_imports)
        except (TypeError, json.JSONDecodeError):
            continue
        out.setdefault((r.runtime, r.framework), set()).add(", ".join(mods) or "(none)")
    return [{"runtime": rt, "framework": fw, "modules": " | ".join(sorted(v))}
            for (rt, fw), v in sorted(out.items(), key=lambda kv: (kv[0][0], framework_sort_key(kv[0][1])))]


def deploy_section(results: Results, main_summary: pd.DataFrame, conditions: pd.DataFrame,
                   options: AnalysisOptions) -> DeploySection:
    """The summary rows and the template context of the Deploys section (``available`` False: the reason)."""
    dep = results.deployments
    if dep is None or not len(dep):
        return DeploySection(pd.DataFrame(), {
            "available": False, "common": [], "why": "No deployments.parquet rows: these sweeps ran with train.deploy.enabled=false "
                                       "(deploy=off) or before deployments were measured. deploy=onnx measures ONNX in "
                                       "ONNX Runtime; deploy=full every format."})
    rows, notes = summarize_deployments(results, conditions, options)
    ok_cells = set(results.ok_runs["cell_id"])
    groups = []
    if len(rows):
        names = list(dict.fromkeys(rows["deployment"]))
        for name in names:
            g = rows[rows["deployment"] == name]
            fmt = name.split(" · ")[0]
            info = DEPLOY_FORMATS.get(fmt)
            if NATIVE in names and info is not None and info.role == "native" and g["framework"].nunique() == 1:
                continue  # its one framework's rows are the "native" table's (summary.parquet keeps both)
            title = ("Each framework in its own serving format" if name == NATIVE else
                     f"{info.label} served by {info.runtime_label}" if info else name)
            groups.append({"name": name, "title": title,
                           "frameworks": _framework_table(g[g["row_kind"] == "framework"]),
                           "pairs": _pair_table(g[g["row_kind"] == "pair"])})
    context = {"available": True, "matrix": _matrix(dep, ok_cells), "groups": groups,
               "common": _common_runtime(main_summary, rows) if len(rows) else [],
               "has_common": bool(len(rows)) and (rows["deployment"] == COMMON).any(),
               "table_heads": [METRICS[m].label.split(" (")[0] for m in TABLE_METRICS],
               "exporters": _exporters(dep), "threads": _threads(dep), "imports": _imports(dep), "notes": notes,
               "limits": _limits(dep)}
    return DeploySection(rows, context)


def add_deploy_evidence(dx: dict[str, Any], results: Results) -> None:
    """The developer-experience table's "Ecosystem & deployment" row gets what was measured: per format, how many
    cells exported and proved equal, and the median served latency (or why the format was skipped)."""
    dep = results.deployments
    if dep is None or not len(dep):
        return
    dep = dep[dep["cell_id"].isin(set(results.ok_runs["cell_id"]))]
    order = list(DEPLOY_FORMATS)
    for row in dx.get("rows", []):
        if row["aspect"] != DX_ASPECTS["ecosystem"]:
            continue
        for fw, cell in zip(dx["frameworks"], row["cells"]):
            mine = dep[dep["framework"] == fw["name"]]
            parts = []
            for fmt in sorted(mine["format"].unique(), key=lambda f: order.index(f) if f in order else 99):
                grp = mine[mine["format"] == fmt]
                ok = grp[grp["status"] == "ok"]
                if len(ok):
                    parts.append(f"{fmt} ok {len(ok)}/{len(grp)} (served p50 {_num(ok['served_latency_p50_ms'].median())} ms)")
                elif (grp["status"] == "skipped").all():
                    parts.append(f"{fmt} skipped")
                else:
                    parts.append(f"{fmt} failed {len(grp)}/{len(grp)}")
            if parts:
                cell["measured"] += "; deployed: " + ", ".join(parts)


def _limits(dep: pd.DataFrame) -> str:
    diff = sorted({float(x) for x in dep.get("max_abs_prob_diff_limit", pd.Series(dtype=float)).dropna()})
    agree = sorted({float(x) for x in dep.get("min_argmax_agreement_limit", pd.Series(dtype=float)).dropna()})
    if not diff or not agree:
        return "max |Δ probability| ≤ 1e-4 and the same class on 100 % of the test samples"
    return (f"max |Δ probability| ≤ {', '.join(f'{d:g}' for d in diff)} and the same class on "
            f"{', '.join(f'{100 * a:g}' for a in agree)} % of the test samples")

