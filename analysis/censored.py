"""Time to a trained model, with honest censoring: restricted times, reach rates, and the survival view.

A cell trained to a target (``train.target``: a validation metric and threshold, ``epochs`` = the budget)
either reached it — at ``epochs_to_target``, after ``train_seconds_to_target`` of training — or missed it
within the budget. A miss is never dropped and never given an invented time: it is **censored at its
budget**. The headline "Trains faster" metric is then the time to target *restricted to the budget*:

    time_to_target_seconds = train_seconds_to_target   if reached
                           = train_seconds (the whole budget's training time)   if missed

— per cell, paired by seed and compared on the log scale by the report's one paired t procedure
(``analysis.summary``), like every other time ratio. A miss counts as at least as slow as the whole
budget (a lower bound of its true time: MLPerf counts it as infinitely slow, which no interval can
carry), so the estimate is labelled "restricted to N epochs". Its calibration under censoring — an A/A
world with ~20 % of cells censored, and the power for a 1.3× difference — is simulated in
``benchmarks/bench_calibration.py``.

The decomposition is exact on the log scale: time_to_target = epochs_to_target × seconds per epoch, so
the paired ratios multiply (``epochs_to_target_restricted`` × ``seconds_per_epoch_to_target``): "keras
needs 1.3× the epochs, each in 0.6× the time".

Per framework, the **reach rate** (seeds that reached the target within the budget, with a Wilson
interval) is reported next to it, and ``reach_curves`` gives the survival view AlgoPerf's performance
profiles give: the share of seeds that have reached the target by each training second and epoch.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

#: Derived columns (``derive``), all per cell: the analysis compares them like any runs column.
DERIVED = ("time_to_target_seconds", "epochs_to_target_restricted", "seconds_per_epoch_to_target",
           "wall_time_to_target_seconds", "mean_epoch_seconds")


def has_target(runs: pd.DataFrame) -> pd.Series:
    """Rows of cells that trained to a target (and recorded whether they reached it)."""
    if "target" not in runs or "reached_target" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["target"].notna() & runs["reached_target"].notna()


def derive(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the restricted time-to-target columns and the mean epoch time (module doc)."""
    out = runs.copy()
    epochs_run = out["epochs_run"] if "epochs_run" in out else out.get("epochs")
    if "train_seconds" in out and epochs_run is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["mean_epoch_seconds"] = out["train_seconds"].astype(float) / epochs_run.astype(float)
    target = has_target(out)
    if not target.any():
        return out
    reached = out["reached_target"].fillna(False).astype(bool)
    t = np.where(reached, out["train_seconds_to_target"].astype(float), out["train_seconds"].astype(float))
    e = np.where(reached, out["epochs_to_target"].astype(float), epochs_run.astype(float))
    wall = np.where(reached, out["wall_seconds_to_target"].astype(float), out["training_wall_seconds"].astype(float))
    nan = np.full(len(out), np.nan)
    out["time_to_target_seconds"] = np.where(target, t, nan)
    out["epochs_to_target_restricted"] = np.where(target, e, nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["seconds_per_epoch_to_target"] = np.where(target, t / e, nan)
    out["wall_time_to_target_seconds"] = np.where(target, wall, nan)
    return out


def wilson(k: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n (well-behaved at k = 0 and k = n, unlike the Wald one)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    z = special.ndtri(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def reach_rates(runs: pd.DataFrame, condition_ids: np.ndarray, confidence: float = 0.95) -> pd.DataFrame:
    """Per (condition, framework) with a target: seeds run, seeds that reached it, the rate and its interval."""
    target = has_target(runs).to_numpy()
    if not target.any():
        return pd.DataFrame(columns=["condition_id", "framework", "n", "reached", "rate", "ci_low", "ci_high",
                                     "target", "budget"])
    frame = pd.DataFrame({"condition_id": condition_ids[target], "framework": runs["framework"].to_numpy()[target],
                          "reached": runs["reached_target"].to_numpy()[target].astype(bool),
                          "target": runs["target"].to_numpy()[target], "budget": runs["epochs"].to_numpy()[target]})
    agg = frame.groupby(["condition_id", "framework"], sort=True).agg(
        n=("reached", "size"), reached=("reached", "sum"), target=("target", "first"), budget=("budget", "first"))
    agg = agg.reset_index()
    agg["rate"] = agg["reached"] / agg["n"]
    agg["ci_low"], agg["ci_high"] = wilson(agg["reached"].to_numpy(), agg["n"].to_numpy(), confidence)
    return agg


def reach_curves(runs: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Per framework (cells with a target): the share of its seeds that have reached the target by each
    training second (``seconds``/``share``) and each epoch (``epochs``/``share_by_epoch``), and the budget.
    A step function from 0 that never reaches 1 when some seeds missed."""
    out: dict[str, dict[str, np.ndarray]] = {}
    rows = runs[has_target(runs)]
    for fw, grp in rows.groupby("framework"):
        n = len(grp)
        reached = grp["reached_target"].astype(bool).to_numpy()
        secs = np.sort(grp["train_seconds_to_target"].to_numpy(dtype=float)[reached])
        eps = np.sort(grp["epochs_to_target"].to_numpy(dtype=float)[reached])
        budget_s = float(np.nanmax(grp["train_seconds"].to_numpy(dtype=float)))
        budget_e = float(np.nanmax(grp["epochs"].to_numpy(dtype=float)))
        out[fw] = {"seconds": np.concatenate([[0.0], secs, [budget_s]]),
                   "share": np.concatenate([[0.0], np.arange(1, len(secs) + 1) / n, [len(secs) / n]]),
                   "epochs": np.concatenate([[0.0], eps, [budget_e]]),
                   "share_by_epoch": np.concatenate([[0.0], np.arange(1, len(eps) + 1) / n, [len(eps) / n]]),
                   "n": np.array([n]), "reached": np.array([int(reached.sum())])}
    return out


def budget_words(runs: pd.DataFrame) -> str:
    """``restricted to 15 epochs`` (or a range, when conditions differ)."""
    budgets = sorted({int(b) for b in runs.loc[has_target(runs), "epochs"].dropna()})
    if not budgets:
        return ""
    shown = str(budgets[0]) if len(budgets) == 1 else f"{budgets[0]}–{budgets[-1]}"
    return f"restricted to {shown} epoch{'s' if budgets[-1] != 1 else ''}"


def decomposition_phrase(a: str, epochs_ratio: float, seconds_ratio: float) -> str:
    """``keras needs 1.30× the epochs, each in 0.60× the time`` (A relative to B)."""
    if not (math.isfinite(epochs_ratio) and math.isfinite(seconds_ratio)):
        return ""
    return f"{a} needs {epochs_ratio:.2f}× the epochs, each in {seconds_ratio:.2f}× the time"
