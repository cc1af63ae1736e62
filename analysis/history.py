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
    cells = cells.assign(condition_id=codes, _family=cells[family_by].astype(str) if family_by else "")
    keys = [SERIES, "condition_id"]
    sweeps = cells.groupby("step").agg(results_dir=("results_dir", "first"), when=("start_time", "min"))
    sweeps["when"] = sweeps["when"].map(_iso)
    meta = cells.groupby([*keys, "step"]).agg(arm=("arm", "first"), versions=("versions", _joined),
                                              git_sha=("git_sha", _joined), _family=("_family", "first"))
    values, steps = [], []
    for question in QUESTIONS:
        for metric in PRIMARY[question]:
            info = METRICS[metric]
            ratio = info.comparison == "ratio"
            x = cells[metric].to_numpy(dtype=float)
            ok = np.isfinite(x) & ((x > 0) if ratio else True)
            if not ok.any():
                continue
            sub = cells.loc[ok, [*keys, "step", "seed"]].assign(_x=np.log(x[ok]) if ratio else x[ok])
            # repeated cells of one arm, condition and seed within a sweep count once (averaged)
            wide = sub.groupby([*keys, "seed", "step"])["_x"].mean().unstack("step")
            base = {"question": question, "metric": metric}
            values.append(_value_rows(wide, ratio, options).assign(**base, unit=info.unit or "fraction"))
            scale = 1.0 if ratio else (100.0 if info.proportion else 1.0)
            steps.append(_step_rows(wide, ratio, scale).assign(
                **base, unit="×" if ratio else ("pp" if info.proportion else info.unit)))
    if not values:
        return pd.DataFrame(), pd.DataFrame()
    value_frame = _primary_only(pd.concat(values, ignore_index=True))
    value_frame = value_frame.join(meta[["arm", "versions", "git_sha"]], on=[*keys, "step"]).join(sweeps, on="step")
    step_frame = _primary_only(pd.concat(steps, ignore_index=True))
    if len(step_frame):
        old_meta = meta.rename(columns=lambda c: f"_old_{c}")
        step_frame = (step_frame.join(meta, on=[*keys, "step"]).join(old_meta, on=[*keys, "old_step"])
                      .join(sweeps, on="step"))
        step_frame["versions"] = [_change(o, n) for o, n in zip(step_frame["_old_versions"], step_frame["versions"])]
        step_frame["git_sha"] = [_change(o, n) for o, n in zip(step_frame["_old_git_sha"], step_frame["git_sha"])]
        step_frame = _decide(step_frame, options).drop(columns=[c for c in step_frame if c.startswith("_old_")])
    return _with_conditions(value_frame, conditions), _with_conditions(step_frame, conditions)


def _value_rows(wide: pd.DataFrame, ratio: bool, options: AnalysisOptions) -> pd.DataFrame:
    """Each sweep's value per (arm, condition): mean over seeds with a t-interval (log scale for ratios)."""
    long = wide.stack().rename("_x").reset_index()
    agg = long.groupby([SERIES, "condition_id", "step"])["_x"].agg(["count", "mean", "std"]).reset_index()
    n = agg["count"].to_numpy(dtype=float)
    se = agg["std"].to_numpy(dtype=float) / np.sqrt(n)
    low, high = stats.t_interval(agg["mean"], se, n - 1, 1 - options.confidence)
    f = np.exp if ratio else (lambda v: v)
    est = f(agg["mean"].to_numpy(dtype=float))
    return agg[[SERIES, "condition_id", "step"]].assign(row_kind="value", n=n.astype(int), estimate=est, new=est,
                                                       ci_low=f(low), ci_high=f(high))


def _step_rows(wide: pd.DataFrame, ratio: bool, scale: float) -> pd.DataFrame:
    """Every step of every (arm, condition): the sweep against the previous sweep that arm ran, on the
    seeds both have — count, mean and sd of the paired differences (analysis scale), both sides' values."""
    present = wide.notna().groupby(level=[0, 1]).any()
    out = []
    for signature, groups in present.groupby(list(present.columns), sort=False):
        signature = signature if isinstance(signature, tuple) else (signature,)
        ran = [s for s, has in zip(present.columns, signature) if has]
        rows = wide[wide.index.droplevel("seed").isin(groups.index)]
        for old, new in zip(ran, ran[1:]):
            both = rows[[old, new]].dropna()
            d = (both[new] - both[old]) * scale
            g = d.groupby(level=[0, 1])
            agg = pd.DataFrame({"_n": g.count(), "_mean": g.mean(), "_sd": g.std(ddof=1),
                                "_old": both[old].groupby(level=[0, 1]).mean(),
                                "_new": both[new].groupby(level=[0, 1]).mean()})
            agg = agg.reindex(groups.index)  # an arm whose two sweeps share no seed: n = 0
            agg["_n"] = agg["_n"].fillna(0)
            out.append(agg.reset_index().assign(row_kind="step", step=int(new), old_step=int(old)))
    if not out:
        return pd.DataFrame(columns=[SERIES, "condition_id", "step", "old_step"])
    frame = pd.concat(out, ignore_index=True)
    if ratio:
        frame["_old"], frame["_new"] = np.exp(frame["_old"]), np.exp(frame["_new"])
    return frame.assign(_ratio=ratio)


def _primary_only(frame: pd.DataFrame) -> pd.DataFrame:
    """One metric per question, arm and condition: the first of ``PRIMARY[question]`` that has rows
    there (device memory where measured, else host RSS) — chosen by what was measured."""
    if not len(frame):
        return frame
    rank = frame["metric"].map({m: i for q in QUESTIONS for i, m in enumerate(PRIMARY[q])})
    first = rank.groupby([frame["question"], frame[SERIES], frame["condition_id"]]).transform("min")
    return frame[rank == first].reset_index(drop=True)


def _decide(frame: pd.DataFrame, options: AnalysisOptions) -> pd.DataFrame:
    """The paired test of every step row, Holm over each family, verdicts from the decision intervals."""
    n = frame["_n"].to_numpy(dtype=float)
    mean = frame["_mean"].to_numpy(dtype=float)
    sd = frame["_sd"].to_numpy(dtype=float)
    sd = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mean)), 0.0, sd)  # rounding noise is no spread
    with np.errstate(invalid="ignore", divide="ignore"):
        se = sd / np.sqrt(n)
    p = stats.t_test_p(mean, se, n - 1)
    low, high = stats.t_interval(mean, se, n - 1, 1 - options.confidence)
    margins = np.array([_margins(m, options) for m in frame["metric"]])
    p_tost = np.full(len(frame), np.nan)
    for lo, hi in set(map(tuple, margins.tolist())):  # margins differ per metric
        idx = (margins[:, 0] == lo) & (margins[:, 1] == hi)
        p_tost[idx] = stats.tost_p_from(mean[idx], se[idx], n[idx] - 1, lo, hi)
    family = pd.factorize(frame["_family"].astype(str))[0]
    level, level_eq, p_holm = (np.full(len(frame), np.nan) for _ in range(3))
    for f in np.unique(family):
        idx = np.flatnonzero(family == f)
        level[idx] = stats.holm_levels(p[idx], options.alpha)
        level_eq[idx] = stats.holm_levels(p_tost[idx], options.alpha)
        p_holm[idx] = stats.holm(p[idx])
    dec_low, dec_high = stats.t_interval(mean, se, n - 1, level)
    eq_low, eq_high = stats.t_interval(mean, se, n - 1, 2 * level_eq)
    higher = frame["metric"].map(lambda m: METRICS[m].higher_is_better).to_numpy(dtype=bool)
    new_ahead = np.where(mean != 0, ((mean > 0) == higher).astype(float), np.nan)
    size = len(frame)
    words, _, margin_words = stats.decide(np.full(size, "new", dtype=object), np.full(size, "old", dtype=object),
                                          a_ahead=new_ahead, dec_low=dec_low, dec_high=dec_high, eq_low=eq_low,
                                          eq_high=eq_high, margin_low=margins[:, 0], margin_high=margins[:, 1], n=n)
    verdict = np.where(words == "new better", IMPROVEMENT, np.where(words == "old better", REGRESSION, words))
    ratio = frame["_ratio"].to_numpy(dtype=bool)

    def shown(v: np.ndarray) -> np.ndarray:
        return np.where(ratio, np.exp(v), v)

    out = frame.assign(n=n.astype(int), old=frame["_old"], new=frame["_new"], estimate=shown(mean), ci_low=shown(low),
                       ci_high=shown(high), p=p, p_holm=p_holm, dec_low=shown(dec_low), dec_high=shown(dec_high),
                       verdict=verdict, flag=np.isin(verdict, (REGRESSION, IMPROVEMENT)), margin_words=margin_words)
    return out.drop(columns=[c for c in ("_n", "_mean", "_sd", "_old", "_new", "_ratio") if c in out])


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
    frame = frame.drop(columns=[c for c in ("_family",) if c in frame])
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
