"""Time to a trained model, measured choices, memory that means one thing, energy, honest labels.

- a cell trains to a target (``train.target``): reached in epoch 1 (and stopped), or missed and censored
  at its budget; the analysis restricts time to target to the budget, gives reach rates and the
  epochs × seconds-per-epoch decomposition, and stays finite when one framework misses;
- the device's choices (``runner.cell.tuning``): the faster layout is kept, every candidate's time is
  recorded, the other seeds of a condition reuse the measurement;
- the Leaner figure comes from a fresh process, so what the actor holds does not move it;
- energy from RAPL files (a planted powercap tree) and, on a GPU, NVML;
- a metric whose definition the run cannot meet has no value and no verdict, and the row says why;
- the Nadeau–Bengio correction of resampled splits, by hand.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
from cell_support import compose_cell

from analysis import stats
from analysis.options import AnalysisOptions
from analysis.summary import summarize
from runner.cell import energy
from runner.cell.run import run_cell

#: A fake that misses 0.8 validation accuracy within 3 epochs on 2 of 6 seeds (measured; deterministic).
MISSING = ("train.epochs=3", "train.target.threshold=0.8", "data.noise=0.5", "data.val_fraction=0.3")


def test_a_cell_that_reaches_the_target_in_epoch_one_stops_there():
    cell = compose_cell("train.epochs=3", "train.target.threshold=0.05", "train.target.stop=true")
    run = run_cell(cell).run
    assert run["status"] == "ok", run["traceback"]
    assert (run["target"], run["reached_target"], run["epochs_to_target"], run["epochs_run"]) == \
        ("val_accuracy >= 0.05", True, 1, 1)
    assert run["train_seconds_to_target"] == pytest.approx(run["first_epoch_seconds"])
    assert run["wall_seconds_to_target"] >= run["train_seconds_to_target"]  # validation is on MLPerf's clock
    assert run["epochs"] == 3  # the budget stays the condition
    assert run["median_epoch_seconds"] is None  # no epoch after the warm-up: not measured, and why
    assert "stopped at its target" in json.loads(run["unmeasured"])["median_epoch_seconds"]


def test_a_missed_target_is_censored_at_the_budget_never_dropped():
    run = run_cell(compose_cell("seed=1", *MISSING)).run
    assert run["status"] == "ok"
    assert run["reached_target"] is False and run["epochs_to_target"] is None and run["train_seconds_to_target"] is None
    assert run["epochs_run"] == 3 and run["train_seconds"] > 0  # the whole budget, what the analysis restricts to


def _planted(misses_a: int = 2, seeds: int = 5) -> pd.DataFrame:
    """keras needs 4 epochs of 2 s, pytorch 6 epochs of 1 s, budget 10; keras misses on its last ``misses_a``."""
    rows = []
    for fw, epochs, per_epoch in (("keras", 4, 2.0), ("pytorch", 6, 1.0)):
        for seed in range(seeds):
            missed = fw == "keras" and seed >= seeds - misses_a
            jitter = 1 + 0.01 * seed
            rows.append({"framework": fw, "seed": seed, "cell_id": f"{fw}{seed}", "status": "ok", "data": "d",
                         "epochs": 10, "target": "val_accuracy >= 0.75", "stop_at_target": False,
                         "reached_target": not missed, "epochs_run": 10, "train_seconds": 10 * per_epoch * jitter,
                         "epochs_to_target": None if missed else epochs,
                         "train_seconds_to_target": None if missed else epochs * per_epoch * jitter,
                         "wall_seconds_to_target": None if missed else epochs * per_epoch * jitter * 1.1,
                         "training_wall_seconds": 11 * per_epoch * jitter, "accuracy": 0.8 + 0.001 * seed})
    return pd.DataFrame(rows)


def test_planted_misses_give_reach_rates_a_finite_restricted_estimate_and_the_decomposition():
    summary, _, _ = summarize(_planted(), AnalysisOptions())
    reach = summary[summary["metric"] == "reach_rate"].set_index("framework")
    assert reach.loc["keras", "estimate"] == pytest.approx(3 / 5) and reach.loc["pytorch", "estimate"] == 1.0
    assert 0 < reach.loc["keras", "ci_low"] < 0.6 < reach.loc["keras", "ci_high"] < 1  # Wilson: never [0.6, 0.6]
    pairs = summary[summary["row_kind"] == "pair"].set_index("metric")
    ttt = pairs.loc["time_to_target_seconds"]
    assert ttt["family"] == "headline" and math.isfinite(ttt["estimate"]) and ttt["ci_low"] < ttt["ci_high"]
    # keras: 3 seeds at 8 s, 2 censored at the budget's 20 s; pytorch: 6 s everywhere
    expected = math.exp(np.mean(np.log([8 / 6] * 3 + [20 / 6] * 2)))
    assert ttt["estimate"] == pytest.approx(expected, rel=1e-3)
    # time = epochs × seconds per epoch, exactly, as paired ratios
    e, s = pairs.loc["epochs_to_target_restricted", "estimate"], pairs.loc["seconds_per_epoch_to_target", "estimate"]
    assert e * s == pytest.approx(ttt["estimate"], rel=1e-9)
    from analysis.report import verdict_sections
    from analysis.summary import conditions_table

    conditions, _ = conditions_table(_planted())
    rows = verdict_sections(summary, conditions, {})[0]["rows"]
    basis = next(r["basis"] for r in rows if r["question"] == "Trains faster")
    assert "restricted to 10 epochs" in basis and "keras 3/5" in basis and "the epochs, each in" in basis


def test_no_seed_reaching_the_target_is_still_a_row_not_a_crash():
    runs = _planted(misses_a=5)
    summary, _, _ = summarize(runs, AnalysisOptions())
    ttt = summary[(summary["row_kind"] == "pair") & (summary["metric"] == "time_to_target_seconds")].iloc[0]
    assert math.isfinite(ttt["estimate"])  # both sides restricted: keras at its 20 s budget against pytorch's 6 s
    assert summary[(summary["metric"] == "reach_rate") & (summary["framework"] == "keras")]["estimate"].iloc[0] == 0


def test_aa_with_censoring_through_the_fake_framework(tmp_path):
    """fake vs fake_twin (the same learner): the same seeds miss, epochs to target are equal, the estimate is finite."""
    import subprocess
    import sys

    from runner_support import cli_env

    from runner import PROJECT_ROOT

    out = tmp_path / "out"
    args = ["framework=fake", "grid.framework=[fake,fake_twin]", "grid.seed=[0,1,2,3,4,5]", "data=synthetic",
            "data.samples_per_class=40", "train=tiny", *MISSING, "grid.batch_size=[32]", "grid.device=[cpu]",
            "runner.progress=false", "runner.parity_gate=false", f"hydra.run.dir={out}"]
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=PROJECT_ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = pd.read_parquet(out / "runs.parquet")
    reached = runs.pivot(index="seed", columns="framework", values="reached_target")
    assert 0 < reached["fake"].sum() < 6 and (reached["fake"] == reached["fake_twin"]).all()  # censoring, A/A
    summary = pd.read_parquet(out / "summary.parquet")
    pairs = summary[summary["row_kind"] == "pair"].set_index("metric")
    assert pairs.loc["time_to_target_seconds", "family"] == "headline"
    assert math.isfinite(pairs.loc["time_to_target_seconds", "estimate"])
    assert pairs.loc["epochs_to_target_restricted", "estimate"] == pytest.approx(1.0)  # the same learner
    assert "Time to target" in proc.stdout  # the terminal's verdict table asks it
    html = (out / "report.html").read_text()
    assert 'id="time-to-target"' in html and "fake 4 of 6" in html


# ---- measured choices -------------------------------------------------------------------------------
def test_tuning_keeps_the_faster_layout_records_both_and_later_seeds_reuse_it():
    cache: dict = {}
    first = compose_cell("seed=0", "framework.layout=auto", "train.epochs=2", "train.memory.fresh_process=false")
    first["framework"]["fake"]["layout_sleep_s"] = 0.02  # nchw planted 20 ms slower per step
    r0 = run_cell(first, adapter_cache=cache).run
    tuned = json.loads(r0["tuning"])["layout"]
    assert tuned["choice"] == "nhwc" and tuned["measured_in"] == "this cell"
    assert tuned["seconds_per_step"]["nchw"] > tuned["seconds_per_step"]["nhwc"] + 0.015
    assert len(tuned["trials"]["nhwc"]) == len(tuned["trials"]["nchw"]) == 2  # A B B A
    assert json.loads(r0["parity_knobs"])["memory_format"] == "NHWC"
    second = copy.deepcopy(first)
    second["seed"] = 1
    r1 = run_cell(second, adapter_cache=cache).run
    assert json.loads(r1["tuning"])["layout"]["measured_in"] == r0["cell_id"]  # the condition's measurement, reused
    forced = compose_cell("framework.layout=nchw", "train.memory.fresh_process=false")
    assert json.loads(run_cell(forced).run["tuning"]) == {}  # an explicit value forces the choice


# ---- memory ---------------------------------------------------------------------------------------------
def test_the_fresh_process_figure_ignores_what_the_actor_holds():
    cell = compose_cell("train.epochs=1")
    before = run_cell(cell).run
    held = np.ones(300 * 2**20, dtype=np.uint8)  # what an earlier cell might leave in a long-lived actor
    after = run_cell(cell).run
    del held
    assert after["host_rss_at_start_mib"] - before["host_rss_at_start_mib"] > 250  # the actor's own view moved
    assert abs(after["peak_host_rss_fresh_mib"] - before["peak_host_rss_fresh_mib"]) < 30  # the fresh one did not
    assert before["host_rss_fresh_start_mib"] <= before["peak_host_rss_fresh_mib"]


# ---- energy ---------------------------------------------------------------------------------------------
def test_rapl_energy_from_a_powercap_tree_with_wraparound(tmp_path):
    domain = tmp_path / "intel-rapl:0"
    domain.mkdir()
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-domain (core): not summed twice
    (domain / "max_energy_range_uj").write_text("1000000\n")
    (domain / "energy_uj").write_text("900000\n")
    meter = energy.EnergyMeter("cpu", powercap=str(tmp_path))
    assert meter.available and "whole package" in meter.note
    (domain / "energy_uj").write_text("950000\n")
    assert meter.read() == pytest.approx(0.05)
    (domain / "energy_uj").write_text("100000\n")  # wrapped around at 1 J
    assert meter.read() == pytest.approx(0.05 + 0.15)


def test_no_counter_means_null_and_the_reason(tmp_path):
    meter = energy.EnergyMeter("cpu", powercap=str(tmp_path / "absent"))
    assert not meter.available and meter.read() is None and meter.note.startswith("not measured: no energy counter")


@pytest.mark.gpu
def test_nvml_energy_counter_on_the_gpu():
    import subprocess
    import sys

    code = ("from runner.cell import energy\nimport time\nm = energy.EnergyMeter('gpu')\nassert m.available, m.note\n"
            "time.sleep(1.0)\nprint('J', m.read())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split("J", 1)[1]) > 0  # an idle GPU still draws tens of watts


# ---- labels that mean what they say -------------------------------------------------------------------
def test_a_one_epoch_run_has_no_trains_faster_verdict_and_says_why():
    why = "not measured: one epoch is the warm-up (tracing, compilation, autotuning) — use train.epochs ≥ 2"
    runs = pd.DataFrame([{"framework": fw, "seed": s, "cell_id": f"{fw}{s}", "status": "ok", "data": "d", "epochs": 1,
                          "first_epoch_seconds": 1.0 + s, "median_epoch_seconds": None, "accuracy": 0.9,
                          "unmeasured": json.dumps({"median_epoch_seconds": why})}
                         for fw in ("keras", "pytorch") for s in range(3)])
    summary, _, _ = summarize(runs, AnalysisOptions())
    head = summary[(summary["row_kind"] == "pair") & (summary["family"] == "headline")].set_index("metric")
    assert head.loc["median_epoch_seconds", "verdict"] == "not measured"
    assert head.loc["median_epoch_seconds", "note"] == why and not np.isfinite(head.loc["median_epoch_seconds", "estimate"])
    assert head.loc["accuracy", "verdict"] != "not measured"


# ---- split designs ----------------------------------------------------------------------------------------
def test_nadeau_bengio_correction_by_hand():
    assert stats.resampled_variance_factor(10, 400 / 1440) == pytest.approx(1 + 10 * 400 / 1440)  # ≈ 3.78
    d = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    plain, corrected = stats.paired_t(d), stats.paired_t(d, rho=0.25)
    assert corrected.se[0] == pytest.approx(plain.se[0] * math.sqrt(1 + 5 * 0.25))
    assert corrected.mean[0] == plain.mean[0] and corrected.p[0] > plain.p[0]
    # below the floor the overlap of resampled splits sets, more seeds settle nothing
    assert stats.seeds_needed(0.1, 1.0, 5, level=0.05, low=-1, high=1, rho=0.25) > 1000
    assert stats.seeds_needed(0.1, 1.0, 5, level=0.05, low=-1, high=1) < 1000


def test_quality_intervals_under_resampled_splits_are_corrected_and_fixed_ones_are_not():
    rng = np.random.default_rng(0)
    base = [{"framework": fw, "seed": s, "cell_id": f"{fw}{s}", "status": "ok", "data": "d",
             "accuracy": 0.8 + (0.01 if fw == "keras" else 0) + rng.normal(0, 0.01), "train_samples": 1440,
             "test_samples": 400, "val_samples": 160} for fw in ("keras", "pytorch") for s in range(10)]
    widths = {}
    for design in ("fixed", "resampled"):
        runs = pd.DataFrame([dict(r, split_design=design) for r in base])
        s, _, _ = summarize(runs, AnalysisOptions())
        row = s[(s["row_kind"] == "pair") & (s["metric"] == "accuracy")].iloc[0]
        widths[design] = row["ci_high"] - row["ci_low"]
    assert widths["resampled"] / widths["fixed"] == pytest.approx(math.sqrt(1 + 10 * 400 / 1440), rel=1e-6)


def test_below_the_floor_of_resampled_splits_the_verdict_says_no_number_of_seeds_settles_it():
    rng = np.random.default_rng(1)
    runs = pd.DataFrame([{"framework": fw, "seed": s, "cell_id": f"{fw}{s}", "status": "ok", "data": "d",
                          "accuracy": 0.78 + (0.005 if fw == "keras" else 0) + rng.normal(0, 0.03),
                          "train_samples": 1200, "test_samples": 400, "val_samples": 400, "split_design": "resampled"}
                         for fw in ("keras", "pytorch") for s in range(5)])
    summary, _, _ = summarize(runs, AnalysisOptions())
    row = summary[(summary["row_kind"] == "pair") & (summary["metric"] == "accuracy")].iloc[0]
    assert row["verdict"] == "inconclusive" and row["note"].startswith("no number of seeds settles it at 80 % power")
    from analysis.report import verdict_text

    assert "cannot get narrower than ±" in verdict_text(row["verdict"], row["margin_words"], row["seeds_needed"],
                                                        row["n"], row["note"])
