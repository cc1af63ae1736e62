"""Arms — a framework at other package versions (``core.arms``): the grid syntax, resolution on the
driver (``runner.planning.arms``), environments built per node (``runner.cluster.arm_envs``) and the
actors that run in them. Offline: the pinned package is a wheel written by the test (``make_wheel``);
uv resolves against a local folder or a refused index. The real two-Keras-release sweep is the slow
test at the end."""
from __future__ import annotations

import dataclasses
import re
import json
import logging
import os
import sys

import pandas as pd
import pytest
from runner_support import compose_cfg, make_wheel, run_cli, runs

from core.arms import ArmError, arm_text, parse_arm
from runner.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, GridError
from runner.planning import grid as gridlib
from runner.planning.checks import check_sweep


# ---- the syntax (no Ray, no uv) ------------------------------------------------------------------
def test_an_arm_is_a_framework_with_sorted_pins_and_a_bare_version_pins_its_own_package():
    assert parse_arm("keras_jax") == ("keras_jax", ())
    assert parse_arm("keras_jax@3.14.0") == ("keras_jax", ("keras==3.14.0",))
    assert parse_arm("pytorch@torch==2.14.0, numpy==2.3.0") == ("pytorch", ("numpy==2.3.0", "torch==2.14.0"))
    assert arm_text(*parse_arm("keras_jax@jax==0.10.1,keras==3.14.0")) == "keras_jax@jax==0.10.1,keras==3.14.0"
    for bad, words in [("kerax@3.1", "unknown framework 'kerax'"), ("keras_jax@", "names no pin"),
                       ("keras_jax@keras=3", "cannot read the pin 'keras=3'"),
                       ("keras_jax@keras==3.1,keras==3.2", "pins ['keras'] more than once")]:
        with pytest.raises(ArmError, match=re.escape(words)):
            parse_arm(bad)


def test_a_bad_arm_on_the_command_line_is_one_line(tmp_path):
    with pytest.raises(GridError) as err:
        check_sweep(compose_cfg(["grid.framework=[fake,fakee@1.0]"]), data=False)
    assert "unknown framework 'fakee'" in str(err.value) and "\n" not in str(err.value)


def test_arm_cells_carry_their_pins_pair_with_the_base_and_leave_base_cell_ids_unchanged(tmp_path):
    wheel = make_wheel(tmp_path)
    plain = gridlib.plan(compose_cfg(["grid.seed=[0,1]"]))
    armed = gridlib.plan(compose_cfg([f"grid.framework=[fake,fake@{wheel}]", "grid.seed=[0,1]"]))
    from runner.cell.identity import cell_id

    base_ids = {cell_id(c) for c in plain.cells(["cpu"])}
    cells = armed.cells(["cpu"])
    assert base_ids < {cell_id(c) for c in cells}  # the base arm's cells are the cells they always were
    pinned = [c for c in cells if c["framework"].get("packages")]
    assert len(pinned) == 2 and all(c["framework"]["packages"] == [str(wheel)] for c in pinned)
    assert all("packages" not in c["framework"] for c in cells if c not in pinned)
    # an arm and the base form one condition: interleaved side by side, paired on one slot
    order = gridlib.interleave(cells, 0)
    assert {gridlib.condition_key(order[0]), gridlib.condition_key(order[1])} == {gridlib.condition_key(order[0])}
    assert armed.arms() == {"fake": ("fake", ()), f"fake@{wheel}": ("fake", (str(wheel),))}


# ---- resolution on the driver (uv; offline) --------------------------------------------------------
def test_a_release_that_does_not_exist_fails_before_ray_naming_the_arm_and_the_pin(tmp_path, monkeypatch):
    make_wheel(tmp_path / "index", version="1.0")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(tmp_path / "index"))
    plan = check_sweep(compose_cfg(["grid.framework=[fake,'fake@kvp-probe~=1.0']"]), data=False)
    assert plan.arm_envs["fake@kvp-probe~=1.0"].install == ("kvp-probe==1.0",)
    with pytest.raises(GridError) as err:
        check_sweep(compose_cfg(["grid.framework=[fake,'fake@kvp-probe==2.0']"]), data=False)
    text = str(err.value)
    assert "\n" not in text and "arm fake@kvp-probe==2.0 cannot be installed (kvp-probe==2.0)" in text
    assert "no version of kvp-probe==2.0" in text


def test_no_network_is_one_line_naming_the_arm_and_the_pin(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    with pytest.raises(GridError) as err:
        check_sweep(compose_cfg(["grid.framework=[fake,'fake@kvp-probe==1.0']"]), data=False)
    text = str(err.value)
    assert "\n" not in text and "arm fake@kvp-probe==1.0 cannot be installed (kvp-probe==1.0)" in text
    assert "127.0.0.1:9" in text


def test_the_cli_refuses_an_uninstallable_pin_with_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    proc = run_cli([f"grid.framework=[fake,fake@{tmp_path}/missing/kvp_probe-1.0-py3-none-any.whl]",
                    "data=synthetic", "train=tiny", f"hydra.run.dir={out}"], timeout=120)
    assert proc.returncode == EXIT_INVALID, proc.stdout
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "arm fake@" in errors[0] and "kvp_probe-1.0-py3-none-any.whl" in errors[0], proc.stdout
    assert not out.exists()


def test_a_single_cell_with_pins_is_sent_to_the_runner(tmp_path):
    import subprocess

    from runner import PROJECT_ROOT

    proc = subprocess.run([sys.executable, "-m", "runner.cell", "framework=fake", "framework.packages=['kvp-probe==1.0']",
                           "data=synthetic", "train=tiny", f"hydra.run.dir={tmp_path}/cell"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_INVALID, proc.stderr[-2000:]
    assert "an environment of its own" in proc.stderr and "grid.framework=['fake@kvp-probe==1.0']" in proc.stderr
    assert not (tmp_path / "cell" / "runs.parquet").exists()


# ---- on Ray: environments per node, actors per arm -----------------------------------------------
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    # The nodes read KVP_ARM_ENV_DIR when they build: set before Ray starts, so its workers inherit it.
    os.environ["KVP_ARM_ENV_DIR"] = str(tmp_path_factory.mktemp("arm-envs"))
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield os.environ["KVP_ARM_ENV_DIR"]
    ray.shutdown()
    os.environ.pop("KVP_ARM_ENV_DIR", None)


def _sweep(tmp_path, wheel, *extra):
    from runner.sweep.run import run_sweep

    cfg = compose_cfg([f"grid.framework=[fake,fake@{wheel}]", "grid.seed=[0,1]", *extra])
    return cfg, run_sweep, check_sweep(cfg)


def test_each_arm_runs_on_its_own_actors_and_its_rows_carry_what_the_actor_imported(local_ray, tmp_path):
    wheel = make_wheel(tmp_path / "wheels", version="1.0")
    cfg, run_sweep, plan = _sweep(tmp_path, wheel)
    outcome = run_sweep(cfg, tmp_path / "out", plan=plan)
    assert outcome.exit_code == EXIT_OK, outcome.message
    rows = runs(tmp_path / "out")
    assert len(rows) == 4 and (rows["status"] == "ok").all()
    versions = rows["versions"].map(json.loads)
    pinned = rows["packages"].notna()
    assert pinned.sum() == 2 and (rows.loc[pinned, "packages"] == str(wheel)).all()
    # read inside each actor: the arm's environment has the probe, the base environment does not
    assert all(v.get("kvp-probe") == "1.0" for v in versions[pinned])
    assert all("kvp-probe" not in v for v in versions[~pinned])
    assert rows.loc[pinned, "cell_id"].nunique() == 2 and not set(rows.loc[pinned, "cell_id"]) & set(rows.loc[~pinned, "cell_id"])
    built = [d for d in os.listdir(local_ray) if not d.endswith(".lock")]
    assert len(built) == 1 and os.path.isfile(os.path.join(local_ray, built[0], "ready.json"))
    # the analysis keeps them apart: two arms, paired by seed
    from analysis.load import load_results

    assert sorted(load_results([tmp_path / "out"]).ok_runs["framework"].unique()) == ["fake", "fake (kvp-probe 1.0)"]


def test_an_environment_that_cannot_be_built_on_a_node_is_that_nodes_error_not_a_hang(local_ray, tmp_path):
    wheel = make_wheel(tmp_path / "wheels", version="1.1")
    cfg, run_sweep, plan = _sweep(tmp_path, wheel)
    arm = f"fake@{wheel}"
    # what the node is told to install does not exist there (as a node without the wheel's folder would see it)
    plan.arm_envs[arm] = dataclasses.replace(plan.arm_envs[arm], install=(f"{tmp_path}/gone/kvp_probe-1.1-py3-none-any.whl",),
                                             key="0123456789abcdef")
    outcome = run_sweep(cfg, tmp_path / "out", plan=plan)
    assert outcome.exit_code == EXIT_FAILED
    text = outcome.message
    assert f"arm {arm} ({wheel}): its environment could not be built on node" in text, text
    assert "gone/kvp_probe-1.1-py3-none-any.whl" in text and "\n" not in text  # uv's cause, on one line
    assert not (tmp_path / "out" / "runs.parquet").exists() or runs(tmp_path / "out").empty
    # a node that does not finish in time is an error too, never a hang
    cfg, run_sweep, plan = _sweep(tmp_path, wheel, "runner.arm_env_timeout_s=0.01")
    plan.arm_envs[arm] = dataclasses.replace(plan.arm_envs[arm], key="fedcba9876543210")
    outcome = run_sweep(cfg, tmp_path / "out2", plan=plan)
    assert outcome.exit_code == EXIT_FAILED and "not built within runner.arm_env_timeout_s=0.01 s" in outcome.message


@pytest.mark.slow
def test_two_keras_releases_on_one_backend_in_one_sweep(tmp_path):
    """The real thing (needs the package index once; then the environment is cached): keras_jax with the
    installed Keras against keras_jax@3.14.0 — both arms' rows carry what their actors imported, the gate
    compares the two releases, the report pairs them."""
    import importlib.metadata

    installed = importlib.metadata.version("keras")
    if installed == "3.14.0":
        pytest.skip("the base environment already has keras 3.14.0")
    out = tmp_path / "sweep"
    proc = run_cli(["grid.framework=[keras_jax,keras_jax@3.14.0]", "data=synthetic", "train=tiny", "grid.seed=[0,1]",
                    "grid.device=[cpu]", "runner.progress=false", f"hydra.run.dir={out}"], timeout=1200)
    assert proc.returncode == EXIT_OK, proc.stdout[-4000:]
    rows = runs(out)
    by_arm = rows.groupby(rows["packages"].fillna("base"))["framework_version"].unique().to_dict()
    assert {k: list(v) for k, v in by_arm.items()} == {"base": [installed], "keras==3.14.0": ["3.14.0"]}
    gate = json.loads((out / "parity_gate.json").read_text())
    assert gate["frameworks"] == ["keras_jax", "keras_jax@keras==3.14.0"] and gate["status"] == "passed", gate
    versions = gate["checks"][0]["comparison"]["versions"]
    assert versions["keras_jax@keras==3.14.0"]["keras"] == "3.14.0" and versions["keras_jax"]["keras"] == installed
    summary = pd.read_parquet(out / "summary.parquet")
    pairs = summary[(summary["row_kind"] == "pair") & (summary["family"] == "headline")]
    assert set(zip(pairs["framework_a"], pairs["framework_b"])) == {(f"keras_jax {installed}", "keras_jax 3.14.0")}
    assert f"versions compared: <b>keras_jax {installed}</b>" in (out / "report.html").read_text()
