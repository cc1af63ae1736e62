"""Bad input to ``python -m runner`` ends before Ray starts and before anything is written: exit 2,
one ``error: …`` line naming the culprit, no output directory. Run directories never collide."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from runner.__main__ import argv_with_defaults, new_run_dir, preflight
from runner_support import FAKE, cli_env


def _args(*args: str) -> list[str]:
    """The tiny fake sweep; choosing another ``data=`` drops the synthetic data's own settings."""
    other_data = any(a.startswith("data=") for a in args)
    return [a for a in FAKE if not (other_data and a.startswith("data"))] + list(args)


def _folder(root, bad: bool = False, classes: tuple[str, ...] = ("a", "b")):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{name}{i}.png")
    if bad:
        (root / "b" / "b_bad.jpg").write_bytes(b"\xff\xd8\xff definitely not a jpeg")
    return root


@pytest.mark.parametrize("args, culprit", [
    (["train.epochs=0"], "train.epochs: must be >= 1, got 0"),
    (["data=folder", "data.path=/nonexistent"], "data path does not exist: /nonexistent"),
    (["grid.seed=[]"], "grid.seed: is empty"),
    (["train.epochz=3"], "train.epochz"),
    (["+train.epochz=3"], "train.epochz: not a key of TrainConfig"),
    (["train.epochs=two"], "train.epochs: Value 'two' of type 'str' could not be converted to Integer"),
    (["data.test_fraction=1.5"], "data.test_fraction: must be in (0, 1), got 1.5"),
    (["runner.concurrency=0"], "runner.concurrency: must be >= 1, got 0"),
    (["report.confidence=2"], "report.confidence: must be in (0, 1)"),
    (["train.pipeline.name=gpu"], "train.pipeline.name: 'gpu' is not one of ['device', 'native']"),
    (["train.pipeline.workers=-1"], "train.pipeline.workers: must be >= 0, got -1"),
    (["data=folder"], "data.path"),  # required, not given
    (["framework=pytorch", "framework.backend=jax"], "framework.backend: pytorch runs on torch, not 'jax'"),
])
def test_bad_input_is_one_line_naming_the_culprit(args, culprit, tmp_path, monkeypatch):
    monkeypatch.setenv("KVP_CACHE_DIR", str(tmp_path / "cache"))
    problem = preflight(_args(*args))
    assert problem is not None and culprit in problem and "\n" not in problem, problem


def test_corrupt_image_and_one_class_are_refused_before_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("KVP_CACHE_DIR", str(tmp_path / "cache"))
    root = _folder(tmp_path / "set", bad=True)
    problem = preflight(_args("data=folder", f"data.path={root}", "data.image_size=16", "grid.batch_size=[4]"))
    assert problem is not None and "b_bad.jpg" in problem and "\n" not in problem, problem
    assert preflight(_args("data=folder", f"data.path={root}", "data.image_size=16", "grid.batch_size=[4]",
                           "data.on_corrupt=skip")) is None
    one = _folder(tmp_path / "one", classes=("a",))
    problem = preflight(_args("data=folder", f"data.path={one}", "data.image_size=16", "grid.batch_size=[4]"))
    assert problem is not None and "needs >= 2" in problem, problem
    problem = preflight(_args("data=folder", f"data.path={root}", "data.image_size=16", "grid.batch_size=[64]",
                              "data.on_corrupt=skip"))
    assert problem is not None and "exceeds the training split" in problem, problem


@pytest.mark.parametrize("args, culprit", [
    (["train.epochs=0"], "error: train.epochs: must be >= 1, got 0"),
    (["data=folder", "data.path=/nonexistent"], "error: data path does not exist: /nonexistent"),
])
def test_the_command_exits_2_with_one_line_and_writes_nothing(args, culprit, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=cli_env(KVP_CACHE_DIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == culprit and proc.stdout == ""  # one line; Ray never started
    assert not (tmp_path / "outputs").exists()


def test_a_directory_holding_a_sweep_is_refused_before_hydra_writes_into_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KVP_CACHE_DIR", str(tmp_path / "cache"))
    first = tmp_path / "first"
    first.mkdir()
    (first / "sweep.json").write_text("{}")
    problem = preflight([*FAKE, f"hydra.run.dir={first}"])
    assert problem is not None and "already holds a sweep" in problem
    assert sorted(p.name for p in first.iterdir()) == ["sweep.json"]


def test_run_dirs_started_in_the_same_instant_never_collide(tmp_path):
    now = datetime(2026, 1, 2, 3, 4, 5, 678901)
    dirs = [new_run_dir(tmp_path, now) for _ in range(20)]
    assert len(set(dirs)) == 20 and all(d.is_dir() and not any(d.iterdir()) for d in dirs)
    assert all(d.parent.name == "2026-01-02" and d.name.startswith("03-04-05.678901-") for d in dirs)


def test_the_command_line_gets_a_fresh_run_dir_unless_one_is_given_or_resumed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = argv_with_defaults([]), argv_with_defaults([])
    run_a = next(x for x in a if x.startswith("hydra.run.dir="))
    run_b = next(x for x in b if x.startswith("hydra.run.dir="))
    assert run_a != run_b
    assert argv_with_defaults(["hydra.run.dir=x"]).count("hydra.run.dir=x") == 1
    assert "hydra.run.dir=old/run" in argv_with_defaults(["runner.resume=old/run"])
