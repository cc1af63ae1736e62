"""A cell's identity: the part of its config that defines what it computes, and its stable id.

``cell_id`` is a hash of exactly ``IDENTITY_KEYS`` (cache locations left out, paths inside the
checkout made relative), so it is the same on every machine, process and checkout location.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

from core.arms import arm_of
from core.paths import PROJECT_ROOT

#: The parts of a resolved config that define what a cell computes (its identity).
IDENTITY_KEYS = ("data", "model", "framework", "parity", "train", "seed", "device")
#: Keys of the ``data`` node that say where things are cached, not what the data is.
_DATA_LOCATION_KEYS = ("cache_dir",)


class CellConfigError(ValueError):
    """A cell config that lacks a part or has one of the wrong shape."""


def plain_containers(value: Any) -> Any:
    """OmegaConf containers / mappings / sequences → plain dicts and lists (recursively)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    if isinstance(value, Mapping):
        return {str(k): plain_containers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_containers(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _relocatable(value: Any) -> Any:
    """Paths inside the checkout are hashed relative to it, so a docker image and a laptop agree."""
    root = str(PROJECT_ROOT)
    if isinstance(value, str) and (value == root or value.startswith(root + "/")):
        return "${project_root:}" + value[len(root):]
    if isinstance(value, dict):
        return {k: _relocatable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocatable(v) for v in value]
    return value


def digest(obj: Any) -> str:
    """sha256 hex of the canonical JSON of ``obj`` (sorted keys, no spaces, ASCII; other types as ``str``)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cell_identity(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The identity part of a resolved cell: ``IDENTITY_KEYS``, minus cache locations, paths relative."""
    cell = plain_containers(cell)
    missing = [k for k in IDENTITY_KEYS if k not in cell]
    if missing:
        raise CellConfigError(f"cell config lacks {missing}; a cell needs {list(IDENTITY_KEYS)}")
    identity = {k: cell[k] for k in IDENTITY_KEYS}
    if not isinstance(identity["data"], dict):
        raise CellConfigError(f"cell config: 'data' must be a mapping, got {type(identity['data']).__name__}")
    identity["data"] = {k: v for k, v in identity["data"].items() if k not in _DATA_LOCATION_KEYS}
    if isinstance(identity["framework"], dict) and not identity["framework"].get("packages"):
        # no pins = the base environment, as before pins existed (core.arms): the same id either way
        identity["framework"] = {k: v for k, v in identity["framework"].items() if k != "packages"}
    return _relocatable(identity)


def cell_id(cell: Mapping[str, Any]) -> str:
    """Stable 16-hex id of a cell: sha256 of the canonical JSON of ``cell_identity``.

    Independent of key order, process, checkout location and dataset cache location; runner,
    report, grid, Hydra and output settings are not part of it.
    """
    return digest(cell_identity(cell))[:16]


def config_hash(cell: Mapping[str, Any]) -> str:
    """16-hex sha256 of the whole cell mapping as given (cache paths and any extra keys included)."""
    return digest(plain_containers(cell))[:16]


def cell_label(cell: Mapping[str, Any]) -> str:
    """``<cell id> (<framework or arm> seed=… batch=… device=…)`` — for the sweep log and actor logs."""
    return (f"{cell_id(cell)} ({arm_of(cell['framework'])} seed={cell['seed']} "
            f"batch={cell['train']['batch_size']} device={cell['device']})")


def cell_words(cell: Mapping[str, Any]) -> str:
    """A cell for a person: ``keras · seed 0 · batch 64 · cpu`` (an arm: ``keras_jax@keras==3.14.0 · …``),
    plus what differs from the defaults
    (``compiled``, ``pipeline native``, ``mixed_bf16``)."""
    parity, train = cell.get("parity") or {}, cell.get("train") or {}
    words = [arm_of(cell["framework"]), f"seed {cell['seed']}", f"batch {train.get('batch_size')}",
             str(cell["device"])]
    if parity.get("execution") not in (None, "default"):
        words.append(str(parity["execution"]))
    pipeline = (train.get("pipeline") or {}).get("name")
    if pipeline not in (None, "device"):
        words.append(f"pipeline {pipeline}")
    if parity.get("precision") not in (None, "fp32"):
        words.append(str(parity["precision"]))
    return " · ".join(words)
