"""Helpers for the cell tests: compose the real Hydra config into one small, resolved cell dict."""
from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_dir

from runner import CONF_DIR
from runner.cell.run import cell_from_config

#: A tiny, fast cell: 4-class synthetic 16×16 images, 40 per class (160 in all), one epoch.
TINY = ("data=synthetic", "data.samples_per_class=40", "train=tiny")


def compose_cell(*overrides: str, framework: str = "fake", base: tuple[str, ...] = TINY) -> dict[str, Any]:
    """The resolved cell that ``python -m runner.cell framework=<f> <base> <overrides>`` would run."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[f"framework={framework}", *base, *overrides])
    return cell_from_config(cfg)
