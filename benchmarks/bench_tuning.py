"""Does ``auto`` train as fast as the faster forced layout? One cell per setting, back to back.

For each framework, ``python -m runner.cell`` (one fresh process each: the import, the data, the model)
runs with the layout forced to every candidate and with ``auto`` (measured on this device before the
cell's clocks: ``runner/cell/tuning.py``), in the order auto, forced…, repeated ``--rounds`` times
alternating the order, and prints the training images/s (median post-warm-up epoch) of each, the choice
``auto`` made, and whether ``auto`` is within 5 % of the faster forced layout.

    uv run python benchmarks/bench_tuning.py [--frameworks pytorch keras keras_jax keras_torch]
                                             [--epochs 3] [--rounds 1] [hydra overrides of the cell …]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frameworks.knobs import cpu_name  # noqa: E402  (numpy only: no deep-learning framework in this process)

KNOB = {"pytorch": ("memory_format", ("contiguous", "channels_last")),
        "keras": ("data_format", ("channels_last", "channels_first")),
        "keras_jax": ("data_format", ("channels_last", "channels_first")),
        "keras_torch": ("data_format", ("channels_last", "channels_first"))}


def one_cell(framework: str, value: str, epochs: int, extra: list[str], out: Path) -> dict:
    knob = KNOB[framework][0]
    args = [f"framework={framework}", "seed=0", f"train.epochs={epochs}", f"framework.{knob}={value}",
            "train.memory.fresh_process=false", f"hydra.run.dir={out}", *extra]
    proc = subprocess.run([sys.executable, "-m", "runner.cell", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: runner.cell {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    row = pd.read_parquet(out / "runs.parquet").iloc[0]
    tuned = json.loads(row["tuning"] or "{}").get(knob, {})
    return {"value": value, "img_s": float(row["images_per_second"]), "epoch_s": float(row["median_epoch_seconds"]),
            "choice": tuned.get("choice"), "tuning": tuned.get("seconds_per_step")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", default=list(KNOB), choices=list(KNOB))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    args, extra = parser.parse_known_args(argv)
    print(f"bench_tuning: {cpu_name()}; runner.cell seed 0, {args.epochs} epochs, images/s of the median "
          f"post-warm-up epoch; {args.rounds} round(s) alternating the order", flush=True)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        for fw in args.frameworks:
            knob, values = KNOB[fw]
            runs: dict[str, list[dict]] = {v: [] for v in ("auto", *values)}
            for r in range(args.rounds):
                order = ["auto", *values] if r % 2 == 0 else [*reversed(values), "auto"]
                for value in order:
                    runs[value].append(one_cell(fw, value, args.epochs, extra, Path(tmp) / f"{fw}-{value}-{r}"))
            img = {v: statistics.median(x["img_s"] for x in rs) for v, rs in runs.items()}
            best = max(values, key=lambda v: img[v])
            within = img["auto"] >= 0.95 * img[best]
            ok = ok and within
            choices = sorted({x["choice"] for x in runs["auto"]})
            print(f"{fw:<12} {knob}: " + ", ".join(f"{v} {img[v]:.0f} img/s" for v in values)
                  + f"; auto chose {'/'.join(map(str, choices))} → {img['auto']:.0f} img/s = "
                  f"{img['auto'] / img[best]:.3f} × the faster forced ({best}) — "
                  + ("within 5 %" if within else "NOT within 5 %"), flush=True)
            for x in runs["auto"]:
                if x["tuning"]:
                    print(f"{'':<12} the tuner's seconds per step: "
                          + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in x["tuning"].items()), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
