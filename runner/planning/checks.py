"""Every check of a sweep's input, in one place, before Ray starts (exit 2, one line, nothing written).

1. The schemas (``core.config.validate``): unknown keys, types, ranges, choices of every group.
2. The grid (``runner.planning.grid.plan``): axes, options of the model/data/framework axes, device words;
   the arms with package pins resolved against the base environment (``runner.planning.arms``: a pin
   that cannot be installed — no such release, no network — names the arm and the pin).
3. Across groups: each model fits each dataset's image size (the spec's own error), and — with the
   data prepared on the driver (decoded once into the shared cache the cells read anyway) — the
   data path exists, holds >= 2 classes and no unreadable image (``data.on_corrupt=error``), and
   every batch size fits the training split.

A batch size larger than the training split is an error, not a clamp: every step would be one
partial batch and the batch-size axis would no longer mean what it says.
"""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.config import ConfigError, validate
from core.errors import DataError
from runner.planning import arms as armlib
from runner.planning import grid as gridlib
from runner.errors import GridError


def check_config(cfg: Any) -> None:
    """The schemas' range and choice checks (composition already checked keys and types)."""
    try:
        validate(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))
    except ConfigError as exc:
        raise GridError(str(exc)) from None
    except OmegaConfBaseException as exc:
        raise GridError(one_line_omegaconf(exc)) from None


def check_sweep(cfg: Any, *, data: bool = True) -> gridlib.GridPlan:
    """All checks of a sweep; returns its validated plan. ``data=False`` skips preparing the data."""
    check_config(cfg)
    plan = gridlib.plan(cfg)
    plan.arm_envs = armlib.resolve_arms(plan.arms())
    datas = [plan.options["data"][d] for d in plan.axes["data"]] if "data" in plan.axes else [plan.base["data"]]
    models = [plan.options["model"][m] for m in plan.axes["model"]] if "model" in plan.axes else [plan.base["model"]]
    for data_cfg in datas:
        for model_cfg in models:
            check_model_fits(model_cfg, data_cfg)
        if data:
            check_data(data_cfg, seed=plan.axes["seed"][0], batch_sizes=plan.axes["batch_size"])
    return plan


def check_model_fits(model_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any]) -> None:
    """Build the model spec for the data's image size; the spec's own error names the problem."""
    import hydra.utils

    image_size = data_cfg.get("image_size")
    num_classes = data_cfg.get("num_classes", 2)  # folder data: unknown until prepared; 2 builds any head
    name = gridlib.model_name(model_cfg)
    try:
        hydra.utils.instantiate(model_cfg, num_classes=int(num_classes), image_size=int(image_size), _convert_="all")
    except Exception as exc:  # the spec's ValueError, or an unimportable _target_ (InstantiationException)
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise GridError(f"model {name} × data {data_cfg.get('name')}: {' '.join(str(cause).split())}") from None


def check_data(data_cfg: Mapping[str, Any], *, seed: int, batch_sizes: list[int]) -> None:
    """Prepare the data on the driver (path, classes, unreadable images) and fit the batch sizes to it."""
    from runner.data import prepare

    try:
        ds = prepare(data_cfg, seed)
    except DataError as exc:
        raise GridError(str(exc)) from None
    train = len(ds.train_idx)
    too_big = [b for b in batch_sizes if b > train]
    if too_big:
        raise GridError(f"batch size {too_big} exceeds the training split of data {ds.name!r} ({train} images); "
                        "lower grid.batch_size (a batch larger than the split is refused, not clamped)")


def one_line_omegaconf(exc: BaseException) -> str:
    """OmegaConf's/Hydra's own message on one line (its unindented lines, minus the hint to append),
    prefixed with the full key when the message does not name it."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.startswith((" ", "\t")) and not ln.startswith("To append to your config")]
    text = " ".join(lines) or type(exc).__name__
    key = str(getattr(exc, "full_key", "") or "")
    return f"{key}: {text}" if key and key not in text else text
