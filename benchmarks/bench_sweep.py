"""Sweep efficiency: how much of the slots' time the runner spends running cells.

    efficiency = Σ(cell compute seconds) / (wall seconds × slots)

where a cell's compute seconds are its row's ``end_time - start_time`` (``run_cell`` from first to
last instruction) and ``slots`` the number of places a cell can run at once (one here: a CPU-only
node runs one timing cell at a time). Two walls are reported:

- dispatch window: first cell start → last cell end. What the dispatcher costs between cells
  (Ray round trips, writing fragments, per-slot locking). Target ≥ 0.90.
- end to end: ``run_sweep`` call → return, including Ray start-up, actor start (framework
  imports), the equivalence gate and consolidation: fixed costs that a longer sweep amortises.

    uv run python benchmarks/bench_sweep.py                       # fake framework, +sweep=seeds, ~1 s cells
    uv run python benchmarks/bench_sweep.py --real --seeds 3      # keras + pytorch, tiny synthetic data

The driver process imports no deep-learning framework (the actors do).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402

from runner import CONF_DIR  # noqa: E402
from runner.sweep.run import run_sweep  # noqa: E402


def overrides(args: argparse.Namespace, out: Path) -> list[str]:
    common = ["+sweep=seeds", f"grid.seed=[{','.join(map(str, range(args.seeds)))}]", "grid.batch_size=[32]",
              "grid.device=[cpu]", "data=synthetic", "train=tiny", "runner.progress=false", "report.enabled=false",
              "deploy=off"]  # the dispatcher's efficiency, not the deployment step's
    if args.real:
        return [*common, "model.filters=[8,16]", "model.dense_units=32", "runner.parity_gate=true"]
    # 4 classes × 32 images at 16×16 → ~ 46 training images = 2 steps of batch 32 per cell.
    return [*common, "framework=fake", "grid.framework=[fake]", "data.samples_per_class=16",
            f"framework.fake.step_sleep_s={args.step_sleep}", "runner.parity_gate=false"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="keras + pytorch instead of the fake framework")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10, as +sweep=seeds)")
    parser.add_argument("--step-sleep", type=float, default=0.5, help="fake framework: seconds per training step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    out = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    ov = overrides(args, out)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=ov)
    t0 = time.perf_counter()
    outcome = run_sweep(cfg, out_dir=out, overrides=ov)
    end_to_end = time.perf_counter() - t0

    import pyarrow.parquet as pq

    runs = pq.read_table(out / "runs.parquet").to_pandas()
    compute = float((runs.end_time - runs.start_time).dt.total_seconds().sum())
    window = float((runs.end_time.max() - runs.start_time.min()).total_seconds())
    slots = max(outcome.slots, 1)
    frameworks = sorted(runs.framework.unique())
    print(f"command: python benchmarks/bench_sweep.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"sweep:   {len(runs)} cells ({', '.join(frameworks)} × {args.seeds} seeds), "
          f"{(runs.status == 'ok').sum()} ok, exit code {outcome.exit_code}, {slots} slot(s); results in {out}")
    print(f"cells:   Σ compute {compute:.2f} s, mean {compute / max(len(runs), 1):.2f} s per cell")
    print(f"dispatch window  {window:8.2f} s   efficiency {compute / (window * slots):.3f}   (target >= 0.90)")
    print(f"end to end       {end_to_end:8.2f} s   efficiency {compute / (end_to_end * slots):.3f}   "
          f"(includes Ray start, actor start-up, gate, consolidation: {end_to_end - window:.1f} s)")
    return 0 if outcome.exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
