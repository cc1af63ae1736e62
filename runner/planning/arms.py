"""Arms with package pins (``core.arms``), resolved on the driver before Ray starts.

An arm such as ``keras_jax@keras==3.14.0`` runs in the base environment plus exactly the pinned
packages: every other package stays at the version the base environment has. So the pins are
resolved by uv against the base environment's own versions as constraints (``uv pip compile`` with
``--constraints`` = the base freeze minus the pinned names). The outcome is what each node installs
on top of the base (``ArmEnv.install``: the pins, plus any dependency the base lacks), at exact
versions, so every node builds the same environment (``runner.cluster.arm_envs``).

A pin that cannot be installed — no such release, a dependency that would change a base package, no
network — is a ``GridError`` here (exit 2, one line naming the arm and the pin, nothing written),
before any cell runs. Resolution needs the package index; the built environments are cached on each
node, so a later sweep with the same arms installs nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Mapping

from core.arms import arm_text, canonical_name, pin_name
from runner.errors import GridError

#: Seconds one ``uv`` resolution may take before it counts as "no network".
RESOLVE_TIMEOUT_S = 300
#: Environment variable naming the uv executable (else ``uv`` on PATH).
UV_VAR = "KVP_UV"


@dataclass(frozen=True)
class ArmEnv:
    """What one arm's environment installs on top of the base environment, the same on every node."""

    arm: str  # keras_jax@keras==3.14.0 (core.arms.arm_text)
    pins: tuple[str, ...]  # as asked: keras==3.14.0
    install: tuple[str, ...]  # exact requirements installed over the base: the pins + what the base lacks
    key: str  # content hash: the environment's cache directory on every node

    def to_dict(self) -> dict:
        return {"arm": self.arm, "pins": list(self.pins), "install": list(self.install), "key": self.key}


def uv_command() -> list[str]:
    """The uv executable (``KVP_UV``, else ``uv`` on PATH); ``FileNotFoundError`` naming both when absent."""
    exe = os.environ.get(UV_VAR) or shutil.which("uv")
    if not exe:
        raise FileNotFoundError(f"uv is not on PATH (install it: pip install uv; or set {UV_VAR})")
    return [exe]


def one_line_uv(text: str, limit: int = 400) -> str:
    """uv's message on one line: its ``error:``/``cause:``/hint lines, box-drawing marks dropped."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("×╰─▶│ ").strip()
        if line and not line.startswith(("Using Python", "Resolved ", "Audited ")):
            lines.append(line)
    joined = " ".join(lines) or "uv gave no message"
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def _run_uv(args: list[str], *, stdin: str | None = None, timeout: float = RESOLVE_TIMEOUT_S) -> str:
    proc = subprocess.run([*uv_command(), *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 0:
        raise RuntimeError(one_line_uv(proc.stderr or proc.stdout))
    return proc.stdout


def base_versions(python: str = sys.executable) -> dict[str, str]:
    """``{canonical name: version}`` of the base environment (what ``python`` imports), by ``uv pip freeze``."""
    out = _run_uv(["pip", "freeze", "--python", python])
    versions = {}
    for line in out.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and name and not line.startswith(("-e", "#")):
            versions[canonical_name(name)] = version.strip()
    return versions


def _requirement(line: str) -> tuple[str | None, str | None]:
    """A ``uv pip compile`` output line → (canonical name, version or None for a URL/path requirement)."""
    line = line.split("#", 1)[0].strip()
    if " @ " in line:
        return canonical_name(line.split(" @ ", 1)[0].strip()), None
    name, sep, version = line.partition("==")
    return (canonical_name(name.split("[", 1)[0]), version.strip()) if sep else (pin_name(line), None)


def resolve(name: str, pins: tuple[str, ...], *, python: str = sys.executable,
            base: Mapping[str, str] | None = None) -> ArmEnv:
    """Resolve ``pins`` against the base environment of ``python`` (its versions as constraints).
    Raises ``GridError`` naming the arm and its pins when they cannot be installed over it."""
    arm = arm_text(name, pins)
    where = f"grid.framework: arm {arm} cannot be installed ({', '.join(pins)})"
    try:
        base = dict(base) if base is not None else base_versions(python)
        pinned = {pin_name(p) for p in pins}
        with tempfile.TemporaryDirectory(prefix="kvp-arm-") as tmp:
            constraints = os.path.join(tmp, "base-constraints.txt")
            with open(constraints, "w") as fh:  # every base package stays as it is, except the pinned ones
                fh.write("".join(f"{n}=={v}\n" for n, v in sorted(base.items()) if n not in pinned))
            out = _run_uv(["pip", "compile", "-", "--python", python, "--no-header", "--no-annotate",
                           "--constraints", constraints], stdin="\n".join(pins) + "\n")
    except FileNotFoundError as exc:
        raise GridError(f"{where}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise GridError(f"{where}: the package index did not answer within {RESOLVE_TIMEOUT_S} s (no network?)") from None
    except RuntimeError as exc:
        raise GridError(f"{where}: {exc}") from None
    install = []
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        pkg, version = _requirement(line)
        if pkg in pinned or version is None or base.get(pkg) != version:  # the pins, and what the base lacks
            install.append(line)
    if not install:
        raise GridError(f"{where}: uv resolved nothing to install")
    identity = {"python": list(sys.version_info[:3]), "install": sorted(install),
                "files": {p: _file_digest(p) for p in install if os.path.isfile(p)}}  # a local wheel: its bytes
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return ArmEnv(arm=arm, pins=tuple(pins), install=tuple(sorted(install)), key=key)


def _file_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def resolve_arms(arms: Mapping[str, tuple[str, tuple[str, ...]]], *, python: str = sys.executable) -> dict[str, ArmEnv]:
    """``{arm: (framework, pins)}`` → ``{arm: ArmEnv}`` for the arms with pins (the base freeze read once)."""
    pinned = {arm: (name, pins) for arm, (name, pins) in arms.items() if pins}
    if not pinned:
        return {}
    try:
        base = base_versions(python)
    except FileNotFoundError as exc:
        raise GridError(f"grid.framework: arms {sorted(pinned)} need uv to build their environments: {exc}") from None
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise GridError(f"grid.framework: cannot read the base environment's packages ({exc})") from None
    return {arm: resolve(name, pins, python=python, base=base) for arm, (name, pins) in pinned.items()}
