"""History: the same grid swept at different times (commits, releases), compared step by step.

``python -m analysis dir1 dir2 … dirN`` over sweeps that repeat cells — the same arm (framework and
pins as asked), condition and seed — shows, per arm, condition and headline metric, the value of
each sweep with its interval, in time order (each directory's earliest cell start), and tests every
step (one sweep against the one before it) with the report's own procedure: the seeds both sweeps
ran, paired; new/old as a ratio on the log scale for time and memory, new − old in percentage points
for accuracy; one paired t per step; Holm over every step row of the history (so an A/A history of
any length raises a false flag in at most α of histories, ``benchmarks/bench_calibration.py``);
TOST for "equivalent". A step is flagged — ``regression`` or ``improvement`` — only when its
decision interval (at its Holm level) excludes "no change"; otherwise it is ``equivalent``,
``inconclusive`` or has no paired seeds. Each step says what changed between the two sweeps: the
versions of the arm's packages (``analysis.arms``) and the commit.

The headline metrics are the report's (``analysis.metrics.PRIMARY``): epoch time (from the
post-warm-up epochs of ``epochs.parquet`` where present, as in the report), batch-1 latency,
accuracy, peak memory (device, else host).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis import arms, stats
from analysis.metrics import CONDITION_COLUMNS, METRICS, PRIMARY, QUESTIONS
from analysis.options import AnalysisError, AnalysisOptions
from analysis.summary import conditions_table, epoch_replicates
from core.atomic import atomic_path

HISTORY_FILE = "history.parquet"
SERIES = "series"  # the arm as asked: framework name, plus its pins (runs.packages)
REGRESSION, IMPROVEMENT = "regression", "improvement"
HEADLINE_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for q in QUESTIONS for m in PRIMARY[q]))

#: history.parquet: column → (unit, description).
HISTORY_DOCS: dict[str, tuple[str, str]] = {
    "row_kind": ("none", "value (one sweep's value) | step (a sweep against the one before it)"),
    "series": ("none", "the arm as asked: framework name, with its package pins after '@' (grid.framework)"),
    "condition": ("none", "the condition as text (the columns that vary between conditions)"),
    "question": ("none", "headline question: Trains faster | Infers faster | More accurate | Leaner"),
    "metric": ("none", "runs.parquet column (epoch time: from the post-warm-up epochs where present)"),
    "unit": ("none", "unit of the row's values: s, ms, MiB, fraction; a step's estimate: × (ratio new/old) or pp"),
    "step": ("count", "the sweep's place in time (1 = earliest); a step row: the newer sweep"),
    "old_step": ("count", "step row: the older sweep it is compared with"),
    "results_dir": ("none", "the sweep's results directory (a step row: the newer one)"),
    "when": ("none", "the sweep's earliest cell start (UTC, ISO 8601)"),
    "arm": ("none", "the arm label in the report (analysis.arms; the newer sweep's for a step)"),
    "versions": ("none", "versions of the arm's packages in that sweep (a step: old → new where they changed)"),
    "git_sha": ("none", "commit of the sweep's cells (a step: old → new where it changed)"),
    "n": ("count", "seeds: of the sweep (value row) or paired between the two sweeps (step row)"),
    "old": ("per row: see unit", "step row: the older sweep's value over the paired seeds"),
    "new": ("per row: see unit", "value row: the sweep's value; step row: the newer sweep's over the paired seeds"),
    "estimate": ("per row: see unit", "value row: mean (geometric for time/memory); step row: new/old (×) or new − old (pp)"),
    "ci_low": ("per row: see unit", "lower end of the confidence interval (t over seeds; log scale for ratios)"),
    "ci_high": ("per row: see unit", "upper end of the confidence interval"),
    "p": ("probability", "step row: paired t-test of 'no change'"),
    "p_holm": ("probability", "step row: Holm-adjusted over every step row of the history"),
    "dec_low": ("per row: see unit", "step row: decision interval (at the row's Holm level), lower end"),
    "dec_high": ("per row: see unit", "step row: decision interval, upper end"),
    "verdict": ("none", "step row: regression | improvement (flagged) | equivalent | inconclusive | no paired seeds"),
    "flag": ("none", "step row: true when the paired test flags a change (regression or improvement)"),
    "margin_words": ("none", "step row, flagged: whether the change exceeds the equivalence margin"),
}


# ---- per-cell values, read once per directory (analysis.load) ----------------------------------------
def cell_values(runs: list[pd.DataFrame], epochs: list[pd.DataFrame | None]) -> pd.DataFrame | None:
    """Every ok cell of every directory (lists aligned with the directories, as ``analysis.load``
    reads them) with what the history needs: arm as asked, arm label, condition, seed, headline
    values (epoch time from the post-warm-up epochs), versions, commit, start time, directory."""
    frames = []
    for i, (r, e) in enumerate(zip(runs, epochs)):
        ok = r[r["status"] == "ok"].reset_index(drop=True)
        if not len(ok):
            continue
        name = (ok[arms.BASE_COLUMN] if arms.BASE_COLUMN in ok else ok["framework"]).astype(str)
        pins = ok["packages"] if "packages" in ok else pd.Series([None] * len(ok))
        frame = pd.DataFrame({
            "input": i, "results_dir": ok["results_dir"].astype(str) if "results_dir" in ok else str(i),
            SERIES: [n if not isinstance(p, str) or not p else f"{n}@{p}" for n, p in zip(name, pins)],
            "arm": ok["framework"].astype(str), "seed": ok["seed"].astype(np.int64),
            "start_time": pd.to_datetime(ok["start_time"], utc=True) if "start_time" in ok else pd.NaT,
            "git_sha": ok["git_sha"].astype("string") if "git_sha" in ok else pd.NA,
            "versions": arms.version_text(ok.assign(framework=name)),
        })
        for c in CONDITION_COLUMNS:
            frame[c] = ok[c].to_numpy() if c in ok else None
        for m in HEADLINE_METRICS:
            frame[m] = ok[m].to_numpy(dtype=float, na_value=np.nan) if m in ok else np.nan
        reps = epoch_replicates(e)
        if reps is not None:  # as the report does: the post-warm-up epochs' geometric mean
            cell = reps["value"].reindex(ok["cell_id"].to_numpy()).to_numpy(dtype=float)
            frame["median_epoch_seconds"] = np.where(np.isfinite(cell), cell, frame["median_epoch_seconds"])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def _order_steps(cells: pd.DataFrame) -> pd.DataFrame:
    """``step`` 1..N: directories in time order (earliest cell start; the order given breaks ties)."""
    first = cells.groupby("input")["start_time"].min() if "start_time" in cells else None
    inputs = sorted(cells["input"].unique(), key=lambda i: (
        pd.isna(first[i]) if first is not None else True,
        first[i] if first is not None and not pd.isna(first[i]) else pd.Timestamp(0, tz="UTC"), i))
    return cells.assign(step=cells["input"].map({v: k + 1 for k, v in enumerate(inputs)}))


def has_history(cells: pd.DataFrame | None) -> bool:
    """True when some (arm as asked, condition, seed) was run in two or more directories."""
    if cells is None or not len(cells) or cells["input"].nunique() < 2:
        return False
    key = [SERIES, *CONDITION_COLUMNS, "seed"]
    return bool((cells.astype({c: "string" for c in CONDITION_COLUMNS}).groupby(key, dropna=False)["input"]
                 .nunique() > 1).any())


# ---- the statistics -----------------------------------------------------------------------------------
def _margins(metric: str, options: AnalysisOptions) -> tuple[float, float]:
    info = METRICS[metric]
    m = options.log_ratio_margin if info.comparison == "ratio" else (
        options.margin_quality_pp if info.proportion else options.margin_quality_pp / 100.0)
    return -m, m


def analyse(cells: pd.DataFrame, options: AnalysisOptions, *, family_by: str | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(value rows, step rows) of a history. ``family_by``: a column of ``cells`` whose values are
    separate histories, each its own Holm family (the calibration analyses many at once)."""
    cells = _order_steps(cells.reset_index(drop=True))
    conditions, codes = conditions_table(cells)
    cells = cells.assign(condition_id=codes)
    info_rows: dict[int, dict[str, Any]] = {}
    for step, grp in cells.groupby("step"):
        info_rows[int(step)] = {"results_dir": str(grp["results_dir"].iloc[0]),
                                "when": _iso(grp["start_time"].min()) if "start_time" in grp else None}
    group_cols = [SERIES, "condition_id", "step"]
    values, steps = [], []
    taken: set[tuple] = set()
    for question in QUESTIONS:
        for metric in PRIMARY[question]:
            info = METRICS[metric]
            ratio = info.comparison == "ratio"
            v = cells[metric].to_numpy(dtype=float)
            ok = np.isfinite(v) & ((v > 0) if ratio else True)
            if not ok.any():
                continue
            sub = cells[ok].assign(_x=np.log(v[ok]) if ratio else v[ok])
            # repeated cells of one arm, condition and seed within a sweep count once (averaged)
            per_seed = sub.groupby([*group_cols, "seed"], sort=True)["_x"].mean().reset_index()
            for (series, cond), grp in per_seed.groupby([SERIES, "condition_id"], sort=True):
                if (question, series, cond) in taken:  # e.g. device memory measured: host RSS is not asked
                    continue
                taken.add((question, series, cond))
                wide = grp.pivot(index="seed", columns="step", values="_x")
                labels = sub[(sub[SERIES] == series) & (sub["condition_id"] == cond)]
                meta = labels.groupby("step").agg(arm=("arm", "first"), versions=("versions", _joined),
                                                  git_sha=("git_sha", _joined))
                base = {SERIES: series, "condition_id": cond, "question": question, "metric": metric}
                for step in wide.columns:
                    x = wide[step].dropna().to_numpy()
                    t = stats.paired_t(x[None, :], confidence=options.confidence)
                    est, low, high = float(t.mean[0]), float(t.low[0]), float(t.high[0])
                    if ratio:
                        est, low, high = np.exp(est), np.exp(low), np.exp(high)
                    values.append({**base, "row_kind": "value", "step": int(step), "n": len(x), "estimate": est,
                                   "new": est, "ci_low": low, "ci_high": high, "unit": info.unit or "fraction",
                                   **meta.loc[step].to_dict(), **info_rows[int(step)]})
                present = list(wide.columns)
                for old, new in zip(present, present[1:]):
                    both = wide[[old, new]].dropna()
                    d = (both[new] - both[old]).to_numpy() * (1.0 if ratio else 100.0 if info.proportion else 1.0)
                    steps.append({**base, "row_kind": "step", "step": int(new), "old_step": int(old), "_d": d,
                                  "_ratio": ratio, "_old": both[old].to_numpy(), "_new": both[new].to_numpy(),
                                  "arm": meta.loc[new, "arm"],
                                  "versions": _change(meta.loc[old, "versions"], meta.loc[new, "versions"]),
                                  "git_sha": _change(meta.loc[old, "git_sha"], meta.loc[new, "git_sha"]),
                                  "unit": "×" if ratio else ("pp" if info.proportion else info.unit),
                                  **info_rows[int(new)],
                                  "_family": cells.loc[cells["step"] == new, family_by].iloc[0] if family_by else 0})
    value_frame = _with_conditions(pd.DataFrame(values), conditions)
    step_frame = _with_conditions(_decide(steps, options), conditions)
    return value_frame, step_frame


def _decide(rows: list[dict[str, Any]], options: AnalysisOptions) -> pd.DataFrame:
    """The paired test of every step row, Holm over each family, verdicts from the decision intervals."""
    if not rows:
        return pd.DataFrame()
    n = np.array([len(r["_d"]) for r in rows], dtype=float)
    mean = np.array([r["_d"].mean() if len(r["_d"]) else np.nan for r in rows])
    sd = np.array([r["_d"].std(ddof=1) if len(r["_d"]) > 1 else np.nan for r in rows])
    sd = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mean)), 0.0, sd)  # rounding noise is no spread
    with np.errstate(invalid="ignore", divide="ignore"):
        se = sd / np.sqrt(n)
    p = stats.t_test_p(mean, se, n - 1)
    low, high = stats.t_interval(mean, se, n - 1, 1 - options.confidence)
    margins = np.array([_margins(r["metric"], options) for r in rows])
    p_tost = np.array([stats.tost_p_from(m, s, k - 1, lo, hi)[()] if k >= 2 else np.nan
                       for m, s, k, (lo, hi) in zip(mean, se, n, margins)])
    family = pd.factorize(pd.Series([r["_family"] for r in rows], dtype=object))[0]
    level, level_eq, p_holm = np.full(len(rows), np.nan), np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for f in np.unique(family):
        idx = np.flatnonzero(family == f)
        level[idx] = stats.holm_levels(p[idx], options.alpha)
        level_eq[idx] = stats.holm_levels(p_tost[idx], options.alpha)
        p_holm[idx] = stats.holm(p[idx])
    dec_low, dec_high = stats.t_interval(mean, se, n - 1, level)
    eq_low, eq_high = stats.t_interval(mean, se, n - 1, 2 * level_eq)
    higher = np.array([METRICS[r["metric"]].higher_is_better for r in rows])
    new_ahead = np.where(mean != 0, ((mean > 0) == higher).astype(float), np.nan)
    words, _, margin_words = stats.decide(np.full(len(rows), "new", dtype=object), np.full(len(rows), "old", dtype=object),
                                          a_ahead=new_ahead, dec_low=dec_low, dec_high=dec_high, eq_low=eq_low,
                                          eq_high=eq_high, margin_low=margins[:, 0], margin_high=margins[:, 1], n=n)
    verdict = np.where(words == "new better", IMPROVEMENT, np.where(words == "old better", REGRESSION, words))
    ratio = np.array([r["_ratio"] for r in rows])

    def shown(x: np.ndarray) -> np.ndarray:
        return np.where(ratio, np.exp(x), x)

    def centre(x: np.ndarray, is_ratio: bool) -> float:  # geometric mean for ratios (x is on the log scale)
        return float("nan") if not len(x) else float(np.exp(x.mean()) if is_ratio else x.mean())

    old = np.array([centre(r["_old"], r["_ratio"]) for r in rows])
    new = np.array([centre(r["_new"], r["_ratio"]) for r in rows])
    frame = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    return frame.assign(n=n.astype(int), old=old, new=new, estimate=shown(mean), ci_low=shown(low), ci_high=shown(high),
                        p=p, p_holm=p_holm, dec_low=shown(dec_low), dec_high=shown(dec_high), verdict=verdict,
                        flag=np.isin(verdict, (REGRESSION, IMPROVEMENT)), margin_words=margin_words)


def _joined(values: pd.Series) -> str:
    seen = [str(v) for v in dict.fromkeys(values.dropna()) if str(v)]
    return " / ".join(seen) if seen else "—"


def _change(old: str, new: str) -> str:
    return new if old == new else f"{old} → {new}"


def _iso(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).isoformat(timespec="seconds")


def _with_conditions(frame: pd.DataFrame, conditions: pd.DataFrame) -> pd.DataFrame:
    if not len(frame):
        return frame
    labels = conditions.set_index("condition_id")["condition"]
    series = sorted(frame[SERIES].unique(), key=arms.arm_sort_key)
    order = frame.assign(_s=frame[SERIES].map({v: i for i, v in enumerate(series)}),
                         _q=frame["question"].map({q: i for i, q in enumerate(QUESTIONS)}))
    order = order.sort_values(["_s", "condition_id", "_q", "step"], kind="stable")
    return order.drop(columns=["_s", "_q"]).assign(condition=order["condition_id"].map(labels)).reset_index(drop=True)


# ---- the file --------------------------------------------------------------------------------------------
def history_table(values: pd.DataFrame, steps: pd.DataFrame) -> pa.Table:
    """``history.parquet``: the value and step rows, every column described (``HISTORY_DOCS``)."""
    frame = pd.concat([values, steps], ignore_index=True)
    columns = [c for c in HISTORY_DOCS if c in frame]
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    fields = [f.with_metadata({"unit": HISTORY_DOCS[f.name][0], "description": HISTORY_DOCS[f.name][1]})
              for f in table.schema]
    return table.cast(pa.schema(fields))


# ---- what the report and the terminal show ------------------------------------------------------------
def _num(x: Any, unit: str) -> str:
    if x is None or not np.isfinite(float(x)):
        return "—"
    if unit == "fraction":
        return f"{100 * float(x):.2f} %"
    mag = abs(float(x))
    digits = 0 if mag >= 100 else 1 if mag >= 10 else 2 if mag >= 1 else 3
    return f"{float(x):.{digits}f} {unit}".strip()


def _interval(low: Any, high: Any, unit: str, n: Any) -> str:
    if n is not None and int(n) < 2:
        return "no interval (1 seed)" if int(n) == 1 else "no paired seeds"
    if not (np.isfinite(float(low)) and np.isfinite(float(high))):
        return "—"
    if unit == "×":
        return f"[{float(low):.3f}, {float(high):.3f}]"
    if unit == "pp":
        return f"[{float(low):+.2f}, {float(high):+.2f}]"
    return f"[{_num(low, unit)}, {_num(high, unit)}]"


def _estimate(x: Any, unit: str) -> str:
    if not np.isfinite(float(x)):
        return "—"
    return f"{float(x):.3f}×" if unit == "×" else f"{float(x):+.2f} pp" if unit == "pp" else f"{float(x):+.4g} {unit}"


VERDICT_CLASS = {REGRESSION: "v-bad", IMPROVEMENT: "v-a", stats.VERDICT_EQUIVALENT: "v-eq"}


def step_rows(steps: pd.DataFrame) -> list[dict[str, str]]:
    """The regression table: one row per step, arm, condition and headline metric."""
    out = []
    for r in steps.itertuples(index=False):
        value_unit = METRICS[r.metric].unit or "fraction"
        changed = [c for c in (r.versions if "→" in str(r.versions) else "",
                               f"commit {r.git_sha}" if "→" in str(r.git_sha) else "") if c]
        verdict = str(r.verdict) + (f" ({r.margin_words})" if r.flag and isinstance(r.margin_words, str)
                                    and r.margin_words else "")
        out.append({"series": r.series, "condition": str(r.condition), "question": r.question,
                    "metric": METRICS[r.metric].label.split(" (")[0], "steps": f"{int(r.old_step)} → {int(r.step)}",
                    "old_new": f"{_num(r.old, value_unit)} → {_num(r.new, value_unit)}",
                    "estimate": _estimate(r.estimate, r.unit), "ci": _interval(r.ci_low, r.ci_high, r.unit, r.n),
                    "n": str(int(r.n)), "verdict": verdict, "vclass": VERDICT_CLASS.get(r.verdict, "v-inc"),
                    "flag": bool(r.flag), "changed": "; ".join(changed) or "nothing recorded"})
    return out


def report_view(values: pd.DataFrame, steps: pd.DataFrame) -> dict[str, Any]:
    """The report's history section: the sweeps in time order, each arm's values per sweep with their
    intervals, and the regression table (flagged rows first)."""
    sweeps = (values[["step", "results_dir", "when"]].drop_duplicates("step").sort_values("step")
              .to_dict("records"))
    blocks = []
    for (series, cond), grp in values.groupby([SERIES, "condition_id"], sort=False):
        rows = []
        for (question, metric), g in grp.groupby(["question", "metric"], sort=False):
            unit = METRICS[metric].unit or "fraction"
            by_step = {int(r.step): f"{_num(r.estimate, unit)} {_interval(r.ci_low, r.ci_high, unit, r.n)}"
                       for r in g.itertuples(index=False)}
            rows.append({"question": question, "metric": METRICS[metric].label.split(" (")[0],
                         "cells": [by_step.get(int(s["step"]), "—") for s in sweeps]})
        versions = grp.drop_duplicates("step").set_index("step")["versions"].to_dict()
        blocks.append({"series": series, "condition": str(grp["condition"].iloc[0]), "rows": rows,
                       "versions": [versions.get(s["step"], "—") for s in sweeps]})
    table = step_rows(steps) if len(steps) else []
    table.sort(key=lambda r: not r["flag"])
    tested = int(np.isfinite(steps["p"].to_numpy(dtype=float)).sum()) if len(steps) else 0
    return {"sweeps": sweeps, "blocks": blocks, "steps": table, "flagged": sum(r["flag"] for r in table),
            "tested": tested}


def write(out_dir: Path, history: tuple[pd.DataFrame, pd.DataFrame] | None) -> Path | None:
    """``history.parquet`` in ``out_dir`` (atomically); without a history, an old one is removed so that
    no file describes sweeps this analysis did not read. Returns its path, or None."""
    import pyarrow.parquet as pq

    path = Path(out_dir) / HISTORY_FILE
    if history is None:
        path.unlink(missing_ok=True)
        return None
    try:
        with atomic_path(path) as tmp:
            pq.write_table(history_table(*history), tmp)
    except OSError as exc:
        raise AnalysisError(f"{path}: cannot write the history ({exc})") from None
    return path
