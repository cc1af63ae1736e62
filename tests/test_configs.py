"""Every config option composes, resolves and points at code that exists (lightning-hydra-template style)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core.config import SCHEMAS, validate
from runner import CONF_DIR

GROUPS = ["data", "model", "framework", "parity", "train", "runner", "report"]
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _compose(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def test_every_group_has_options_and_the_default_is_one_of_them():
    cfg = _compose([])
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"
    assert cfg.data.name == "eurosat_mini"
    assert set(cfg.grid.framework) >= {"keras", "pytorch"}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option in ("eurosat", "folder"):
        overrides.append("data.path=/somewhere")  # required (???) for these sources
    cfg = _compose(overrides)
    schemas = SCHEMAS[group].values()
    assert OmegaConf.get_type(cfg[group]) in schemas, f"conf/{group}/{option}.yaml names no schema of core/config.py"
    validate(cfg)  # every shipped option passes its own range checks
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container[group] is not None
    target = container[group].get("_target_") if isinstance(container[group], dict) else None
    if target:
        assert callable(_locate(target)), target


def _locate(target: str):
    from hydra._internal.utils import _locate as locate

    return locate(target)


def test_paths_required_for_external_data_are_missing_until_given():
    cfg = _compose(["data=eurosat"])
    assert OmegaConf.is_missing(cfg.data, "path")


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_with_plus(sweep):
    cfg = _compose([f"+sweep={sweep}"])
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    assert all(isinstance(v, list) and v for v in grid.values() if v is not None), grid
    validate(cfg)


def test_sweeps_combine_and_axes_override_on_the_command_line():
    cfg = _compose(["+sweep=[seeds,batch_sizes]", "grid.framework=[pytorch]"])
    assert list(cfg.grid.seed) == list(range(10))
    assert list(cfg.grid.batch_size) == [32, 64, 128, 256]
    assert list(cfg.grid.framework) == ["pytorch"]
    cfg = _compose(["grid.seed=[0,1,2]", "grid.batch_size=[32,64]"])
    assert list(cfg.grid.seed) == [0, 1, 2] and list(cfg.grid.batch_size) == [32, 64]


def test_full_sweep_is_the_union_of_the_others():
    cfg = _compose(["+sweep=full"])
    assert len(cfg.grid.seed) == 10 and len(cfg.grid.batch_size) == 4
    assert set(cfg.grid.framework) == {"keras", "pytorch", "keras_jax", "keras_torch"}


def test_hydra_output_dir_convention():
    cfg = _compose([], hydra=True)
    assert cfg.hydra.run.dir.startswith("outputs/")
    assert len(Path(cfg.hydra.run.dir).parts) == 3  # outputs/<date>/<time>


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("num_classes", [2, 10])
def test_model_specs_instantiate_for_both_heads(model, num_classes):
    from hydra.utils import instantiate

    cfg = _compose([f"model={model}"])
    spec = instantiate(cfg.model, num_classes=num_classes, image_size=64)
    assert spec.head_units == (1 if num_classes == 2 else num_classes)
    assert spec.param_counts()["trainable"] > 0


def test_embedded_default_data_ships_with_the_repo():
    cfg = _compose([])
    path = Path(OmegaConf.to_container(cfg.data, resolve=True)["path"])
    assert path.is_dir(), f"embedded dataset missing at {path}"
    assert (path / "LICENSE").is_file(), "the EuroSAT subset must carry the MIT notice"


def test_the_framework_registry_and_conf_framework_agree():
    from core.registry import FRAMEWORKS

    assert options("framework") == sorted(FRAMEWORKS)
    for name, row in FRAMEWORKS.items():
        cfg = _compose([f"framework={name}"])
        assert (cfg.framework.name, cfg.framework.backend) == (name, row.backend)
        module, cls = row.adapter.split(":")
        assert (Path(CONF_DIR).parent / (module.replace(".", "/") + ".py")).is_file(), row.adapter
