"""``python -m runner.cell [overrides]`` — one cell in this process (no Ray), its rows as Parquet.

    uv run python -m runner.cell framework=pytorch seed=0 [data=synthetic train=tiny ...]

Composes ``conf/config.yaml`` with the overrides, runs ``runner.cell.run.run_cell`` on the selected
groups + ``seed`` + ``device``, writes the rows into Hydra's run dir (a fragment, consolidated into
``runs``/``epochs``/``predictions.parquet``) and prints a summary. Exit 0 ok, 1 the cell failed or was
skipped, 2 the config does not describe a cell.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping

from runner import CONF_DIR
from runner.cell.identity import CellConfigError
from runner.cell.run import CellResult, cell_from_config, run_cell
from runner.store.fragments import consolidate, write_fragment


def _summary(result: CellResult, out_dir: Path, files: Mapping[str, Path]) -> str:
    r = result.run

    def fmt(key: str, spec: str = ".4f", unit: str = "") -> str:
        v = r.get(key)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{spec}}{unit}"

    lines = [f"cell {result.cell_id}: {r.get('framework')} {r.get('model')} on {r.get('data')} "
             f"seed {r.get('seed')} batch {r.get('batch_size')} device {r.get('device_name') or r.get('device')} "
             f"→ {result.status.upper()}"]
    if result.status == "ok":
        lines += [
            f"  test accuracy {fmt('accuracy')}  f1 {fmt('f1')}  f1_macro {fmt('f1_macro')}  roc_auc {fmt('roc_auc')}  "
            f"log_loss {fmt('log_loss')}  (n={r.get('test_samples')})",
            f"  epochs {r.get('epochs')}: first {fmt('first_epoch_seconds', '.2f', 's')}  "
            f"median {fmt('median_epoch_seconds', '.2f', 's')}  {fmt('images_per_second', '.1f')} img/s  "
            f"time to first step {fmt('time_to_first_step_seconds', '.2f', 's')}  import {fmt('import_seconds', '.2f', 's')}",
            f"  inference: latency p50 {fmt('latency_p50_ms', '.2f', ' ms')}  p99 {fmt('latency_p99_ms', '.2f', ' ms')}  "
            f"throughput {fmt('throughput_images_per_second', '.1f')} img/s @ batch {r.get('throughput_batch_size')}",
            f"  memory: peak host RSS {fmt('peak_host_rss_mib', '.0f', ' MiB')}  "
            f"peak device {fmt('peak_device_memory_mib', '.0f', ' MiB')}  params {r.get('param_count')}",
        ]
        lines += [_deployment_line(d) for d in result.tables.get("deployments", [])]
        lines += [f"  note: {n}" for n in result.notes]
    else:
        lines.append(f"  error: {result.error}")
    lines.append(f"  results: {', '.join(str(p) for p in files.values())}")
    return "\n".join(lines)


def _deployment_line(d: dict) -> str:
    """``deploy onnx → onnxruntime: ok, max |Δ prob| 1.2e-07, load 0.015 s, served p50 0.094 ms, 0.43 MiB``."""
    head = f"  deploy {d['format']} → {d['runtime']}: {d['status']}"
    if d.get("served_latency_p50_ms") is None:
        return f"{head} ({d.get('error')})"
    return (f"{head}, max |Δ prob| {d['max_abs_prob_diff']:.1e}, load {d['load_seconds']:.3f} s, "
            f"served p50 {d['served_latency_p50_ms']:.3f} ms, {d['artifact_mib']:.2f} MiB"
            + (f" ({d['error']})" if d.get("error") else ""))


def _main(cfg: Any) -> int:
    from hydra.core.hydra_config import HydraConfig

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cell = cell_from_config(cfg)
    except CellConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pins = cell["framework"].pop("packages", None)
    if pins:  # this process has the base environment; an arm's environment is built for the runner's actors
        print(f"error: framework.packages {list(pins)}: a cell with pinned packages runs in an environment of its "
              f"own, which the runner builds for its actors: uv run python -m runner "
              f"\"grid.framework=['{cell['framework']['name']}@{','.join(pins)}']\"",
              file=sys.stderr)
        return 2
    result = run_cell(cell)
    metadata = {"config": cell, "cell_id": result.cell_id}
    write_fragment(out_dir, result.cell_id, result.tables, metadata=metadata)
    files = consolidate(out_dir, metadata=metadata)
    print(_summary(result, out_dir, files))
    return 0 if result.status == "ok" else 1


def main() -> None:
    import hydra

    # Hydra owns argv parsing, the output dir (outputs/<date>/<time>/, hydra.run.dir=…) and logging.
    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def _hydra_entry(cfg) -> None:
        code = _main(cfg)
        if code:
            sys.exit(code)

    _hydra_entry()


if __name__ == "__main__":
    main()
