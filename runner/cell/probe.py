"""A cell's memory in a fresh process: the "Leaner" figure, the same whatever ran before in the actor.

Measured in one long-lived actor process, a cell's peak memory depends on what earlier cells left
(measured here, eurosat_mini, the same seeds in two orders in one process: Keras (TF) kept its freed
memory in its allocator, so a later cell's peak above its start was 43–53 MiB against 104 MiB for the
first cell, and its footprint at start grew ~17 MiB per cell; PyTorch's first cell needed 5 % more than
the others). So after its timed work a cell starts ``python -m runner.cell.probe`` with its own
environment (threads, backend, ``CUDA_VISIBLE_DEVICES``), which:

1. imports the framework (the adapter, with the cell's parity, options and measured choices),
2. prepares the data from the cache and makes the images resident, loads the metrics stack —
   ``host_rss_fresh_start_mib`` is read here (runtime + data),
3. builds the cell's model (the same ported weights), trains ``train.memory.steps`` steps of the cell's
   first epoch through the same pipeline, evaluates the validation split, and serves batch-1 and
   throughput-batch inference calls,
4. reports its own peak RSS (Linux VmHWM: ``peak_host_rss_fresh_mib``) and the framework's device peak
   (``peak_device_memory_fresh_mib``; null on a CPU).

The actor waits for it (the slot stays locked: it never runs beside a timed cell). ``train.memory.
fresh_process=false`` skips it; the report then uses the actor's own per-cell peak and says so.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from core.proc import die_with_parent, peak_rss_mib, rss_mib
from core.text import one_line

#: Columns the probe fills.
COLUMNS = ("host_rss_fresh_start_mib", "peak_host_rss_fresh_mib", "peak_device_memory_fresh_mib")


def measure(cell: Mapping[str, Any], choices: Mapping[str, str], device: str, steps: int,
            timeout: float = 900.0) -> tuple[dict[str, Any], str | None]:
    """Run the probe for ``cell`` in a fresh interpreter; (columns, None) or ({}, why it failed)."""
    with tempfile.TemporaryDirectory(prefix="kvp-probe-") as tmp:
        request, answer = Path(tmp) / "cell.json", Path(tmp) / "memory.json"
        request.write_text(json.dumps({"cell": cell, "choices": dict(choices), "device": device, "steps": steps},
                                      default=str))
        env = dict(os.environ, PYTHONUNBUFFERED="1", KVP_MEMORY_PROBE="1")
        try:
            proc = subprocess.run([sys.executable, "-m", "runner.cell.probe", str(request), str(answer)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                  preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        except subprocess.TimeoutExpired:
            return {}, f"not measured: the fresh-process memory probe took longer than {timeout:.0f} s"
        if proc.returncode != 0 or not answer.is_file():
            tail = (proc.stdout or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return {}, f"not measured: the fresh-process memory probe failed ({one_line(tail[0], 300)})"
        return json.loads(answer.read_text()), None


def _probe(request: Mapping[str, Any]) -> dict[str, Any]:
    """What the fresh process does (the module doc's steps 1–4); returns the columns."""
    import numpy as np

    import runner.data as data
    from core.batches import Batches  # noqa: F401  (the plan type the adapter receives)
    from core.config import ParityConfig, TrainConfig, check_node
    from core.spec import init_weights
    from frameworks.base import adapter_class, eval_plan
    from runner.cell import memory, metrics

    cell, device, steps = request["cell"], request["device"], int(request["steps"])
    parity = check_node(ParityConfig, cell["parity"], "parity")
    train = check_node(TrainConfig, cell["train"], "train")
    name = cell["framework"]["name"]
    cls = adapter_class(name)
    adapter = cls(parity=parity, device=device, framework=name, pipeline=train.pipeline)
    adapter.configure(check_node(cls.config_schema, cell["framework"], "framework"))
    for knob, value in request["choices"].items():
        adapter.use(knob, value)
    seed = int(cell["seed"])
    ds = data.prepare(cell["data"], seed)
    memory.make_resident(ds.x)
    metrics.load()
    memory.free_unused()
    start = rss_mib()
    memory.reset_peak_rss()
    adapter.reset_peak_memory()
    import hydra.utils

    spec = hydra.utils.instantiate(cell["model"], num_classes=int(ds.num_classes), image_size=int(ds.image_size),
                                   channels=int(ds.x.shape[-1]), _convert_="all")
    weights = init_weights(spec, seed) if parity.weight_init == "ported" else None
    adapter.build(spec, train, weights, seed)
    batches = data.epoch_batches(ds, seed, 0, train.batch_size, dataclasses.asdict(train.augment), split="train")
    n = min(len(batches.order), steps * train.batch_size)
    adapter.train_epoch(dataclasses.replace(batches, order=batches.order[:n], hflip=batches.hflip[:n],
                                            vflip=batches.vflip[:n], rot90=batches.rot90[:n]))
    if len(ds.val_idx):
        adapter.evaluate(eval_plan(ds.x, ds.y, ds.val_idx, ds.mean, ds.std, train.eval_batch_size))
    test_idx = np.asarray(ds.test_idx)
    for size in (1, train.throughput_batch_size):
        batch = adapter.inference_input(ds.x[np.resize(test_idx, size)], ds.mean, ds.std)
        for _ in range(3):
            adapter.infer(batch)
    adapter.sync()
    peak_device = adapter.peak_device_memory_bytes()
    return {"host_rss_fresh_start_mib": start, "peak_host_rss_fresh_mib": peak_rss_mib(),
            "peak_device_memory_fresh_mib": None if peak_device is None else peak_device / 2**20}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m runner.cell.probe REQUEST.json ANSWER.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    Path(argv[1]).write_text(json.dumps(_probe(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
