"""Chaos run: sweeps of the fake framework while faults are injected; then every cell must be there once.

    uv run python benchmarks/chaos.py --faults 30 --seed 0

Each invocation of ``python -m runner`` (framework=fake, data=synthetic, train=tiny) gets a seeded
random plan: 1–4 worker kills (``SIGKILL``, ``SIGSEGV`` or ``SIGABRT`` sent to a ``ray::CellWorker``
of THIS sweep's Ray, at a random moment) and, most of the time, a ``SIGINT`` or ``SIGTERM`` to the
driver at a random moment. An interrupted sweep is resumed with the command it printed; a finished
one is checked and a new sweep starts, until at least ``--faults`` faults were injected. Checks per
finished sweep:

- ``runs``: one row per planned cell (none lost, none duplicated), all ``ok``, one sweep id;
- ``epochs``: ``train.epochs`` rows per cell, no (cell, epoch) twice;
- ``predictions``: ``test_samples`` rows per cell, no (cell, sample) twice;
- ``fragments/``: one per planned cell; exit codes only 0 / 130 / 143 (or 1 for a Ray that did not
  start: that invocation is simply repeated).

Prints one line per invocation and the totals; exits 1 if any cell was lost or duplicated. Only
processes of the sweeps it started are signalled (found through the driver's Ray session dir).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from runner_support import FAKE  # noqa: E402  (the tests' tiny fake-framework sweep, kept in one place)

WORKER_SIGNALS = (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def workers_of(driver_pid: int) -> list[int]:
    """``ray::CellWorker`` processes of the local Ray that ``driver_pid`` started (children of its raylet;
    the session dir is named after the head process, a child of the driver)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    heads = [p for p in pids if _ppid(p) == driver_pid and " start --head" in _cmdline(p)]
    if not heads:
        return []
    session = re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{heads[0]}(?![0-9])")
    raylets = {p for p in pids if "raylet" in _cmdline(p) and session.search(_cmdline(p))}
    return [p for p in pids if _ppid(p) in raylets and "CellWorker" in _cmdline(p)]


class Invocation:
    """One ``python -m runner`` run with its fault plan executed from a thread."""

    def __init__(self, argv: list[str], rng: np.random.Generator, log_path: Path, nice: int = 0) -> None:
        self.argv = argv
        self.nice = nice
        self.log_path = log_path
        self.kills = int(rng.integers(1, 5))
        self.kill_signals = [WORKER_SIGNALS[int(i)] for i in rng.integers(0, len(WORKER_SIGNALS), self.kills)]
        self.kill_delays = rng.uniform(0.2, 2.5, self.kills)
        driver = rng.choice(3, p=[0.15, 0.425, 0.425])
        self.driver_signal = (None, signal.SIGINT, signal.SIGTERM)[int(driver)]
        self.driver_delay = float(rng.uniform(0.0, 6.0))
        self.injected: list[str] = []

    def run(self, timeout: float) -> tuple[int, str]:
        with open(self.log_path, "w") as log_file:
            prefix = ["nice", "-n", str(self.nice)] if self.nice else []
            proc = subprocess.Popen([*prefix, sys.executable, "-m", "runner", *self.argv], cwd=ROOT, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", PYTHONUNBUFFERED="1"))
            thread = threading.Thread(target=self._inject, args=(proc,), daemon=True)
            thread.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            thread.join(timeout=5)
        return proc.returncode, self.log_path.read_text(errors="replace")

    def _inject(self, proc: subprocess.Popen) -> None:
        deadline = time.time() + 400
        while proc.poll() is None and not workers_of(proc.pid) and time.time() < deadline:
            time.sleep(0.2)  # the sweep's actors are up
        for sig, delay in zip(self.kill_signals, self.kill_delays):
            time.sleep(float(delay))
            workers = workers_of(proc.pid)
            if proc.poll() is not None or not workers:
                return
            try:
                os.kill(workers[0], sig)
                self.injected.append(f"worker {signal.Signals(sig).name}")
            except OSError:
                pass
            time.sleep(0.5)  # let Ray notice before the next fault
        if self.driver_signal is not None:
            time.sleep(self.driver_delay)
            if proc.poll() is None:
                proc.send_signal(self.driver_signal)
                self.injected.append(f"driver {signal.Signals(self.driver_signal).name}")


def check_sweep(out: Path) -> dict[str, int]:
    """Counts of planned / present / lost / duplicated cells and inconsistent rows of a finished sweep."""
    manifest = json.loads((out / "sweep.json").read_text())
    planned = set(manifest["cells"])
    epochs_per_cell = int(manifest["config"]["train"]["epochs"])
    runs = pq.read_table(out / "runs.parquet").to_pandas()
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    preds = pq.read_table(out / "predictions.parquet").to_pandas()
    counts = Counter(runs.cell_id)
    fragments = {p.name for p in (out / "fragments").iterdir() if p.is_dir() and not p.name.startswith(".")}
    bad = 0
    for cid, row in runs.set_index("cell_id").iterrows() if counts and max(counts.values()) == 1 else []:
        e = epochs[epochs.cell_id == cid]
        p = preds[preds.cell_id == cid]
        bad += int(len(e) != epochs_per_cell or e.epoch.nunique() != len(e))
        bad += int(len(p) != row.test_samples or p.sample_index.nunique() != len(p))
    return {"planned": len(planned), "present": len(set(counts) & planned), "lost": len(planned - set(counts)),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1), "unplanned": len(set(counts) - planned),
            "not_ok": int((runs.status != "ok").sum()), "sweep_ids": runs.sweep_id.nunique(),
            "inconsistent": bad, "fragments": len(fragments),
            "retried_rows": int((runs.attempt > 1).sum()),
            "signals_recorded": sum(1 for c in runs.get("retry_causes", []) if isinstance(c, str) and c
                                    for x in json.loads(c) if x.get("signal"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=30, help="inject at least this many faults (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cells", type=int, default=10, help="cells (seeds) per sweep")
    ap.add_argument("--step-sleep", type=float, default=0.15, help="fake framework: seconds per training step")
    ap.add_argument("--out", type=Path, default=None, help="where the sweeps go (default: a temporary dir)")
    ap.add_argument("--max-invocations", type=int, default=60)
    ap.add_argument("--nice", type=int, default=0, help="run the sweeps under `nice -n N` (negative needs root: "
                    "on a machine loaded by others, Ray's agents otherwise miss their start-up deadline)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    root = args.out or Path(tempfile.mkdtemp(prefix="kvp-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"chaos: seed {args.seed}, ≥{args.faults} faults, {args.cells} cells per sweep, nice {args.nice}, in {root}",
          flush=True)
    seeds = ",".join(str(s) for s in range(args.cells))
    faults = Counter()
    totals = Counter()
    exits = Counter()
    sweep_no, invocation_no, resume_cmd = 0, 0, None
    out = None
    while invocation_no < args.max_invocations:
        if resume_cmd is None:
            if sum(faults.values()) >= args.faults:
                break
            sweep_no += 1
            out = root / f"sweep{sweep_no:02d}"
            argv_ = [*FAKE, "grid.batch_size=[8]", f"grid.seed=[{seeds}]", f"framework.fake.step_sleep_s={args.step_sleep}",
                     "runner.max_retries=10", "runner.max_actor_restarts=100", "runner.stop_grace_s=2",
                     f"hydra.run.dir={out}"]
        else:
            argv_ = shlex.split(resume_cmd)[3:]
        invocation_no += 1
        inv = Invocation(argv_, rng, root / f"invocation{invocation_no:03d}.log", args.nice)
        t0 = time.time()
        code, output = inv.run(timeout=900)
        exits[code] += 1
        faults.update(inv.injected)
        found = re.findall(r"resume with: (python -m runner .*)", output)
        print(f"  #{invocation_no:02d} sweep{sweep_no:02d} exit {code:3d} in {time.time() - t0:5.1f}s  "
              f"faults: {', '.join(inv.injected) or '-'}", flush=True)
        if code == 0:
            counts = check_sweep(out)
            totals.update(counts)
            print(f"     sweep{sweep_no:02d} complete: " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
            resume_cmd = None
        elif code in (130, 143) and found:
            resume_cmd = found[-1].strip()
        elif code == 1 and ("could not start Ray" in output or "could not start/join Ray" in output):
            resume_cmd = resume_cmd or f"python -m runner runner.resume={out}"
            if not (out / "sweep.json").exists():  # nothing was written: start the sweep again
                resume_cmd = None
                sweep_no -= 1
        else:
            print(f"     unexpected exit {code}; see {inv.log_path}", flush=True)
            resume_cmd = f"python -m runner runner.resume={out}" if (out / "sweep.json").exists() else None
    n_faults = sum(faults.values())
    print(f"faults injected: {n_faults} ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})")
    print(f"invocations: {invocation_no}, exit codes: {dict(sorted(exits.items()))}")
    print(f"sweeps checked: {totals.get('sweep_ids', 0) and sweep_no - (resume_cmd is not None)}; cells planned "
          f"{totals['planned']}, present {totals['present']}, lost {totals['lost']}, duplicated "
          f"{totals['duplicated']}, unplanned {totals['unplanned']}, not ok {totals['not_ok']}, inconsistent "
          f"rows {totals['inconsistent']}, retried rows {totals['retried_rows']}, crash signals recorded "
          f"{totals['signals_recorded']}")
    ok = (totals["lost"] == 0 and totals["duplicated"] == 0 and totals["unplanned"] == 0
          and totals["inconsistent"] == 0 and totals["not_ok"] == 0 and resume_cmd is None)
    print("result:", "OK — 0 lost, 0 duplicated" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
