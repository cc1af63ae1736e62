"""Shared helpers for the runner tests: composing the real config, shrinking it, reading results.

Everything runs the numpy-only ``fake`` framework on tiny synthetic data; Ray is started once per
test module (``local_ray``) because its start-up dominates on a 2-core machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq
from hydra import compose, initialize_config_dir

from core.registry import FRAMEWORK_ONLY_MODULES
from runner import CONF_DIR, PROJECT_ROOT

#: A tiny, fast cell: numpy fake framework, 16×16 synthetic images (4 classes × 16), one epoch.
FAKE = [
    "framework=fake", "grid.framework=[fake]", "data=synthetic", "data.samples_per_class=16", "train=tiny",
    "train.inference.min_calls=2", "train.inference.warmup_calls=0", "grid.batch_size=[32]", "grid.device=[cpu]",
    "runner.progress=false", "report.enabled=false", "runner.parity_gate=false",
    "train.memory.fresh_process=false",  # the fresh-process memory probe has tests of its own (test_trained_model)
    "deploy=off",  # a serving process per cell would double most cells' time; tests/test_deploy.py turns it on
]


def compose_cfg(overrides: Iterable[str] = (), fake: bool = True):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=[*(FAKE if fake else []), *overrides])


def runs(out_dir: Path):
    return pq.read_table(Path(out_dir) / "runs.parquet").to_pandas()


def fragment_ids(out_dir: Path) -> set[str]:
    root = Path(out_dir) / "fragments"
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", PYTHONUNBUFFERED="1", **extra)
    if "HOME" in extra:  # a new user's machine: no Ray token of an earlier run (~/.ray/auth_token) either
        for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(var, None)
    return env


def run_cli(args: list[str], timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """``python -m runner <args>`` in a subprocess (stdout and stderr together)."""
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=PROJECT_ROOT, env=cli_env(**env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


DEEP_LEARNING = tuple(sorted(FRAMEWORK_ONLY_MODULES))  # every module an adapter, exporter or serving runtime imports


def frameworks_imported_by(code: str, **env: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (what a sweep's driver does) and return the deep-learning
    frameworks it imported. A fresh process, because the test process may have imported anything."""
    probe = f"{code}\nimport sys\nprint('IMPORTED', sorted(m for m in {DEEP_LEARNING!r} if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=cli_env(**env), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0 and "IMPORTED " in proc.stdout, proc.stdout[-3000:]
    return eval(proc.stdout.rsplit("IMPORTED ", 1)[1].strip())


def make_wheel(folder: Path, name: str = "kvp_probe", version: str = "1.0") -> Path:
    """A tiny pure-Python wheel (no dependencies) written by hand, so arm tests pin a package without
    network: ``fake@<this path>`` installs it into the arm's environment."""
    import base64
    import hashlib
    import zipfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f'__version__ = "{version}"\n',
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: kvp-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(text: str) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},{digest(c)},{len(c.encode())}\n" for p, c in files.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for p, c in files.items():
            wheel.writestr(p, c)
        wheel.writestr(f"{info}/RECORD", record)
    return path
