"""Adding a framework = an adapter module, a registry row, a conf file — proven on a copy of the checkout.

The test copies the project, commits the copy, adds a new stand-in framework ``trio`` by touching only
those three files (``git status`` of the copy says so), and runs the real product command there: a
sweep (Ray actors, dispatch, fragments), the equivalence gate and the report. The new framework must
appear everywhere the others do: the rows, the paired statistics, the terminal's verdict table, the
report's verdict, knob table, environment and developer-experience table, and the gate record.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from runner_support import cli_env

from runner import PROJECT_ROOT

ADAPTER = '''"""A third numpy stand-in, added by tests/test_add_a_framework.py (an adapter module of its own)."""
from __future__ import annotations

from frameworks.fake_adapter import FakeAdapter


class TrioAdapter(FakeAdapter):
    name = "trio"
'''
ROW = ('    Framework("trio", "frameworks.trio_adapter:TrioAdapter", "numpy", "numpy", "Trio (third stand-in)", '
       '"#F0E442",\n              real=False, notes={"api": "A numpy stand-in added by a test."}),\n')
CONF = """defaults:
  - base_framework
  - _self_
name: trio
backend: numpy
"""
MARKER = "    # New frameworks: one row above this line.\n"


def _git(cwd, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def copy_with_trio(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("needs git")
    root = tmp_path_factory.mktemp("checkout") / "kvp"
    files = [f for f in _git(PROJECT_ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
             if (PROJECT_ROOT / f).is_file() and not f.startswith("data/eurosat_mini/")]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / f, root / f)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")
    # The three files:
    (root / "frameworks" / "trio_adapter.py").write_text(ADAPTER)
    registry = (root / "core" / "registry.py").read_text()
    assert MARKER in registry, "core/registry.py lost the marker line new rows go above"
    (root / "core" / "registry.py").write_text(registry.replace(MARKER, ROW + MARKER))
    (root / "conf" / "framework" / "trio.yaml").write_text(CONF)
    return root


def test_a_new_framework_touches_three_files_and_appears_everywhere(copy_with_trio, tmp_path):
    root = copy_with_trio
    changed = sorted(line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=all").splitlines())
    assert changed == ["conf/framework/trio.yaml", "core/registry.py", "frameworks/trio_adapter.py"]

    out = tmp_path / "out"
    args = ["framework=fake", "grid.framework=[fake,trio]", "grid.seed=[0,1,2]", "data=synthetic",
            "data.samples_per_class=16", "train=tiny", "train.epochs=2", "train.inference.min_calls=2",
            "grid.batch_size=[32]", "grid.device=[cpu]", "runner.progress=false", f"hydra.run.dir={out}"]
    env = cli_env(PYTHONPATH=str(root), KVP_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    runs = pd.read_parquet(out / "runs.parquet")
    assert sorted(runs["framework"].unique()) == ["fake", "trio"] and set(runs["status"]) == {"ok"}
    assert runs.loc[runs["framework"] == "trio", "git_sha"].str.endswith("-dirty").all()  # the copy's code ran
    summary = pd.read_parquet(out / "summary.parquet")
    pairs = summary[summary["row_kind"] == "pair"]
    assert {("fake", "trio")} == set(zip(pairs["framework_a"], pairs["framework_b"]))
    assert "fake vs trio" in proc.stdout  # the terminal's verdict table
    html = (out / "report.html").read_text()
    for where in ("Trio (third stand-in)", "A numpy stand-in added by a test.", "frameworks/trio_adapter.py"):
        assert where in html, where  # developer-experience table: its column, note and adapter file
    assert html.count("trio") >= 10  # verdict, tables, knob table, environment, figures
    gate = (out / "parity_gate.json").read_text()
    assert "trio" in gate and "fake" in gate  # the gate names both stand-ins it did not check, and why
