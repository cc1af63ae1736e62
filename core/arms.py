"""An arm of a comparison: a framework at a version — its registry name plus package pins.

The grid names an arm as ``<framework>@<pins>``: ``keras_jax@keras==3.14.0``, several pins comma
separated (``'keras_jax@keras==3.14.0,jax==0.4.38'``, quoted for Hydra), a bare version pinning the
framework's own package (``keras_jax@3.14.0`` = ``keras_jax@keras==3.14.0``), or a path to a wheel
or project (``fake@/tmp/probe-1.0-py3-none-any.whl``). A plain name is the framework in the base
environment. The pins land in the cell as ``framework.packages`` (so they are part of its id); the
runner gives the arm's actors an environment with exactly those packages on top of the base one
(``runner.cluster.arm_envs``), and what ran is what the actor imported (``framework_version``,
``versions``), never the pin.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from core.registry import FRAMEWORKS

ARM_SEPARATOR = "@"
#: ``name<op>version`` (PEP 440 operators), optionally ``name[extra]`` and several comma-free clauses.
_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9._,-]+\])?\s*"
                          r"(?P<spec>(===|==|~=|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+)$")
_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+!_-]*$")
_PATH = re.compile(r"^(/|\./|\.\./|file:|https?:)")
_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)-.*\.whl$")


class ArmError(ValueError):
    """An arm or pin the grid cannot read (the message names it and says what is accepted)."""


def canonical_name(name: str) -> str:
    """PEP 503 normalised package name: ``Keras_Hub`` → ``keras-hub``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pin_name(pin: str) -> str | None:
    """The package a pin installs (canonical), or ``None`` for a path/URL whose name only its metadata
    knows (a wheel's file name says it: ``probe-1.0-py3-none-any.whl`` → ``probe``)."""
    m = _REQUIREMENT.match(pin)
    if m:
        return canonical_name(m.group("name"))
    wheel = _WHEEL.match(pin.rsplit("/", 1)[-1])
    return canonical_name(wheel.group("name")) if wheel else None


def check_pin(pin: str, where: str) -> str:
    """One pin, stripped; ``ArmError`` unless it is ``name<op>version`` or a path/URL."""
    pin = str(pin).strip()
    if _REQUIREMENT.match(pin) or _PATH.match(pin):
        return pin
    raise ArmError(f"{where}: cannot read the pin {pin!r}; write package==version (or another PEP 440 "
                   "operator), a bare version for the framework's own package, or a path to a wheel")


def parse_arm(text: Any) -> tuple[str, tuple[str, ...]]:
    """``keras_jax@keras==3.14.0,jax==0.4.38`` → (``keras_jax``, (``jax==0.4.38``, ``keras==3.14.0``)).

    The framework must be in the registry; pins are sorted (their order does not make another arm),
    a bare version becomes a pin of the framework's package. ``ArmError`` names what is wrong."""
    text = str(text).strip()
    name, sep, rest = text.partition(ARM_SEPARATOR)
    name = name.strip()
    if name not in FRAMEWORKS:
        raise ArmError(f"grid.framework: unknown framework {name!r} in {text!r}; choose one of {list(FRAMEWORKS)}"
                       + (" (an arm is <framework>@<pins>, e.g. keras_jax@keras==3.14.0)" if sep else ""))
    if not sep:
        return name, ()
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if not parts:
        raise ArmError(f"grid.framework: {text!r} names no pin after '@'; e.g. {name}@{FRAMEWORKS[name].package}==<version>")
    pins = []
    for part in parts:
        if _VERSION.match(part):  # keras_jax@3.14.0: the framework's own package
            part = f"{FRAMEWORKS[name].package}=={part}"
        pins.append(check_pin(part, f"grid.framework {text!r}"))
    names = [pin_name(p) for p in pins]
    repeated = sorted({n for n in names if n is not None and names.count(n) > 1})
    if repeated:
        raise ArmError(f"grid.framework: {text!r} pins {repeated} more than once")
    return name, tuple(sorted(pins))


def arm_text(name: str, packages: Iterable[str] = ()) -> str:
    """The arm as the grid writes it: ``keras_jax`` or ``keras_jax@keras==3.14.0`` (pins sorted)."""
    packages = sorted(str(p) for p in packages or ())
    return f"{name}{ARM_SEPARATOR}{','.join(packages)}" if packages else name


def arm_of(framework_node: Mapping[str, Any]) -> str:
    """The arm of a cell's ``framework`` node (its name and ``packages``)."""
    return arm_text(str(framework_node["name"]), framework_node.get("packages") or ())
