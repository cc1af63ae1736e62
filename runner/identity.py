"""A cell's identity: the part of its config that defines what it computes, and its stable id.

``cell_id`` is a hash of exactly ``IDENTITY_KEYS`` (cache locations left out, paths inside the
checkout made relative), so it is the same on every machine, process and checkout location.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

from core.paths import PROJECT_ROOT

#: The parts of a resolved config that define what a cell computes (its identity).
IDENTITY_KEYS = ("data", "model", "framework", "parity", "train", "seed", "device")
#: Keys of the ``data`` node that say where things are cached, not what the data is.
_DATA_LOCATION_KEYS = ("cache_dir",)


class CellConfigError(ValueError):
    """A cell config that lacks a part or has one of the wrong shape."""


def _plain_containers(value: Any) -> Any:
    """OmegaConf containers / mappings / sequences → plain dicts and lists (recursively)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    if isinstance(value, Mapping):
        return {str(k): _plain_containers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_containers(v) for v in value]
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


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cell_identity(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The identity part of a resolved cell: ``IDENTITY_KEYS``, minus cache locations, paths relative."""
    cell = _plain_containers(cell)
    missing = [k for k in IDENTITY_KEYS if k not in cell]
    if missing:
        raise CellConfigError(f"cell config lacks {missing}; a cell needs {list(IDENTITY_KEYS)}")
    identity = {k: cell[k] for k in IDENTITY_KEYS}
    if not isinstance(identity["data"], dict):
        raise CellConfigError(f"cell config: 'data' must be a mapping, got {type(identity['data']).__name__}")
    identity["data"] = {k: v for k, v in identity["data"].items() if k not in _DATA_LOCATION_KEYS}
    return _relocatable(identity)


def cell_id(cell: Mapping[str, Any]) -> str:
    """Stable 16-hex id of a cell: sha256 of the canonical JSON of ``cell_identity``.

    Independent of key order, process, checkout location and dataset cache location; runner,
    report, grid, Hydra and output settings are not part of it.
    """
    return _digest(cell_identity(cell))[:16]


def config_hash(cell: Mapping[str, Any]) -> str:
    """16-hex sha256 of the whole cell mapping as given (cache paths and any extra keys included)."""
    return _digest(_plain_containers(cell))[:16]
