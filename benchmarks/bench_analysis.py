"""Benchmark: analyse 1,000,000 synthetic result rows (target < 10 s).

A result row is one measured value: (condition, framework, seed, metric) → value, i.e. one metric
cell of a runs-table row. The default 1,000,000 rows are 100,000 runs-like rows (the runs-table
columns the analysis reads: condition columns, framework, seed, status) × 10 metrics, over 5,000
conditions × 2 frameworks × 10 seeds, with a planted speed difference. ``--layout wide`` makes
``--rows`` count runs rows instead (each carrying every metric: 10× the work).

Timed: ``analysis.summary.summarize`` — grouping, per-framework t-intervals (IQM bootstrap intervals
from 10 seeds on, quality metrics only; cost ∝ groups × n_resamples), paired differences/ratios with
the paired t procedure, TOST, the headline family (Holm, decision intervals, verdicts, seeds hints)
— at the configured ``n_resamples`` (default 2000, as in conf/report/default.yaml). Not timed:
building the input frame, and the HTML report (its figures are drawn per condition, not per row).

    uv run python benchmarks/bench_analysis.py [--rows 1000000] [--seeds 10] [--frameworks 2] [--metrics …]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analysis.metrics import METRICS
from analysis.options import AnalysisOptions
from analysis.summary import summarize

BATCH_SIZES = np.array([16, 32, 64, 128, 256, 512, 1024, 2048])
DEFAULT_METRICS = ["accuracy", "f1", "roc_auc", "log_loss", "median_epoch_seconds", "images_per_second",
                   "latency_p50_ms", "throughput_images_per_second", "peak_host_rss_mib", "peak_device_memory_mib"]


def synthetic_runs(rows: int, seeds: int, frameworks: int, metrics: list[str], random_state: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(random_state)
    names = ["keras", "pytorch", "keras_jax", "keras_torch"][:frameworks]
    per_condition = seeds * frameworks
    n_cond = rows // per_condition
    cond = np.repeat(np.arange(n_cond), per_condition)
    fw = np.tile(np.repeat(np.arange(frameworks), seeds), n_cond)
    seed = np.tile(np.arange(seeds), n_cond * frameworks)
    n = cond.size
    frame = pd.DataFrame({
        "data": pd.Categorical.from_codes(cond // 64 % 1000, [f"set{i}" for i in range(1000)]).astype(str),
        "model": np.where(cond // 8 % 2 == 0, "small_cnn", "capstone_cnn"),
        "epochs": 3,
        "batch_size": BATCH_SIZES[cond % 8],
        "device_kind": np.where(cond // 16 % 2 == 0, "cpu", "gpu"),
        "device_name": np.where(cond // 16 % 2 == 0, "Test CPU", "Test GPU"),
        "precision_policy": np.where(cond // 32 % 2 == 0, "fp32", "tf32"),
        "execution_mode": "default",
        "pipeline": "device",
        "deterministic": False,
        "parity_mode": np.where(cond // 64000 % 2 == 0, "strict", "framework_defaults"),
        "framework": np.asarray(names, dtype=object)[fw],
        "seed": seed,
        "status": "ok",
        "cell_id": np.char.add("c", np.arange(n).astype(str)),
    })
    speed = np.array([1.0, 0.8, 0.9, 1.1])[fw]  # planted: framework 1 is 20 % faster
    seed_effect = rng.normal(0, 0.02, n_cond * seeds)[cond * seeds + seed]  # shared by frameworks: pairing helps
    for m in metrics:
        info = METRICS[m]
        noise = rng.normal(0, 0.01, n)
        if info.proportion:
            frame[m] = np.clip(0.85 + seed_effect + noise, 0, 1)
        elif info.kind in ("time", "memory") or m == "log_loss":
            frame[m] = (speed if info.kind == "time" else 1.0) * np.exp(seed_effect + noise) * 10
        else:
            frame[m] = np.exp(seed_effect + noise) * 100 / speed
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--frameworks", type=int, default=2, choices=(2, 3, 4))
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS, choices=sorted(METRICS))
    parser.add_argument("--n-resamples", type=int, default=AnalysisOptions().n_resamples)
    parser.add_argument("--layout", choices=("long", "wide"), default="long",
                        help="long: --rows counts metric values; wide: --rows counts runs rows")
    args = parser.parse_args()
    runs_rows = args.rows // len(args.metrics) if args.layout == "long" else args.rows
    frame = synthetic_runs(runs_rows, args.seeds, args.frameworks, args.metrics)
    options = AnalysisOptions(n_resamples=args.n_resamples)
    start, cpu = time.perf_counter(), time.process_time()
    summary, conditions, _ = summarize(frame, options, None, metrics=args.metrics)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    pairs = summary[summary["row_kind"] == "pair"]
    print(f"result rows (metric values)={len(frame) * len(args.metrics):,} = runs rows {len(frame):,} × "
          f"{len(args.metrics)} metrics; conditions={len(conditions):,} frameworks={args.frameworks} seeds={args.seeds} "
          f"n_resamples={args.n_resamples}")
    print(f"summary rows={len(summary):,} (pairs {len(pairs):,}); verdicts: "
          + ", ".join(f"{k} {v:,}" for k, v in pairs["verdict"].value_counts().items()))
    print(f"analysis time: {seconds:.2f} s wall, {cpu:.2f} s CPU (target < 10 s)")


if __name__ == "__main__":
    main()
