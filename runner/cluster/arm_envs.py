"""Each arm's environment (``core.arms``), built once per node and cached; its actors run in it.

Why not Ray's ``pip``/``uv`` runtime_env fields: from a virtualenv (``uv run`` makes one) Ray clones
the whole driver environment for every such runtime_env — measured here: 8.7 GB copied in 2 min 20 s
per arm, per node, per Ray session, into the session's temp dir — and then runs ``python -m pip``,
which a uv-made environment does not have, so the set-up fails. Instead each node builds a small
*overlay* environment and Ray starts the arm's actors with it (runtime_env ``py_executable``):

- ``uv venv`` on the base interpreter, plus one ``.pth`` line that appends the base environment's
  site-packages (and runs its ``.pth`` files: the project's editable install) — so the overlay sees
  every base package, and its own packages come first;
- ``uv pip install --no-deps`` of exactly ``ArmEnv.install`` (the pins, plus what the base lacks,
  resolved on the driver against the base versions: ``runner.planning.arms``) — no other package of
  the base environment changes;
- the versions the new interpreter imports are read back and checked against the install list.

The environment lives in ``$KVP_ARM_ENV_DIR`` (default ``.cache/arm-envs/`` in the checkout) under
its content key, built in a temporary directory and renamed into place under a file lock, so
concurrent sweeps share one copy and a later sweep reuses it (a few MB for a Keras release).

The build runs as a Ray task pinned to each node that has slots for the arm; a build that fails or
does not finish within ``runner.arm_env_timeout_s`` is that node's error, with uv's cause (never a
hang: Ray would otherwise retry starting a worker with a missing interpreter for ever).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.arms import pin_name
from core.paths import PROJECT_ROOT
from core.text import one_line
from runner.errors import SweepError
from runner.planning.arms import ArmEnv, one_line_uv, uv_command

ENV_DIR_VAR = "KVP_ARM_ENV_DIR"
READY = "ready.json"
BASE_PTH = "_kvp_base_environment.pth"


def env_root() -> Path:
    """Where this node keeps arm environments: ``$KVP_ARM_ENV_DIR``, else ``.cache/arm-envs/`` in the checkout."""
    return Path(os.environ.get(ENV_DIR_VAR) or PROJECT_ROOT / ".cache" / "arm-envs")


def _base_site() -> str:
    return sysconfig.get_paths()["purelib"]


def env_dir(env: Mapping[str, Any], root: Path | None = None) -> Path:
    """The environment's directory on this node: its content key + this node's base site-packages."""
    base = hashlib.sha256(_base_site().encode()).hexdigest()[:8]
    return (root or env_root()) / f"{env['key']}-{base}"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _uv(args: list[str], timeout: float) -> None:
    proc = subprocess.run([*uv_command(), *args], capture_output=True, text=True, timeout=timeout,
                          env={**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "NO_COLOR": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"uv {args[0]} {args[1] if len(args) > 1 else ''}: {one_line_uv(proc.stderr or proc.stdout)}")


def _read_versions(python: Path, names: Iterable[str]) -> dict[str, str | None]:
    """The versions ``python`` imports of ``names`` (its own interpreter, as the actor will)."""
    code = ("import importlib.metadata as m, json, sys\nout = {}\nfor n in sys.argv[1:]:\n"
            "    try:\n        out[n] = m.version(n)\n    except m.PackageNotFoundError:\n        out[n] = None\n"
            "print(json.dumps(out))")
    proc = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, timeout=300, cwd="/",
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    if proc.returncode != 0:
        raise RuntimeError(f"the new interpreter does not start: {one_line(proc.stderr or proc.stdout, 400)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _expected(install: Iterable[str]) -> dict[str, str | None]:
    """``{name: version}`` the install list promises (None: a path/URL, only its presence is checked)."""
    out = {}
    for line in install:
        name, sep, version = line.partition("==")
        if sep:
            out[pin_name(line) or name.strip().lower()] = version.strip()
        else:
            pkg = pin_name(line) or (line.split(" @ ", 1)[0].strip().lower() if " @ " in line else None)
            if pkg:
                out[pkg] = None
    return out


def build(env: Mapping[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Build (or reuse) ``env`` (``ArmEnv.to_dict()``) on THIS node; returns its interpreter and the
    versions it imports. Raises ``RuntimeError`` with the cause (uv's message, a version mismatch)."""
    t0 = time.time()
    root = env_root()
    target = env_dir(env, root)
    expected = _expected(env["install"])
    info = {"python": str(_python(target / "venv")), "host": os.uname().nodename, "cached": True}
    if (target / READY).is_file():
        return {**info, "versions": json.loads((target / READY).read_text())["versions"], "seconds": time.time() - t0}
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{target.name}.lock", "w")
    except OSError as exc:
        raise RuntimeError(f"cannot write the arm environment cache {root} ({exc.strerror or exc}); "
                           f"set {ENV_DIR_VAR} to a writable directory") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another sweep on this node may be building the same environment
        if (target / READY).is_file():
            return {**info, "versions": json.loads((target / READY).read_text())["versions"], "seconds": time.time() - t0}
        tmp = root / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            venv = tmp / "venv"
            _uv(["venv", "--quiet", "--relocatable", "--python", sys.executable, str(venv)], timeout)
            site = Path(subprocess.run([str(_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       capture_output=True, text=True, check=True, timeout=120).stdout.strip())
            # Appended after the overlay's own site-packages, with the base's .pth files run (editable installs).
            (site / BASE_PTH).write_text(f"import site; site.addsitedir({_base_site()!r})\n")
            _uv(["pip", "install", "--quiet", "--no-deps", "--compile-bytecode", "--python", str(_python(venv)),
                 *env["install"]], timeout)
            versions = _read_versions(_python(venv), expected)
            wrong = {n: (v, versions.get(n)) for n, v in expected.items()
                     if versions.get(n) is None or (v is not None and versions.get(n) != v)}
            if wrong:
                raise RuntimeError("the built environment imports " + ", ".join(
                    f"{n} {got or 'nothing'} (expected {want or 'installed'})" for n, (want, got) in wrong.items()))
            (tmp / READY).write_text(json.dumps({**env, "versions": versions, "base_site": _base_site(),
                                                 "built": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
            os.replace(tmp, target)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(map(str, exc.cmd[:3]))} did not finish within {exc.timeout:.0f} s") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {**info, "cached": False, "versions": versions, "seconds": time.time() - t0}


def prepare(ray, envs: Mapping[str, ArmEnv], nodes: Mapping[str, str], timeout: float
            ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """Build each arm's environment on each node that runs it, in parallel Ray tasks pinned to the node.

    ``envs``: arm → its environment; ``nodes``: node id → how to name it (``host (ip)``). Returns
    ({(arm, node id): interpreter}, {(arm, node id): why it could not be built}) — a node that does not
    answer within ``timeout`` seconds is a failure too (its task is cancelled)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(build)
    refs = {}
    for arm, env in envs.items():
        for node in nodes:
            refs[task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node, soft=False)).remote(env.to_dict(), timeout)] = (arm, node)
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout) if refs else ([], [])
    built: dict[tuple[str, str], str] = {}
    failed: dict[tuple[str, str], str] = {}
    for ref in ready:
        try:
            built[refs[ref]] = ray.get(ref)["python"]
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc  # the task's own exception (uv's message), not Ray's wrapper
            failed[refs[ref]] = one_line(cause, 600)
    for ref in pending:
        failed[refs[ref]] = f"not built within runner.arm_env_timeout_s={timeout:g} s"
        ray.cancel(ref, force=True)
    return built, failed


def failure_message(failed: Mapping[tuple[str, str], str], envs: Mapping[str, ArmEnv], nodes: Mapping[str, str]) -> str:
    """One line per sweep: which arm's environment failed on which node, and why."""
    return "; ".join(f"arm {arm} ({', '.join(envs[arm].pins)}): its environment could not be built on node "
                     f"{nodes.get(node, node)}: {why}" for (arm, node), why in sorted(failed.items()))


def require(ray, envs: Mapping[str, ArmEnv], nodes: Mapping[str, str], timeout: float) -> dict[tuple[str, str], str]:
    """``prepare``, and a ``SweepError`` naming every (arm, node) that failed."""
    built, failed = prepare(ray, envs, nodes, timeout)
    if failed:
        raise SweepError(failure_message(failed, envs, nodes))
    return built
