"""From result rows to the summary table: one row per (metric, condition, framework or pair).

Over 400 lines on purpose: grouping, pairing and the row builders are one vectorised pass; split, they would pass the same arrays around.

Grouping is done once (integer codes for conditions, frameworks and seeds); every group of the same
size is then analysed as one row of a 2-D array, so a million result rows cost a handful of
vectorised calls rather than a Python loop per group.

Row kinds in the summary:
- ``framework``: one framework in one condition — estimate with a t-interval over seeds (quality:
  mean; time/throughput/memory: geometric mean, interval on the log scale), median, sd, IQR, n; from
  10 seeds on also the IQM with a percentile bootstrap interval (rliable).
- ``pair``: frameworks A vs B in one condition on the seeds both have — difference A − B (pp for
  proportions) or ratio A/B (geometric mean). ONE paired t procedure gives estimate, 95 % interval,
  p, direction and (for headline rows) the verdict; see :mod:`analysis.stats`. ``family`` says
  whether the row is a headline question (Holm over the report's headline rows, TOST adjusted the
  same way, decision interval at the Holm level) or a secondary, descriptive metric.
- ``mcnemar``: A vs B on one seed's shared test set — disagreement counts, descriptive only.

Within-cell replicates: where ``epochs.parquet`` has the epoch times, a cell's epoch time is the
geometric mean of its post-warm-up epochs (the runs table's median otherwise), and the share of the
seed-to-seed variance that within-cell (epoch-to-epoch) noise explains is reported. The test stays
on the seed level (n − 1 degrees of freedom): replicates make each seed's value more precise but are
never counted as seeds — that is what keeps the interval honest at 3 seeds.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterator

import numpy as np
import pandas as pd
from scipy import special

from analysis import censored, stats
from analysis.metrics import (CONDITION_COLUMNS, CONDITION_LABELS, METRICS, PRIMARY, MetricInfo,
                              framework_sort_key)
from analysis.options import AnalysisOptions

SUMMARY_COLUMNS: tuple[str, ...] = (
    "row_kind", "metric", "metric_label", "metric_kind", "comparison", "unit", "scale", "higher_is_better",
    "condition_id", "condition", *CONDITION_COLUMNS,
    "framework", "framework_a", "framework_b", "seed",
    "estimate", "ci_low", "ci_high", "n", "mean", "median", "std", "iqr", "iqm", "iqm_low", "iqm_high",
    "family", "family_size", "p", "p_holm", "decision_level", "dec_low", "dec_high",
    "p_tost", "p_tost_holm", "eq_low", "eq_high", "margin_low", "margin_high",
    "prob_a_better", "prob_low", "prob_high", "seeds_only_a", "seeds_only_b", "within_share",
    "disagree_a", "disagree_b",
    "verdict", "winner", "margin_words", "phrase", "seeds_needed", "note", "confidence", "n_resamples",
    "deployment",  # deployment rows only (analysis.deploy): '<format> · <runtime>' or 'native'; None elsewhere
)

FAMILY_HEADLINE = "headline"
FAMILY_SECONDARY = "secondary"
WARNING_PREFIX = "warning: "  # notes that start with this are shown as alarms at the top of the report

NO_INTERVAL_NOTE = "no interval (1 seed)"


def conditions_table(ok_runs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(one row per distinct condition with ``condition_id`` and a readable ``condition`` label,
    the condition id of every run row). Conditions are numbered in sorted order of their columns
    (missing values last), as a sorted group-by would number them."""
    cond = ok_runs.reindex(columns=list(CONDITION_COLUMNS))  # results of older schemas lack newer columns
    if not len(cond):
        codes = np.zeros(0, dtype=np.int64)
        first = codes
    else:
        per_column = np.stack([pd.factorize(cond[c], sort=True, use_na_sentinel=False)[0] for c in CONDITION_COLUMNS],
                              axis=1)
        _, first, codes = np.unique(per_column, axis=0, return_index=True, return_inverse=True)
        codes = codes.reshape(-1)
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
    if column == "execution_mode":
        return f"execution {value}"
    if column == "pipeline":
        return f"pipeline {value}"
    if column == "deterministic":
        return "deterministic" if bool(value) else "non-deterministic"
    if column == "parity_mode":
        return f"parity {value}"
    return str(value)


def condition_labels(table: pd.DataFrame) -> list[str]:
    """Labels naming only the columns that vary between conditions ("all runs" when none do)."""
    columns = {c: table[c].tolist() for c in CONDITION_COLUMNS if c in table}
    varying = [c for c, v in columns.items() if len({"∅" if _missing(x) else str(x) for x in v}) > 1]
    if "device_name" in varying and "device_kind" in varying:
        varying.remove("device_kind")  # the name says it
    labels = []
    for i in range(len(table)):
        parts = [_fmt_value(c, columns[c][i]) for c in varying]
        labels.append(" · ".join(parts) if parts else "all runs")
    return labels


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


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


TEXT_COLUMNS = frozenset({"row_kind", "metric", "comparison", "unit", "scale", "framework", "framework_a", "framework_b",
                          "family", "verdict", "winner", "margin_words", "phrase", "note", "deployment"})


def _part(columns: dict) -> dict[str, np.ndarray]:
    """A block of summary rows as equal-length column arrays (scalars broadcast). Rows are kept as
    arrays until the very end: building one DataFrame per block would dominate small analyses."""
    length = next(len(v) for v in columns.values() if isinstance(v, np.ndarray) and v.ndim)
    out = {}
    for k, v in columns.items():
        if isinstance(v, np.ndarray) and v.ndim:
            out[k] = v
        else:
            out[k] = np.full(length, v, dtype=object if isinstance(v, str) or v is None else float)
    return out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Blocks → one set of columns; a column a block lacks is None (text) or NaN there."""
    keys = list(dict.fromkeys(k for p in parts for k in p))
    out = {}
    for k in keys:
        pieces = []
        for p in parts:
            length = len(next(iter(p.values())))
            pieces.append(p[k] if k in p else np.full(length, None if k in TEXT_COLUMNS else np.nan,
                                                      dtype=object if k in TEXT_COLUMNS else float))
        if any(x.dtype == object for x in pieces):
            pieces = [x.astype(object) for x in pieces]
        out[k] = np.concatenate(pieces) if pieces else np.array([])
    return out


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
                    group_fw: np.ndarray, frameworks: list[str], options: AnalysisOptions,
                    rho: np.ndarray | None = None) -> list[pd.DataFrame]:
    keep = np.isfinite(values)
    log_scale = info.comparison == "ratio"
    if log_scale:
        keep &= values > 0  # e.g. memory 0 = not measured
    gs, vs = groups[keep], values[keep]
    order = np.argsort(gs, kind="stable")
    out = []
    for ids, block, _ in _buckets(gs[order], vs[order]):
        d = stats.describe(block)
        n = block.shape[1]
        t = stats.paired_t(np.log(block) if log_scale else block, confidence=options.confidence,
                           rho=0.0 if rho is None else rho[group_cond[ids]])
        est, low, high = t.mean, t.low, t.high
        if log_scale:
            est, low, high = np.exp(est), np.exp(low), np.exp(high)
        elif info.proportion:
            low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
        iqm = iqm_low = iqm_high = np.full(len(ids), np.nan)
        if info.kind == "quality" and n >= stats.IQM_MIN_SEEDS:
            iqm, iqm_low, iqm_high = stats.iqm_ci(block, confidence=options.confidence,
                                                  n_resamples=options.n_resamples, random_state=options.random_state)
        out.append(_part({
            "row_kind": "framework", "metric": info.name, "comparison": "value", "unit": info.unit,
            "condition_id": group_cond[ids], "framework": np.asarray(frameworks, dtype=object)[group_fw[ids]],
            "estimate": est, "ci_low": low, "ci_high": high, "n": n, "mean": d.mean, "median": d.median,
            "std": d.std, "iqr": d.iqr, "iqm": iqm, "iqm_low": iqm_low, "iqm_high": iqm_high,
            "note": NO_INTERVAL_NOTE if n == 1 else "",
        }))
    return out


def _pair_rows(info: MetricInfo, a_name: str, b_name: str, a: np.ndarray, b: np.ndarray, pair_cond: np.ndarray,
               options: AnalysisOptions, within_a: np.ndarray | None = None,
               within_b: np.ndarray | None = None, rho: np.ndarray | None = None) -> list[pd.DataFrame]:
    """Pair rows of one metric and one framework pair; ``pair_cond`` (one per (condition, seed) row)
    must be sorted. Conditions where both sides have values but no seed in common get an n = 0 row."""
    has_a, has_b = np.isfinite(a), np.isfinite(b)
    if info.comparison == "ratio":  # a log ratio needs positive values (e.g. memory 0 = not measured)
        has_a &= a > 0
        has_b &= b > 0
    valid = has_a & has_b
    n_cond = int(pair_cond.max()) + 1 if pair_cond.size else 0
    count_a = np.bincount(pair_cond, has_a, n_cond)
    count_b = np.bincount(pair_cond, has_b, n_cond)
    count_ab = np.bincount(pair_cond, valid, n_cond)
    low_m, high_m = _margins(info, options)
    margin = (math.exp(low_m), math.exp(high_m)) if info.comparison == "ratio" else (low_m, high_m)
    out = []
    unpaired = np.flatnonzero((count_ab == 0) & (count_a > 0) & (count_b > 0))
    if unpaired.size:
        out.append(_part({
            "row_kind": "pair", "metric": info.name, "comparison": info.comparison, "unit": info.difference_unit,
            "condition_id": unpaired, "framework_a": a_name, "framework_b": b_name, "n": 0,
            "margin_low": margin[0], "margin_high": margin[1],
            "seeds_only_a": count_a[unpaired].astype(int), "seeds_only_b": count_b[unpaired].astype(int),
            "note": f"no seed has both {a_name} and {b_name}: nothing to pair",
            "_mean_d": np.nan, "_sd_d": np.nan, "_se_d": np.nan, "_low_m": low_m, "_high_m": high_m, "_rho": 0.0,
        }))
    if not valid.any():
        return out
    wa = within_a[valid] if within_a is not None else np.full(valid.sum(), np.nan)
    wb = within_b[valid] if within_b is not None else np.full(valid.sum(), np.nan)
    a, b, cond = a[valid], b[valid], pair_cond[valid]
    with np.errstate(divide="ignore", invalid="ignore"):
        if info.comparison == "ratio":
            d = np.log(a / b)
        else:
            d = (a - b) * (100.0 if info.proportion else 1.0)
    for ids, block, (block_a, block_b, block_wa, block_wb) in _buckets(cond, d, a, b, wa, wb):
        n = block.shape[1]
        desc = stats.describe(block)
        rho_ids = np.zeros(len(ids)) if rho is None else rho[ids]
        t = stats.paired_t(block, confidence=options.confidence, rho=rho_ids)
        est, low, high, median = t.mean, t.low, t.high, desc.median
        if info.comparison == "ratio":
            est, low, high, median = np.exp(est), np.exp(low), np.exp(high), np.exp(median)
        share = stats.prob_a_better(block_a, block_b, higher_is_better=info.higher_is_better)
        p_low, p_high = stats.proportion_interval(share, n, confidence=options.confidence)
        with np.errstate(divide="ignore", invalid="ignore"):
            within = (block_wa + block_wb).mean(axis=1) / t.sd ** 2  # NaN unless both sides have replicates
        only_a = (count_a[ids] - count_ab[ids]).astype(int)
        only_b = (count_b[ids] - count_ab[ids]).astype(int)
        notes = np.array([_dropped_note(a_name, b_name, x, y) or (NO_INTERVAL_NOTE if n == 1 else "")
                          for x, y in zip(only_a, only_b)], dtype=object)
        out.append(_part({
            "row_kind": "pair", "metric": info.name, "comparison": info.comparison, "unit": info.difference_unit,
            "condition_id": ids, "framework_a": a_name, "framework_b": b_name,
            "estimate": est, "ci_low": low, "ci_high": high, "n": n, "mean": est, "median": median,
            "std": desc.std, "iqr": desc.iqr, "p": t.p, "p_tost": stats.tost_p(block, low_m, high_m, rho=rho_ids),
            "margin_low": margin[0], "margin_high": margin[1],
            "prob_a_better": share, "prob_low": p_low, "prob_high": p_high,
            "seeds_only_a": only_a, "seeds_only_b": only_b,
            "within_share": np.where(np.isfinite(within), np.clip(within, 0, None), np.nan), "note": notes,
            # analysis-scale facts kept for the family step (decision intervals, seeds-needed hint)
            "_mean_d": t.mean, "_sd_d": t.sd, "_se_d": t.se, "_low_m": low_m, "_high_m": high_m, "_rho": rho_ids,
        }))
    return out


def _dropped_note(a: str, b: str, only_a: int, only_b: int) -> str:
    """"dropped from pairing: keras 1 seed(s) without pytorch" — or "" when every seed is paired."""
    parts = [f"{who} {k} seed(s) without {other}" for who, k, other in ((a, only_a, b), (b, only_b, a)) if k]
    return "dropped from pairing: " + ", ".join(parts) if parts else ""


def effect_phrase(info: MetricInfo, a: str, b: str, estimate: float) -> str:
    """"pytorch 1.42× faster", "keras +0.8 pp", "keras uses 23 % less" — which side is ahead, by how
    much. The side is the sign of the estimate, i.e. the centre of the comparison's interval."""
    if not np.isfinite(estimate):
        return ""
    if info.comparison == "ratio":
        if estimate == 1:
            return "no difference"
        a_ahead = estimate > 1 if info.higher_is_better else estimate < 1
        factor = estimate if estimate >= 1 else 1 / estimate
        leader = a if a_ahead else b
        digits = 2 if factor >= 1.01 else 3
        if info.kind == "memory":
            less = 100 * (1 - 1 / factor)
            return f"{leader} uses {less:.0f} % less" if less >= 1 else f"{leader} uses {less:.2f} % less"
        if info.kind == "throughput":
            return f"{leader} {factor:.{digits}f}× more {info.unit}"
        return f"{leader} {factor:.{digits}f}× {info.better_word}"
    if estimate == 0:
        return "no difference"
    a_ahead = (estimate > 0) == info.higher_is_better
    leader = a if a_ahead else b
    if info.proportion:
        return f"{leader} {'+' if info.higher_is_better else '−'}{abs(estimate):.2f} pp"
    return f"{leader} {'higher' if info.higher_is_better else 'lower'} by {abs(estimate):.3g} {info.unit}".rstrip()


# Per-epoch columns of epochs.parquet that are within-cell replicates of a runs-table metric:
# epoch column → summary metric. The epoch time replaces the runs table's median where present; the
# step time (the median step of each epoch; recorded by newer runners) is a secondary metric.
EPOCH_REPLICATES: dict[str, str] = {"epoch_seconds": "median_epoch_seconds", "step_seconds_median": "step_seconds"}


def epoch_replicates(epochs: pd.DataFrame | None, column: str = "epoch_seconds") -> pd.DataFrame | None:
    """Per cell, from ``epochs.parquet``: the geometric mean of ``column`` over the post-warm-up
    epochs (``value``), their count (``replicates``) and the variance of that mean's log
    (``within_var`` = s²/k on the log scale; NaN below two replicates). Epoch 1 is the warm-up epoch
    (reported apart, as in the runs table). None when the table has no usable values."""
    if epochs is None or not len(epochs) or column not in epochs or "epoch" not in epochs:
        return None
    e = epochs[["cell_id", "epoch", column]]
    secs = e[column].to_numpy(dtype=float, na_value=np.nan)
    keep = (e["epoch"].to_numpy() >= 2) & np.isfinite(secs) & (secs > 0)
    if not keep.any():
        return None
    logs = pd.DataFrame({"cell_id": e["cell_id"].to_numpy()[keep], "log": np.log(secs[keep])})
    agg = logs.groupby("cell_id", sort=False)["log"].agg(["mean", "var", "count"])
    return pd.DataFrame({"value": np.exp(agg["mean"]), "replicates": agg["count"],
                         "within_var": agg["var"] / agg["count"]}, index=agg.index)


def summarize(ok_runs: pd.DataFrame, options: AnalysisOptions, predictions: pd.DataFrame | None = None,
              metrics: list[str] | None = None, epochs: pd.DataFrame | None = None, *,
              family_by: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(summary, conditions table, notes) from the ``ok`` rows of runs (and predictions for McNemar,
    epochs for the within-cell replicates of the epoch time). Notes starting with
    :data:`WARNING_PREFIX` are warnings the report shows at the top (pairing problems).

    The report's multiplicity family is all its headline rows. ``family_by`` (a condition column)
    splits it into one family per value of that column instead — as if each value were its own
    report; ``benchmarks/bench_calibration.py`` uses it to analyse hundreds of simulated reports in
    one call. Everything else is computed per condition and is unaffected."""
    if family_by is not None and family_by not in CONDITION_COLUMNS:
        raise ValueError(f"family_by must be a condition column {CONDITION_COLUMNS}, got {family_by!r}")
    notes: list[str] = []
    runs = censored.derive(ok_runs.reset_index(drop=True))  # time to target restricted to the budget
    conditions, cond_codes = conditions_table(runs)
    run_condition_ids = cond_codes
    frameworks = sorted(runs["framework"].astype(str).unique(), key=framework_sort_key)
    fw_codes = pd.Categorical(runs["framework"].astype(str), categories=frameworks).codes.astype(np.int64)
    seeds = runs["seed"].to_numpy(dtype=np.int64)
    metric_names = [m for m in (metrics or METRICS) if m in runs.columns and runs[m].notna().any()]

    metric_values = {m: runs[m].to_numpy(dtype=float, na_value=np.nan) for m in metric_names}
    within_values: dict[str, np.ndarray] = {}
    for column, name in EPOCH_REPLICATES.items():
        if metrics is not None and name not in metrics:
            continue
        reps = epoch_replicates(epochs, column)
        if reps is None:
            continue
        cell = reps.reindex(runs["cell_id"].to_numpy())
        have = np.isfinite(cell["value"].to_numpy(dtype=float))
        vals = metric_values[name].copy() if name in metric_values else np.full(len(runs), np.nan)
        vals[have] = cell["value"].to_numpy(dtype=float)[have]
        if name not in metric_values:
            metric_names.append(name)
        metric_values[name] = vals
        within_values[name] = cell["within_var"].to_numpy(dtype=float)
    metric_names = [m for m in METRICS if m in metric_names]  # table order
    rho_test, rho_val = resampled_rho(runs, cond_codes, len(conditions))

    # Speed pairs only within one accelerator type (an H100 cell is not paired with an A100 one):
    # -1 unknown (CPU, untyped or old results), else the type's code; see _mask_mixed_types.
    acc = (pd.factorize(runs["accelerator_type"])[0].astype(float) if "accelerator_type" in runs.columns
           else np.full(len(runs), -1.0))

    # Cells repeated for one (condition, framework, seed) — e.g. two sweeps of the same grid — are
    # averaged so pairing by seed stays one-to-one; the report says so at the top.
    key = pd.DataFrame({"c": cond_codes, "f": fw_codes, "s": seeds})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any():
        groups = key[dup].assign(cell=runs["cell_id"].astype(str).to_numpy()[dup]).groupby(["c", "f", "s"])
        listed = [f"{conditions['condition'].iloc[c]} · {frameworks[f]} · seed {s} ({len(g)} cells: "
                  f"{', '.join(g['cell'].head(3))}{', …' if len(g) > 3 else ''})" for (c, f, s), g in groups]
        notes.append(f"{WARNING_PREFIX}{len(listed)} (condition, framework, seed) appear in more than one cell; "
                     f"their values are averaged so that each seed counts once: " + "; ".join(listed[:5])
                     + (f"; … {len(listed) - 5} more" if len(listed) > 5 else ""))
        frame = pd.DataFrame({**metric_values, **{f"_w_{m}": w for m, w in within_values.items()}})
        acc_groups = pd.Series(acc).groupby([cond_codes, fw_codes, seeds])
        acc = np.where(acc_groups.min() == acc_groups.max(), acc_groups.min(), -2.0)  # -2: mixed types
        values = frame.groupby([cond_codes, fw_codes, seeds]).mean()
        idx = values.index.to_frame(index=False).to_numpy()
        cond_codes, fw_codes, seeds = idx[:, 0].astype(np.int64), idx[:, 1].astype(np.int64), idx[:, 2].astype(np.int64)
        metric_values = {m: values[m].to_numpy(dtype=float) for m in metric_names}
        within_values = {m: values[f"_w_{m}"].to_numpy(dtype=float) for m in within_values}

    n_fw = len(frameworks)
    group = cond_codes * n_fw + fw_codes
    group_ids, group = np.unique(group, return_inverse=True)
    group_cond, group_fw = group_ids // n_fw, group_ids % n_fw
    # Paired layout: one row per (condition, seed), one column per framework; rows sorted by condition.
    pair_key = cond_codes * (seeds.max() - seeds.min() + 1) + (seeds - seeds.min())
    pair_ids, pair_row = np.unique(pair_key, return_inverse=True)
    pair_cond = pair_ids // (seeds.max() - seeds.min() + 1)
    pair_seed = pair_ids % (seeds.max() - seeds.min() + 1) + seeds.min()
    present = np.zeros((pair_ids.size, n_fw), dtype=bool)
    present[pair_row, fw_codes] = True
    notes += _pairing_warnings(present, pair_cond, pair_seed, frameworks, conditions)
    wide_acc = np.full((pair_ids.size, n_fw), -1.0)
    wide_acc[pair_row, fw_codes] = acc
    mixed_pairs = 0

    parts: list[pd.DataFrame] = []
    for name in metric_names:
        info = METRICS[name]
        vals = metric_values[name]
        rho = (rho_val if name == "val_accuracy" else rho_test) if info.kind == "quality" else None
        parts += _framework_rows(info, vals, group, group_cond, group_fw, frameworks, options, rho)
        wide = np.full((pair_ids.size, n_fw), np.nan)
        wide[pair_row, fw_codes] = vals
        wide_w = None
        if name in within_values:
            wide_w = np.full((pair_ids.size, n_fw), np.nan)
            wide_w[pair_row, fw_codes] = within_values[name]
        for i, j in itertools.combinations(range(n_fw), 2):
            a, b = wide[:, i], wide[:, j]
            if info.kind in ("time", "throughput"):  # speed: only pairs measured on one accelerator type
                mixed = (wide_acc[:, i] != wide_acc[:, j]) & np.isfinite(a) & np.isfinite(b)
                if mixed.any():
                    mixed_pairs = max(mixed_pairs, int(mixed.sum()))
                    a, b = np.where(mixed, np.nan, a), np.where(mixed, np.nan, b)
            parts += _pair_rows(info, frameworks[i], frameworks[j], a, b, pair_cond, options,
                                None if wide_w is None else wide_w[:, i], None if wide_w is None else wide_w[:, j],
                                rho)
    if mixed_pairs:
        notes.append(f"{WARNING_PREFIX}{mixed_pairs} seed pair(s) ran on different accelerator types "
                     "(accelerator_type); speed comparisons pair only cells of one type, so they are left out "
                     "of the speed rows (quality rows keep them)")

    family_of_condition = (pd.factorize(conditions[family_by])[0] if family_by is not None
                           else np.zeros(len(conditions), dtype=np.int64))
    cols = _finish_pairs(_concat(parts), options, family_of_condition) if parts else {}
    extra = [x for x in (_unmeasured_rows(runs, run_condition_ids, frameworks, cols),
                         _reach_rows(runs, run_condition_ids, options)) if x]
    if extra:
        cols = _concat([cols, *extra]) if cols else _concat(extra)
    if predictions is not None and len(predictions):
        mc, mc_notes = mcnemar_rows(runs.assign(condition_id=run_condition_ids), predictions)
        notes += mc_notes
        if mc:
            cols = _concat([cols, mc]) if cols else mc
    return _attach(cols, conditions, options), conditions, notes


def resampled_rho(runs: pd.DataFrame, cond_codes: np.ndarray, n_conditions: int) -> tuple[np.ndarray, np.ndarray]:
    """Per condition: n_test / n_train and n_val / n_train where its seeds resampled the split
    (``split_design = resampled``), else 0 — the Nadeau–Bengio correction of the quality intervals
    (``analysis.stats.resampled_variance_factor``); a fixed split needs none (a claim about these data)."""
    test, val = np.zeros(n_conditions), np.zeros(n_conditions)
    if not {"split_design", "train_samples", "test_samples"} <= set(runs.columns) or not n_conditions:
        return test, val
    frame = pd.DataFrame({"c": cond_codes, "resampled": (runs["split_design"] == "resampled").to_numpy(),
                          "train": runs["train_samples"].to_numpy(dtype=float, na_value=np.nan),
                          "test": runs["test_samples"].to_numpy(dtype=float, na_value=np.nan),
                          "val": (runs["val_samples"] if "val_samples" in runs else runs["test_samples"] * np.nan
                                  ).to_numpy(dtype=float, na_value=np.nan)})
    agg = frame[frame["resampled"]].groupby("c")[["train", "test", "val"]].mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        test[agg.index.to_numpy()] = np.nan_to_num((agg["test"] / agg["train"]).to_numpy())
        val[agg.index.to_numpy()] = np.nan_to_num((agg["val"] / agg["train"]).to_numpy())
    return test, val


NOT_MEASURED = "not measured"


def _unmeasured_rows(runs: pd.DataFrame, condition_ids: np.ndarray, frameworks: list[str],
                     cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A headline row for each (condition, pair, question) that has no measured primary metric but whose
    cells say why (``runs.unmeasured``): verdict "not measured", the reason in the note — never a verdict
    from a number that is not what its label says (e.g. epoch time with one epoch)."""
    import json

    if "unmeasured" not in runs or not runs["unmeasured"].notna().any():
        return {}
    have = set()
    if cols:
        head = np.flatnonzero(cols.get("family", np.array([], dtype=object)) == FAMILY_HEADLINE)
        for i in head:
            question = next((q for q, names in PRIMARY.items() if cols["metric"][i] in names), None)
            have.add((int(cols["condition_id"][i]), cols["framework_a"][i], cols["framework_b"][i], question))
    reasons: dict[tuple[int, str], dict[str, str]] = {}
    for cid, fw, text in zip(condition_ids, runs["framework"].astype(str), runs["unmeasured"]):
        if isinstance(text, str) and text:
            for column, why in json.loads(text).items():
                reasons.setdefault((int(cid), fw), {}).setdefault(column, why)
    rows = []
    present = {(int(c), f) for c, f in zip(condition_ids, runs["framework"].astype(str))}
    for cid in sorted({int(c) for c in condition_ids}):
        for a, b in itertools.combinations([f for f in frameworks if (cid, f) in present], 2):
            for question, names in PRIMARY.items():
                if (cid, a, b, question) in have:
                    continue
                for name in names:
                    why = reasons.get((cid, a), {}).get(name) or reasons.get((cid, b), {}).get(name)
                    if why:
                        rows.append({"row_kind": "pair", "metric": name, "comparison": METRICS[name].comparison,
                                     "unit": METRICS[name].difference_unit, "condition_id": cid, "framework_a": a,
                                     "framework_b": b, "n": 0.0, "family": FAMILY_HEADLINE, "verdict": NOT_MEASURED,
                                     "note": why})
                        break
    if not rows:
        return {}
    return _part({k: np.array([r.get(k) for r in rows], dtype=object if k in TEXT_COLUMNS else float)
                  for k in rows[0]})


def _reach_rows(runs: pd.DataFrame, condition_ids: np.ndarray, options: AnalysisOptions) -> dict[str, np.ndarray]:
    """Framework rows of ``reach_rate``: the share of seeds that reached the target within the budget."""
    rates = censored.reach_rates(runs, condition_ids, options.confidence)
    if rates.empty:
        return {}
    notes = [f"{int(r)} of {int(n)} seeds reached {t} within {int(b)} epochs" for r, n, t, b in
             zip(rates["reached"], rates["n"], rates["target"], rates["budget"])]
    return _part({"row_kind": "framework", "metric": "reach_rate", "comparison": "value", "unit": "fraction",
                  "condition_id": rates["condition_id"].to_numpy(), "framework": rates["framework"].to_numpy(dtype=object),
                  "estimate": rates["rate"].to_numpy(dtype=float), "ci_low": rates["ci_low"].to_numpy(dtype=float),
                  "ci_high": rates["ci_high"].to_numpy(dtype=float), "n": rates["n"].to_numpy(dtype=float),
                  "mean": rates["rate"].to_numpy(dtype=float), "note": np.array(notes, dtype=object)})


def _seed_list(seeds: np.ndarray) -> str:
    shown = ", ".join(str(int(s)) for s in seeds[:8])
    return shown + (f", … ({len(seeds)} in all)" if len(seeds) > 8 else "")


def _pairing_warnings(present: np.ndarray, pair_cond: np.ndarray, pair_seed: np.ndarray, frameworks: list[str],
                      conditions: pd.DataFrame) -> list[str]:
    """One warning per (condition, framework pair) whose frameworks did not run the same seeds
    (ok cells): those seeds are dropped from the paired comparisons, and the warning names them."""
    out = []
    n_cond = int(pair_cond.max()) + 1 if pair_cond.size else 0
    for i, j in itertools.combinations(range(len(frameworks)), 2):
        only_i, only_j = present[:, i] & ~present[:, j], present[:, j] & ~present[:, i]
        both_any = (np.bincount(pair_cond, present[:, i], n_cond) > 0) & (np.bincount(pair_cond, present[:, j], n_cond) > 0)
        bad = np.flatnonzero(both_any & (np.bincount(pair_cond, only_i | only_j, n_cond) > 0))
        for c in bad:
            rows = pair_cond == c
            a, b = frameworks[i], frameworks[j]
            parts = []
            if (only_i & rows).any():
                parts.append(f"{a} seed(s) {_seed_list(pair_seed[only_i & rows])} have no {b} partner")
            if (only_j & rows).any():
                parts.append(f"{b} seed(s) {_seed_list(pair_seed[only_j & rows])} have no {a} partner")
            paired = int((present[:, i] & present[:, j] & rows).sum())
            out.append(f"{WARNING_PREFIX}{conditions['condition'].iloc[c]}, {a} vs {b}: " + "; ".join(parts)
                       + f" (failed or not run) — dropped from pairing; {paired} paired seed(s) remain")
    return out


def _headline_mask(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Which rows are the family: pair rows whose metric is, per (condition, pair, question), the
    first metric of ``PRIMARY[question]`` that has a row there."""
    pair = cols["row_kind"] == "pair"
    metric = cols["metric"]
    head = np.zeros(len(metric), dtype=bool)
    for names in PRIMARY.values():
        taken: set[tuple] = set()
        for name in names:  # in order of preference
            rows = np.flatnonzero(pair & (metric == name))
            keys = list(zip(cols["condition_id"][rows].tolist(), cols["framework_a"][rows], cols["framework_b"][rows]))
            free = np.array([k not in taken for k in keys], dtype=bool)
            head[rows[free]] = True
            taken.update(keys)
    return head


def _finish_pairs(cols: dict[str, np.ndarray], options: AnalysisOptions,
                  family_of_condition: np.ndarray) -> dict[str, np.ndarray]:
    """Family step: Holm over the headline rows (difference and TOST) of each family, decision and
    equivalence intervals at the Holm levels, verdicts from those intervals, seeds-needed hints,
    phrases."""
    size = len(cols["row_kind"])
    for col in ("p", "p_tost", "n", "estimate", "_mean_d", "_sd_d", "_se_d", "_low_m", "_high_m", "_rho"):
        cols.setdefault(col, np.full(size, np.nan))
    for col in ("framework_a", "framework_b", "comparison"):  # absent when only one framework ran
        cols.setdefault(col, np.full(size, None, dtype=object))
    pair = cols["row_kind"] == "pair"
    for col in ("family", "verdict", "winner", "margin_words", "phrase"):
        cols[col] = np.where(pair, "", None).astype(object)
    for col in ("family_size", "p_holm", "decision_level", "dec_low", "dec_high", "p_tost_holm", "eq_low", "eq_high",
                "seeds_needed"):
        cols[col] = np.full(size, np.nan)
    head = _headline_mask(cols)
    cols["family"][pair] = np.where(head[pair], FAMILY_HEADLINE, FAMILY_SECONDARY)
    hp = np.flatnonzero(head)
    if hp.size:
        alpha = options.alpha
        p, p_tost = cols["p"][hp].astype(float), cols["p_tost"][hp].astype(float)
        mean, sd, se, n = (cols[c][hp].astype(float) for c in ("_mean_d", "_sd_d", "_se_d", "n"))
        low_m, high_m = cols["_low_m"][hp].astype(float), cols["_high_m"][hp].astype(float)
        rho = np.nan_to_num(cols["_rho"][hp].astype(float)) if "_rho" in cols else np.zeros(hp.size)
        family = family_of_condition[cols["condition_id"][hp].astype(np.int64)]
        m, level, level_eq = np.zeros(hp.size), np.full(hp.size, np.nan), np.full(hp.size, np.nan)
        p_holm, p_tost_holm, size = np.full(hp.size, np.nan), np.full(hp.size, np.nan), np.zeros(hp.size)
        order = np.argsort(family, kind="stable")
        bounds = np.flatnonzero(np.diff(family[order])) + 1
        for idx in np.split(order, bounds):  # one Holm family per report (or per ``family_by`` value)
            m[idx] = np.isfinite(p[idx]).sum()
            size[idx] = idx.size
            level[idx] = stats.holm_levels(p[idx], alpha)
            level_eq[idx] = stats.holm_levels(p_tost[idx], alpha)
            p_holm[idx] = stats.holm(p[idx])
            p_tost_holm[idx] = stats.holm(p_tost[idx])
        dec_low, dec_high = stats.t_interval(mean, se, n - 1, level)
        eq_low, eq_high = stats.t_interval(mean, se, n - 1, 2 * level_eq)
        higher = np.array([METRICS[x].higher_is_better for x in cols["metric"][hp]], dtype=bool)
        a_ahead = np.where(mean != 0, ((mean > 0) == higher).astype(float), np.nan)
        words, winner, margin_words = stats.decide(cols["framework_a"][hp], cols["framework_b"][hp], a_ahead=a_ahead,
                                                   dec_low=dec_low, dec_high=dec_high, eq_low=eq_low, eq_high=eq_high,
                                                   margin_low=low_m, margin_high=high_m, n=n)
        # Seed planning at the first Holm step (α / family size): conservative, stated in the report.
        hint_level = alpha / np.maximum(np.maximum(m, size), 1)
        hint = np.full(hp.size, np.nan)
        for lo, hi, lv in set(zip(low_m.tolist(), high_m.tolist(), hint_level.tolist())):  # margins differ per metric
            idx = (low_m == lo) & (high_m == hi) & (hint_level == lv)
            hint[idx] = stats.seeds_needed(mean[idx], sd[idx], n[idx], level=lv, low=lo, high=hi, rho=rho[idx])
        ratio = cols["comparison"][hp] == "ratio"

        def shown(x: np.ndarray) -> np.ndarray:  # analysis scale → shown scale
            return np.where(ratio, np.exp(x), x)

        cols["family_size"][hp] = m
        cols["p_holm"][hp] = p_holm
        cols["decision_level"][hp] = level
        cols["dec_low"][hp], cols["dec_high"][hp] = shown(dec_low), shown(dec_high)
        cols["p_tost_holm"][hp] = p_tost_holm
        cols["eq_low"][hp], cols["eq_high"][hp] = shown(eq_low), shown(eq_high)
        cols["verdict"][hp] = words
        cols["winner"][hp] = winner
        cols["margin_words"][hp] = margin_words
        cols["seeds_needed"][hp] = np.where(words == stats.VERDICT_INCONCLUSIVE, hint, np.nan)
        # Resampled splits: the interval cannot shrink below what their overlap leaves, whatever the seeds.
        floor = special.ndtri(1 - hint_level / 2) * np.sqrt(rho) * sd
        beyond = (words == stats.VERDICT_INCONCLUSIVE) & (rho > 0) & (hint > 1000) & np.isfinite(floor)
        for k in np.flatnonzero(beyond):
            unit = "pp" if cols["comparison"][hp[k]] == "difference" else "(log ratio)"
            cols["note"][hp[k]] = (f"no number of seeds settles it at 80 % power: with resampled splits the interval "
                                   f"cannot get narrower than ±{floor[k]:.2g} {unit} (the splits overlap); a fixed "
                                   "split (data.split_seed) answers it for these data")
    positions = np.flatnonzero(pair)
    cols["phrase"][positions] = [effect_phrase(METRICS[x], a, b, e) for x, a, b, e in zip(
        cols["metric"][positions], cols["framework_a"][positions], cols["framework_b"][positions],
        cols["estimate"][positions].astype(float))]
    return {k: v for k, v in cols.items() if not k.startswith("_")}


def mcnemar_rows(runs: pd.DataFrame, predictions: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per (condition, seed, framework pair): how often exactly one framework was right on the samples
    both predicted. Descriptive only — no test, no verdict (one seed is one training run, and its
    disagreements mostly measure training variance, not the framework).

    The runner promises the same ``sample_index`` set (and labels) for the same seed; when that does
    not hold the counts use the shared samples and the row's note says what differed.
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
                         "estimate": res.accuracy_difference_pp, "n": res.n,
                         "disagree_a": res.a_only, "disagree_b": res.b_only,
                         "note": "; ".join(note) or f"only {a} right: {res.a_only}, only {b} right: {res.b_only}"})
    if not rows:
        return {}, notes
    return _part({k: np.array([r[k] for r in rows], dtype=object if k in TEXT_COLUMNS else float)
                  for k in rows[0]}), notes


def _attach(cols: dict[str, np.ndarray], conditions: pd.DataFrame, options: AnalysisOptions) -> pd.DataFrame:
    """Condition columns, metric facts and constant columns; one DataFrame in the exact column order
    of SUMMARY_COLUMNS."""
    if not cols or not len(cols["row_kind"]):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SUMMARY_COLUMNS})
    size = len(cols["row_kind"])
    cond = cols["condition_id"].astype(np.int64)  # conditions_table numbers conditions 0, 1, …
    for c in ("condition", *CONDITION_COLUMNS):
        cols[c] = conditions[c].to_numpy()[cond]
    cols["condition_id"] = cond
    infos = [METRICS[m] for m in cols["metric"]]
    cols["metric_label"] = np.array([i.label for i in infos], dtype=object)
    cols["metric_kind"] = np.array([i.kind for i in infos], dtype=object)
    # how the row's numbers are expressed (analysis.columns): value | difference (A − B) | ratio (A / B)
    cols["scale"] = np.array([c if c in ("difference", "ratio") else "value" for c in cols["comparison"]], dtype=object)
    cols["higher_is_better"] = np.array([i.higher_is_better for i in infos], dtype=bool)
    cols["confidence"] = np.full(size, options.confidence)
    cols["n_resamples"] = np.full(size, options.n_resamples)
    data = {}
    for c in SUMMARY_COLUMNS:
        v = cols.get(c)
        if v is None:
            v = np.full(size, None if c in TEXT_COLUMNS else np.nan, dtype=object if c in TEXT_COLUMNS else float)
        if c in TEXT_COLUMNS:
            data[c] = pd.Series(v, dtype=object)  # missing text is None (``_concat`` fills it so)
        elif c in ("seed", "n", "seeds_needed", "family_size", "seeds_only_a", "seeds_only_b", "disagree_a",
                   "disagree_b"):
            data[c] = pd.array(np.asarray(v, dtype=float), dtype="Float64").astype("Int64")
        else:
            data[c] = v
    return pd.DataFrame(data)
