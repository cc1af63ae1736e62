"""Adaptive seeds (runner.target_ci) without Ray: ``runner.sweep.adaptive.add_seeds`` with cells run in this
process (numpy fake framework). The hook inside a real Ray sweep is in test_runner_sweep.py."""
from __future__ import annotations

import json

import pytest
from runner_support import compose_cfg, runs

import analysis
from analysis.planning import SeedDecision
from runner.sweep import adaptive
from runner.cell.run import cell_id, run_cell
from runner.errors import GridError
from runner.sweep.manifest import open_sweep
from runner.store.fragments import consolidate, read_fragments, write_fragment


def _sweep(tmp_path, *overrides):
    sweep = open_sweep(compose_cfg(["grid.seed=[0,1]", *overrides]), tmp_path / "s", [])
    sweep.record_invocation()
    ran = []

    def run_cells(cells):
        for cell in cells:
            result = run_cell(cell, sweep_id=sweep.sweep_id)
            write_fragment(sweep.out_dir, result.cell_id, result.tables)
            ran.append(int(cell["seed"]))

    cells = sweep.plan.cells(["cpu"])
    run_cells(sweep.record_plan(cells, [cell_id(c) for c in cells], ["cpu"], set()))
    return sweep, run_cells, ran


def test_seeds_are_added_one_at_a_time_until_the_maximum(tmp_path, monkeypatch):
    sweep, run_cells, ran = _sweep(tmp_path, "runner.target_ci=0.5", "runner.max_seeds=4")
    real, calls = analysis.plan_seeds, []

    def scripted(dirs, options, *, seeds_run, max_seeds, target):
        decision = real(dirs, options, seeds_run=seeds_run, max_seeds=max_seeds, target=target)
        seen = sorted(set(read_fragments(dirs[0], "runs").to_pandas()["seed"]))
        calls.append((seeds_run, seen, target, decision.reason))
        more = seeds_run < max_seeds  # pretend the intervals stay wide
        return SeedDecision(more, "scripted: wide" if more else "maximum reached", seeds_run)

    monkeypatch.setattr(analysis, "plan_seeds", scripted)
    record = adaptive.add_seeds(sweep, ["cpu"], run_cells)
    assert [c[:3] for c in calls] == [(2, [0, 1], 0.5), (3, [0, 1, 2], 0.5), (4, [0, 1, 2, 3], 0.5)]
    assert "no headline comparison" in calls[0][3]  # the real rule on one framework: nothing to settle
    assert ran == [0, 1, 2, 3] and record["added"] == [2, 3] and len(record["rounds"]) == 3
    manifest = json.loads((sweep.out_dir / "sweep.json").read_text())
    assert manifest["adaptive_seeds"] == record and len(manifest["cells"]) == 4
    # a second invocation (a resume) continues the record: no seed runs twice
    again = adaptive.add_seeds(sweep, ["cpu"], run_cells)
    assert ran == [0, 1, 2, 3] and again["added"] == [2, 3]
    consolidate(sweep.out_dir)
    assert sorted(runs(sweep.out_dir)["seed"]) == [0, 1, 2, 3]


def test_the_real_rule_stops_when_there_is_nothing_to_settle(tmp_path):
    sweep, run_cells, ran = _sweep(tmp_path, "runner.target_ci=0.5", "runner.max_seeds=5")
    record = adaptive.add_seeds(sweep, ["cpu"], run_cells)
    assert ran == [0, 1] and record["added"] == [] and not record["rounds"][0]["more"]
    assert adaptive.settings({"target_ci": None}) is None


def test_bad_settings_are_refused_before_anything_runs(tmp_path):
    for bad in ("runner.target_ci=-1", "runner.max_seeds=1"):
        with pytest.raises(GridError, match="target_ci|max_seeds"):
            open_sweep(compose_cfg([bad]), tmp_path / "bad", [])
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):  # a wrong type fails at composition (the schema)
        compose_cfg(["runner.target_ci=true"])
