"""From result rows to the summary table: one row per (metric, condition, framework or pair).

Grouping is done once (integer codes for conditions, frameworks and seeds); every group of the same
size is then analysed as one row of a 2-D array, so a million result rows cost a handful of
vectorised calls rather than a Python loop per group.

Row kinds in the summary:
- ``framework``: one framework in one condition — mean (estimate), bootstrap CI, median, std, IQR, n.
- ``pair``: frameworks A vs B in one condition, paired by seed — difference A − B (pp for
  proportions) or ratio A/B (geometric mean), bootstrap CI, Wilcoxon p, Holm p across all pair rows
  of the report, TOST p against the margin, P(A beats B), verdict and a seeds-needed hint.
- ``mcnemar``: A vs B on one seed's shared test set (exact McNemar); Holm within this family.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterator

import numpy as np
import pandas as pd

from analysis import stats
from analysis.metrics import CONDITION_COLUMNS, CONDITION_LABELS, METRICS, MetricInfo, framework_sort_key
from analysis.options import AnalysisOptions

SUMMARY_COLUMNS: tuple[str, ...] = (
    "row_kind", "metric", "metric_label", "metric_kind", "comparison", "unit", "higher_is_better",
    "condition_id", "condition", *CONDITION_COLUMNS,
    "framework", "framework_a", "framework_b", "seed",
    "estimate", "ci_low", "ci_high", "n", "mean", "median", "std", "iqr",
    "p", "p_holm", "p_tost", "margin_low", "margin_high", "prob_a_better",
    "verdict", "winner", "phrase", "seeds_needed", "note", "confidence", "n_resamples",
)

NO_INTERVAL_NOTE = "no interval (1 seed)"


def conditions_table(ok_runs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(one row per distinct condition with ``condition_id`` and a readable ``condition`` label,
    the condition id of every run row)."""
    cond = ok_runs.loc[:, list(CONDITION_COLUMNS)]
    codes = cond.groupby(list(CONDITION_COLUMNS), dropna=False, sort=True).ngroup().to_numpy()
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    table = cond.iloc[first].reset_index(drop=True)
    table.insert(0, "condition_id", np.arange(len(table)))
    table["condition"] = condition_labels(table)
    return table, codes


def _fmt_value(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    if column == "batch_size":
        return f"batch {int(value)}"
    if column == "epochs":
        return f"{int(value)} epochs"
    if column == "compile_policy":
        return f"compile {value}"
    if column == "parity_mode":
        return f"parity {value}"
    return str(value)


def condition_labels(table: pd.DataFrame) -> list[str]:
    """Labels naming only the columns that vary between conditions ("all runs" when none do)."""
    varying = [c for c in CONDITION_COLUMNS if c in table and table[c].astype("string").fillna("∅").nunique() > 1]
    if "device_name" in varying and "device_kind" in varying:
        varying.remove("device_kind")  # the name says it
    labels = []
    for _, row in table.iterrows():
        parts = [_fmt_value(c, row[c]) for c in varying]
        labels.append(" · ".join(parts) if parts else "all runs")
    return labels


def constant_conditions(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, value) of the condition columns that are the same everywhere — said once in the report."""
    out = []
    for c in CONDITION_COLUMNS:
        values = table[c].astype("string").fillna("—").unique()
        if len(values) == 1:
            out.append((CONDITION_LABELS[c], str(values[0])))
    return out


def _buckets(group_sorted: np.ndarray, values: np.ndarray, *others: np.ndarray
             ) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]]:
    """Ragged groups → dense blocks. ``group_sorted`` must be sorted; yields, per distinct group size n,
    (group ids, values as (groups × n), each of ``others`` reshaped the same way)."""
    if group_sorted.size == 0:
        return
    ids, start, counts = np.unique(group_sorted, return_index=True, return_counts=True)
    per_row = np.repeat(counts, counts)
    for n in np.unique(counts):
        rows = np.flatnonzero(per_row == n)
        yield ids[counts == n], values[rows].reshape(-1, n), tuple(o[rows].reshape(-1, n) for o in others)


def _margins(info: MetricInfo, options: AnalysisOptions) -> tuple[float, float]:
    """Equivalence margins on the analysis scale (pp, raw units, or log ratio)."""
    if info.comparison == "ratio":
        m = options.log_ratio_margin
    elif info.proportion:
        m = options.margin_quality_pp
    else:
        m = options.margin_quality_pp / 100.0  # log loss: ±0.01 nats at the default 1 pp
    return -m, m


def _framework_rows(info: MetricInfo, values: np.ndarray, groups: np.ndarray, group_cond: np.ndarray,
                    group_fw: np.ndarray, frameworks: list[str], options: AnalysisOptions) -> list[pd.DataFrame]:
    keep = np.isfinite(values)
    gs, vs = groups[keep], values[keep]
    order = np.argsort(gs, kind="stable")
    out = []
    for ids, block, _ in _buckets(gs[order], vs[order]):
        d = stats.describe(block)
        low, high = stats.bootstrap_mean_ci(block, confidence=options.confidence, n_resamples=options.n_resamples,
                                            random_state=options.random_state, method=options.bootstrap_method)
        n = block.shape[1]
        out.append(pd.DataFrame({
            "row_kind": "framework", "metric": info.name, "comparison": "value", "unit": info.unit,
            "condition_id": group_cond[ids], "framework": np.asarray(frameworks, dtype=object)[group_fw[ids]],
            "estimate": d.mean, "ci_low": low, "ci_high": high, "n": n, "mean": d.mean, "median": d.median,
            "std": d.std, "iqr": d.iqr, "note": NO_INTERVAL_NOTE if n == 1 else "",
        }))
    return out


def _pair_rows(info: MetricInfo, a_name: str, b_name: str, a: np.ndarray, b: np.ndarray, pair_cond: np.ndarray,
               options: AnalysisOptions) -> list[pd.DataFrame]:
    valid = np.isfinite(a) & np.isfinite(b)
    if info.comparison == "ratio":
        valid &= (a > 0) & (b > 0)  # a log ratio needs positive values (e.g. memory 0 = not measured)
    if not valid.any():
        return []
    a, b, cond = a[valid], b[valid], pair_cond[valid]
    with np.errstate(divide="ignore", invalid="ignore"):
        if info.comparison == "ratio":
            d = np.log(a / b)
        else:
            d = (a - b) * (100.0 if info.proportion else 1.0)
    low_m, high_m = _margins(info, options)
    out = []
    for ids, block, (block_a, block_b) in _buckets(cond, d, a, b):  # cond is sorted (see caller)
        n = block.shape[1]
        desc = stats.describe(block)
        low, high = stats.bootstrap_mean_ci(block, confidence=options.confidence, n_resamples=options.n_resamples,
                                            random_state=options.random_state, method=options.bootstrap_method)
        est = desc.mean
        if info.comparison == "ratio":
            est, low, high = np.exp(est), np.exp(low), np.exp(high)
            median = np.exp(desc.median)
            margin = (math.exp(low_m), math.exp(high_m))
        else:
            median = desc.median
            margin = (low_m, high_m)
        out.append(pd.DataFrame({
            "row_kind": "pair", "metric": info.name, "comparison": info.comparison, "unit": info.difference_unit,
            "condition_id": ids, "framework_a": a_name, "framework_b": b_name,
            "estimate": est, "ci_low": low, "ci_high": high, "n": n, "mean": est, "median": median,
            "std": desc.std, "iqr": desc.iqr,
            "p": stats.signed_rank_p(block), "p_tost": stats.tost_p(block, low_m, high_m),
            "margin_low": margin[0], "margin_high": margin[1],
            "prob_a_better": stats.prob_a_better(block_a, block_b, higher_is_better=info.higher_is_better),
            "note": NO_INTERVAL_NOTE if n == 1 else "",
            # analysis-scale mean/std kept for the seeds-needed hint
            "_mean_d": desc.mean, "_std_d": desc.std, "_low_m": low_m, "_high_m": high_m,
        }))
    return out


def effect_phrase(info: MetricInfo, a: str, b: str, estimate: float) -> str:
    """"pytorch 1.42× faster", "keras +0.8 pp", "keras uses 23 % less" — which side is ahead, by how much."""
    if not np.isfinite(estimate):
        return ""
    if info.comparison == "ratio":
        a_ahead = estimate > 1 if info.higher_is_better else estimate < 1
        factor = estimate if estimate >= 1 else 1 / estimate
        if abs(factor - 1) < 0.005:
            return "no difference"
        leader = a if a_ahead else b
        if info.kind == "memory":
            return f"{leader} uses {100 * (1 - 1 / factor):.0f} % less"
        if info.kind == "throughput":
            return f"{leader} {factor:.2f}× more {info.unit}"
        return f"{leader} {factor:.2f}× {info.better_word}"
    if estimate == 0:
        return "no difference"
    a_ahead = (estimate > 0) == info.higher_is_better
    leader = a if a_ahead else b
    if info.proportion:
        return f"{leader} {'+' if info.higher_is_better else '−'}{abs(estimate):.2f} pp"
    return f"{leader} {'higher' if info.higher_is_better else 'lower'} by {abs(estimate):.3g} {info.unit}".rstrip()


def summarize(ok_runs: pd.DataFrame, options: AnalysisOptions, predictions: pd.DataFrame | None = None,
              metrics: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(summary, conditions table, notes) from the ``ok`` rows of runs (and predictions for McNemar)."""
    notes: list[str] = []
    runs = ok_runs.reset_index(drop=True)
    conditions, cond_codes = conditions_table(runs)
    run_condition_ids = cond_codes
    frameworks = sorted(runs["framework"].astype(str).unique(), key=framework_sort_key)
    fw_codes = pd.Categorical(runs["framework"].astype(str), categories=frameworks).codes.astype(np.int64)
    seeds = runs["seed"].to_numpy(dtype=np.int64)
    metric_names = [m for m in (metrics or METRICS) if m in runs.columns and runs[m].notna().any()]

    # Cells repeated for one (condition, framework, seed) — e.g. two sweeps of the same grid — are
    # averaged so pairing by seed stays one-to-one.
    key = pd.DataFrame({"c": cond_codes, "f": fw_codes, "s": seeds})
    if key.duplicated().any():
        n_dup = int(key.duplicated().sum())
        notes.append(f"{n_dup} run(s) repeat a (condition, framework, seed) already present; their values are averaged")
        values = runs[metric_names].astype(float).groupby([cond_codes, fw_codes, seeds]).mean()
        idx = values.index.to_frame(index=False).to_numpy()
        cond_codes, fw_codes, seeds = idx[:, 0].astype(np.int64), idx[:, 1].astype(np.int64), idx[:, 2].astype(np.int64)
        metric_values = {m: values[m].to_numpy(dtype=float) for m in metric_names}
    else:
        metric_values = {m: runs[m].to_numpy(dtype=float, na_value=np.nan) for m in metric_names}

    n_fw = len(frameworks)
    group = cond_codes * n_fw + fw_codes
    group_ids, group = np.unique(group, return_inverse=True)
    group_cond, group_fw = group_ids // n_fw, group_ids % n_fw
    # Paired layout: one row per (condition, seed), one column per framework; rows sorted by condition.
    pair_key = cond_codes * (seeds.max() - seeds.min() + 1) + (seeds - seeds.min())
    pair_ids, pair_row = np.unique(pair_key, return_inverse=True)
    pair_cond = pair_ids // (seeds.max() - seeds.min() + 1)

    parts: list[pd.DataFrame] = []
    for name in metric_names:
        info = METRICS[name]
        vals = metric_values[name]
        parts += _framework_rows(info, vals, group, group_cond, group_fw, frameworks, options)
        wide = np.full((pair_ids.size, n_fw), np.nan)
        wide[pair_row, fw_codes] = vals
        for i, j in itertools.combinations(range(n_fw), 2):
            parts += _pair_rows(info, frameworks[i], frameworks[j], wide[:, i], wide[:, j], pair_cond, options)

    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["row_kind", "metric"])
    summary = _finish_pairs(summary, options)
    if predictions is not None and len(predictions):
        mc, mc_notes = mcnemar_rows(runs.assign(condition_id=run_condition_ids), predictions, options)
        notes += mc_notes
        if len(mc):
            summary = pd.concat([summary, mc], ignore_index=True)
    summary = _attach(summary, conditions, options)
    return summary, conditions, notes


def _finish_pairs(summary: pd.DataFrame, options: AnalysisOptions) -> pd.DataFrame:
    if "p" not in summary:
        return summary
    pair = (summary["row_kind"] == "pair").to_numpy()
    p_holm = np.full(len(summary), np.nan)
    p_holm[pair] = stats.holm(summary.loc[pair, "p"].to_numpy(dtype=float))
    summary["p_holm"] = p_holm
    family = int(np.isfinite(summary.loc[pair, "p"].to_numpy(dtype=float)).sum())
    verdicts = np.full(len(summary), "", dtype=object)
    winners = np.full(len(summary), "", dtype=object)
    phrases = np.full(len(summary), "", dtype=object)
    needed = np.full(len(summary), np.nan)
    sub = summary[pair]
    if len(sub):
        positions = np.flatnonzero(pair)
        hint = np.full(len(sub), np.nan)
        for metric, idx in sub.groupby("metric").indices.items():  # margins differ per metric
            rows = sub.iloc[idx]
            hint[idx] = stats.seeds_needed(rows["_mean_d"].to_numpy(float), rows["_std_d"].to_numpy(float),
                                           rows["n"].to_numpy(float), low=float(rows["_low_m"].iloc[0]),
                                           high=float(rows["_high_m"].iloc[0]), alpha=options.alpha,
                                           family_size=family)
        est = sub["estimate"].to_numpy(float)
        ratio = (sub["comparison"] == "ratio").to_numpy()
        higher = sub["metric"].map(lambda m: METRICS[m].higher_is_better).to_numpy(bool)
        neutral = np.where(ratio, 1.0, 0.0)
        a_ahead = (est > neutral) == higher
        decided = np.isfinite(est) & (est != neutral)
        a_names = sub["framework_a"].to_numpy(object)
        b_names = sub["framework_b"].to_numpy(object)
        words, winner = stats.verdicts(a_names, b_names, a_ahead=np.where(decided, a_ahead, np.nan),
                                       p_holm=p_holm[pair], p_tost=sub["p_tost"].to_numpy(float), alpha=options.alpha)
        verdicts[positions] = words
        winners[positions] = winner
        needed[positions] = np.where(words == stats.VERDICT_INCONCLUSIVE, hint, np.nan)
        infos = [METRICS[m] for m in sub["metric"]]
        phrases[positions] = [effect_phrase(i, a, b, e) for i, a, b, e in zip(infos, a_names, b_names, est)]
    summary["verdict"] = verdicts
    summary["winner"] = winners
    summary["phrase"] = phrases
    summary["seeds_needed"] = needed
    return summary.drop(columns=[c for c in summary.columns if c.startswith("_")])


def mcnemar_rows(runs: pd.DataFrame, predictions: pd.DataFrame, options: AnalysisOptions) -> tuple[pd.DataFrame, list[str]]:
    """Exact McNemar per (condition, seed, framework pair) on the samples both frameworks predicted.

    The runner promises the same ``sample_index`` set (and labels) for the same seed; when that does
    not hold the test uses the shared samples and the row's note says what differed.
    """
    notes: list[str] = []
    cells = runs[["cell_id", "framework", "seed", "condition_id"]].drop_duplicates("cell_id")
    preds = predictions[["cell_id", "sample_index", "y_true", "y_pred"]].merge(cells, on="cell_id", how="inner")
    rows = []
    for (cond_id, seed), grp in preds.groupby(["condition_id", "seed"], sort=True):
        by_fw = {fw: g.drop_duplicates("sample_index").set_index("sample_index") for fw, g in grp.groupby("framework")}
        present = sorted(by_fw, key=framework_sort_key)
        for a, b in itertools.combinations(present, 2):
            pa_, pb_ = by_fw[a], by_fw[b]
            shared = pa_.index.intersection(pb_.index)
            note = []
            if len(shared) != len(pa_) or len(shared) != len(pb_):
                note.append(f"sample sets differ: {a} {len(pa_)}, {b} {len(pb_)}, shared {len(shared)}")
            ya, yb = pa_.loc[shared, "y_true"].to_numpy(), pb_.loc[shared, "y_true"].to_numpy()
            if (ya != yb).any():
                note.append(f"true labels differ on {int((ya != yb).sum())} shared samples")
                keep = ya == yb
                shared = shared[keep]
                ya = ya[keep]
            if note:
                notes.append(f"McNemar, condition {cond_id}, seed {seed}, {a} vs {b}: " + "; ".join(note))
            if len(shared) == 0:
                continue
            res = stats.mcnemar(ya, pa_.loc[shared, "y_pred"].to_numpy(), pb_.loc[shared, "y_pred"].to_numpy())
            rows.append({"row_kind": "mcnemar", "metric": "accuracy", "comparison": "difference", "unit": "pp",
                         "condition_id": cond_id, "framework_a": a, "framework_b": b, "seed": int(seed),
                         "estimate": res.accuracy_difference_pp, "n": res.n, "p": res.p,
                         "note": "; ".join(note) or f"discordant: {a} only {res.a_only}, {b} only {res.b_only}"})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["p_holm"] = stats.holm(frame["p"].to_numpy(float))
        v = []
        for r in frame.itertuples(index=False):
            if r.p_holm < options.alpha and r.estimate != 0:
                v.append(f"{r.framework_a if r.estimate > 0 else r.framework_b} better")
            else:
                v.append("no significant difference")
        frame["verdict"] = v
        frame["winner"] = [x[: -len(" better")] if x.endswith(" better") else "" for x in v]
    return frame, notes


def _attach(summary: pd.DataFrame, conditions: pd.DataFrame, options: AnalysisOptions) -> pd.DataFrame:
    """Condition columns, metric facts and constant columns; the exact column order of SUMMARY_COLUMNS."""
    if not len(summary):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SUMMARY_COLUMNS})
    summary = summary.merge(conditions, on="condition_id", how="left")
    summary["metric_label"] = summary["metric"].map(lambda m: METRICS[m].label)
    summary["metric_kind"] = summary["metric"].map(lambda m: METRICS[m].kind)
    summary["higher_is_better"] = summary["metric"].map(lambda m: METRICS[m].higher_is_better)
    summary["confidence"] = options.confidence
    summary["n_resamples"] = options.n_resamples
    for col in SUMMARY_COLUMNS:
        if col not in summary:
            summary[col] = np.nan if col in ("p", "p_holm", "p_tost", "ci_low", "ci_high", "margin_low", "margin_high",
                                             "prob_a_better", "seeds_needed", "mean", "median", "std", "iqr",
                                             "estimate") else None
    for col in ("framework", "framework_a", "framework_b", "verdict", "winner", "phrase", "note"):
        summary[col] = summary[col].astype(object).where(summary[col].notna(), None)
    summary["seed"] = summary["seed"].astype("Int64")
    summary["n"] = summary["n"].astype("Int64")
    summary["seeds_needed"] = summary["seeds_needed"].astype("Int64")
    return summary.loc[:, list(SUMMARY_COLUMNS)]
