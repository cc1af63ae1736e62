"""Do the verdicts repeat? The default job twice back to back, and once with the seeds in reversed cell order.

A measurement that means what its label says gives the same answer within its own sampling error when
it is taken again — and an order effect (a long-lived actor's memory, a warm-up that lands on whichever
cell comes first) shows up as a disagreement between the normal and the reversed order. For every
headline row of the first run's verdict table (question, condition, pair) this prints the three
estimates, whether each pair of runs agrees within sampling error — the two estimates differ by less
than 2.58 × √(SE₁² + SE₂²) on the analysis scale (log ratio, or percentage points): a 99 % agreement
test, so a calibrated measurement fails it about 1 time in 100 per row — and whether a verdict flips to
the other framework (a "better" for A in one run and for B in another).

    uv run python benchmarks/bench_repeat.py [--out DIR] [--keep] [hydra overrides of the job …]

The job is ``python -m runner`` with the given overrides (none: the README's default job). The reversed
run passes ``grid.seed`` in reverse order and another ``runner.interleave_seed`` (the frameworks of a
seed run in another order too). Exit 0 when every row agrees and none flips, 1 otherwise.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_job(out: Path, overrides: list[str]) -> float:
    """``python -m runner`` into ``out``; its wall seconds. Raises on a failed job."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runner", *overrides, "runner.progress=false", f"hydra.run.dir={out}"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: the job in {out} exited {proc.returncode}:\n{proc.stdout[-3000:]}")
    return time.perf_counter() - t0


def seeds_of(overrides: list[str]) -> list[int]:
    """The grid's seeds after the overrides (composed like the runner composes them)."""
    from hydra import compose, initialize_config_dir

    from runner import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return [int(s) for s in cfg.grid.seed]


def headline(summary_path: Path) -> dict[tuple, pd.Series]:
    """Headline rows with a measured estimate, keyed by (condition, metric, A, B), with the analysis-scale
    estimate and standard error recovered from the interval (t with n − 1 degrees of freedom)."""
    s = pd.read_parquet(summary_path)
    rows = s[(s["row_kind"] == "pair") & (s["family"] == "headline") & s["estimate"].notna()].copy()
    ratio = rows["comparison"] == "ratio"
    scale = lambda x: x.where(~ratio, x.map(lambda v: math.log(v) if v and v > 0 else float("nan")))  # noqa: E731
    t = rows["n"].astype(float).map(lambda n: sps.t.ppf(0.975, n - 1) if n >= 2 else float("nan"))
    rows["est"] = scale(rows["estimate"].astype(float))
    rows["se"] = (scale(rows["ci_high"].astype(float)) - scale(rows["ci_low"].astype(float))) / (2 * t)
    keys = zip(rows["condition"], rows["metric"], rows["framework_a"], rows["framework_b"])
    return {key: row for key, (_, row) in zip(keys, rows.iterrows())}


def winner(verdict: str, a: str, b: str) -> str | None:
    return a if verdict == f"{a} better" else b if verdict == f"{b} better" else None


def compare(runs: dict[str, dict[tuple, pd.Series]]) -> tuple[list[dict], bool]:
    names = list(runs)
    first = runs[names[0]]
    out, ok = [], True
    for key, row in first.items():
        entry = {"condition": key[0], "metric": key[1], "pair": f"{key[2]} vs {key[3]}", "question": row.get("metric_label")}
        for name in names:
            r = runs[name].get(key)
            entry[name] = None if r is None else (float(r["estimate"]), str(r["verdict"]), float(r["est"]), float(r["se"]))
        checks = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                ra, rb = entry[a], entry[b]
                if ra is None or rb is None:
                    checks.append((f"{a}~{b}", False, "missing"))
                    ok = False
                    continue
                bound = 2.58 * math.sqrt(ra[3] ** 2 + rb[3] ** 2)
                gap = abs(ra[2] - rb[2])
                agree = gap <= 1e-12 or (math.isfinite(bound) and gap < bound)  # identical estimates agree
                wa, wb = winner(ra[1], key[2], key[3]), winner(rb[1], key[2], key[3])
                flip = wa is not None and wb is not None and wa != wb
                ok = ok and agree and not flip
                checks.append((f"{a}~{b}", agree and not flip,
                               f"|Δ| {abs(ra[2] - rb[2]):.4f} {'<' if agree else '≥'} {bound:.4f}" + (" FLIP" if flip else "")))
        entry["checks"] = checks
        out.append(entry)
    return out, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where the three runs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args, overrides = parser.parse_known_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-repeat-"))
    root.mkdir(parents=True, exist_ok=True)
    seeds = seeds_of(overrides)
    plan = {"run1": overrides, "run2": overrides,
            "reversed": [*overrides, f"grid.seed=[{','.join(str(s) for s in reversed(seeds))}]", "runner.interleave_seed=1"]}
    walls, runs = {}, {}
    for name, extra in plan.items():
        print(f"{name}: python -m runner {' '.join(extra)}", flush=True)
        walls[name] = run_job(root / name, extra)
        runs[name] = headline(root / name / "summary.parquet")
        print(f"  {walls[name]:.0f} s", flush=True)
    rows, ok = compare(runs)
    print("\nheadline rows: estimate (verdict) per run; agreement within 2.58·√(SE₁²+SE₂²) on the analysis scale; flips")
    for r in rows:
        print(f"- {r['question']} · {r['pair']} · {r['condition']}")
        for name in runs:
            v = r[name]
            print(f"    {name:<9} " + ("missing" if v is None else f"{v[0]:.4g} ({v[1]}), SE {v[3]:.4f}"))
        for label, good, words in r["checks"]:
            print(f"    {label:<17} {'agree' if good else 'DISAGREE'}: {words}")
    print(f"\n{'every headline row agrees within sampling error and no verdict flips' if ok else 'DISAGREEMENT (see above)'}"
          f"; wall: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()) + f"; runs in {root}")
    if args.out is None and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
