"""Adaptive seeds (``runner.target_ci``): after the grid's seeds, add one seed at a time until every
headline interval is narrow enough, or ``runner.max_seeds`` seeds have run.

The decision is the analysis' (``analysis.plan_seeds``, rule in ``analysis/planning.py``): every
headline comparison's 95 % half-width at most ``target_ci`` × its equivalence margin. It reads
interval widths only — never an estimate or a p-value — so adding seeds does not steer the verdict
(the family-wise false "better" rate and coverage of the whole procedure are simulated in
``benchmarks/bench_calibration.py``). Each round's decision goes into the manifest
(``adaptive_seeds``) and, through the sweep's Parquet metadata, into the report.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import OmegaConf

from runner.planning import grid as gridlib
from runner.store import fragments as results

log = logging.getLogger("runner.sweep")


def settings(runner_cfg: dict[str, Any]) -> tuple[float, int] | None:
    """(target, max seeds), or None when adaptive seeds are off (``runner.target_ci: null``)."""
    target = runner_cfg.get("target_ci")
    if target is None:
        return None
    return float(target), int(runner_cfg.get("max_seeds", 10))


def add_seeds(sweep: Any, devices: Sequence[str], run_cells: Callable[[list[dict[str, Any]]], None]) -> dict[str, Any]:
    """Analyse, and while the analysis asks for more, run the next seed's cells with ``run_cells``.

    Returns the record kept in the manifest and the results' metadata: the rule, every round's
    decision and the seeds added. Seeds added by an earlier invocation (a resume) are not re-run.
    """
    import analysis
    from runner.cell.run import cell_id

    target, max_seeds = settings(sweep.runner_cfg)
    report_cfg = OmegaConf.to_container(sweep.cfg.report, resolve=True) if "report" in sweep.cfg else {}
    report_cfg.pop("enabled", None)
    record = sweep.manifest.setdefault("adaptive_seeds", {"rule": rule_text(target, max_seeds), "rounds": [],
                                                          "added": []})
    seeds = sorted(set(int(s) for s in sweep.plan.axes["seed"]) | set(record["added"]))
    out_dir = Path(sweep.out_dir)
    while True:
        decision = analysis.plan_seeds([out_dir], report_cfg, seeds_run=len(seeds), max_seeds=max_seeds,
                                       target=target)
        record["rounds"].append({"seeds": len(seeds), "more": decision.more, "reason": decision.reason,
                                 "unsettled": decision.unsettled[:10]})
        sweep.write()
        log.info("adaptive seeds: %d seed(s): %s", len(seeds), decision.reason)
        if not decision.more:
            return record
        seed = max(seeds) + 1
        seeds.append(seed)
        record["added"].append(seed)
        axes = sweep.plan.axes
        sweep.plan.axes = dict(axes, seed=[seed])
        try:
            cells = gridlib.interleave(sweep.plan.cells(devices), int(sweep.runner_cfg["interleave_seed"]) + seed)
        finally:
            sweep.plan.axes = axes
        done = results.ok_cell_ids(out_dir)
        ids = [cell_id(c) for c in cells]
        sweep.manifest["cells"] = list(dict.fromkeys([*sweep.manifest.get("cells", []), *ids]))
        sweep.write()
        todo = [c for c, i in zip(cells, ids) if i not in done]
        log.info("adaptive seeds: running seed %d (%d cell(s))", seed, len(todo))
        if todo:
            run_cells(todo)


def rule_text(target: float, max_seeds: int) -> str:
    return (f"add one seed at a time until every headline comparison's 95 % interval half-width is at most "
            f"{target:g} × its equivalence margin, or {max_seeds} seeds have run; the rule reads interval "
            f"widths only (never an estimate or p-value), so it does not steer the verdicts")
