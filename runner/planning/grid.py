"""The sweep grid: validated axes → fully resolved cells, in a fair dispatch order.

``grid`` in the root config lists axes; the cartesian product of their values is the set of cells.
Required axes: ``framework``, ``seed``, ``batch_size``, ``device``. Optional axes: ``precision``
(→ ``parity.precision``), ``execution`` (→ ``parity.execution``: default | compiled), ``pipeline``
(→ ``train.pipeline`` from ``conf/pipeline/<name>.yaml``), ``model`` (→ ``conf/model/<name>.yaml``)
and ``data`` (→ ``conf/data/<name>.yaml``). A cell is a plain dict with ``data, model, framework,
parity, train, seed, device`` — what ``runner.cell.run.run_cell`` takes — and its id is
``runner.cell.identity.cell_id`` (a hash of exactly that).

Validation happens in two steps, both before any cell is dispatched:

1. ``runner.planning.checks.check_sweep(cfg)`` — without a cluster, once per sweep: the schemas
   (``core.config``: unknown, empty or repeated axes, seeds, batch sizes, precision, execution), then
   ``plan(cfg)`` here (the options of the framework/model/data/pipeline axes, device words), then the
   checks across groups and against the data.
2. ``resolve_devices(values, inventory)`` + ``GridPlan.cells(devices)`` — once Ray is up: ``auto``
   and ``all`` become concrete devices, and a device the cluster lacks is one clear error.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.arms import ArmError, arm_text, parse_arm
from core.config import GRID_AXES
from runner import CONF_DIR
from runner.errors import GridError

#: TF32 is a tensor-core mode of NVIDIA GPUs; on a CPU it would silently mean fp32, so a CPU cell
#: asking for it is refused rather than recorded under a misleading label. (mixed_bf16 does run on
#: CPUs in both frameworks, slowly, so it is allowed.)
GPU_ONLY_PRECISIONS = ("tf32",)
DEVICE_WORDS = ("cpu", "gpu", "gpu:<accelerator type>", "auto", "all")


# ---------------------------------------------------------------------------------------------
# config groups
# ---------------------------------------------------------------------------------------------
def choices(group: str) -> list[str]:
    """Option names of a config group (the ``conf/<group>/*.yaml`` stems)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _load_option(group: str, name: str) -> dict[str, Any]:
    from core.config import ConfigError, load_option, validate

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise GridError(f"grid.{group}: unknown {group} {name!r}; choose from {choices(group)}")
    try:
        node = load_option(group, path)
        validate(node)
    except (ConfigError, OmegaConfBaseException) as exc:
        raise GridError(f"conf/{group}/{name}.yaml: {' '.join(str(exc).split())}") from None
    return _resolve(node, f"conf/{group}/{name}.yaml")


def _resolve(node: Any, where: str) -> Any:
    if not OmegaConf.is_config(node):
        return copy.deepcopy(node)
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        raise GridError(f"{where}: value {key} cannot be resolved: {' '.join(str(exc).split())}") from None


def model_name(model_cfg: Mapping[str, Any]) -> str:
    """``core.spec.small_cnn`` → ``small_cnn`` (the option name of ``conf/model/``)."""
    return str(model_cfg.get("_target_", "")).rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------
# axes
# ---------------------------------------------------------------------------------------------
def read_axes(grid: Any) -> dict[str, list[Any]]:
    """The ``grid`` node → {axis: values} in ``GRID_AXES`` order (the schema, ``core.config.GridConfig``,
    has already refused unknown, missing, empty and repeated axes); each value checked and normalised."""
    if OmegaConf.is_config(grid):
        grid = _resolve(grid, "grid")
    axes: dict[str, list[Any]] = {}
    for axis in GRID_AXES:
        if grid.get(axis) is None:
            continue
        values = grid[axis]
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        axes[axis] = [_check_value(axis, v) for v in values]
    return axes


def _check_value(axis: str, v: Any) -> Any:
    """Values the schema cannot know: config-group options (``conf/<axis>/``) and device words. A
    framework value may be an arm, ``<framework>@<pins>`` (``core.arms``): written back in its one form."""
    if axis == "framework" and "@" in str(v):
        try:
            return arm_text(*parse_arm(v))
        except ArmError as exc:
            raise GridError(str(exc)) from None
    if axis in ("framework", "model", "data", "pipeline"):
        if str(v) not in choices(axis):
            raise GridError(f"grid.{axis}: unknown {axis} {v!r}; choose from {choices(axis)}")
        return str(v)
    if axis in ("seed", "batch_size"):
        return int(v)
    if axis == "device":
        return parse_device(v)
    return v  # precision, execution: choices checked by the schema


def parse_device(v: Any) -> str:
    text = str(v).strip()
    if text in ("cpu", "gpu", "auto", "all"):
        return text
    if text.startswith("gpu:") and text[4:].strip():
        return "gpu:" + text[4:].strip()
    raise GridError(f"grid.device: unknown device {v!r}; use one of {list(DEVICE_WORDS)}")


# ---------------------------------------------------------------------------------------------
# devices (need the cluster)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInventory:
    """What the cluster offers: CPUs, and GPU counts by accelerator type (``None`` = type not reported)."""

    cpu: bool = True
    gpus: Mapping[str | None, int] = field(default_factory=dict)

    @property
    def gpu_count(self) -> int:
        return sum(self.gpus.values())

    def describe(self) -> str:
        parts = ["cpu"] if self.cpu else []
        parts += [f"{n} × gpu" + (f":{t}" if t else " (type not reported)") for t, n in sorted(
            self.gpus.items(), key=lambda kv: str(kv[0]))]
        return ", ".join(parts) or "nothing"


def resolve_devices(values: Sequence[str], inventory: DeviceInventory) -> list[str]:
    """``auto``/``all`` → concrete devices; a device the cluster lacks ⇒ GridError. Order kept, repeats dropped."""
    out: list[str] = []
    for v in values:
        if v == "auto":
            resolved = ["gpu" if inventory.gpu_count else "cpu"]
        elif v == "all":
            resolved = (["cpu"] if inventory.cpu else []) + [f"gpu:{t}" if t else "gpu" for t in sorted(
                inventory.gpus, key=str) if inventory.gpus[t]]
        elif v == "cpu":
            if not inventory.cpu:
                raise GridError("grid.device: 'cpu' requested but the cluster has no CPU slot "
                                f"(it has {inventory.describe()})")
            resolved = ["cpu"]
        elif v == "gpu":
            if not inventory.gpu_count:
                raise GridError("grid.device: 'gpu' requested but the cluster has no GPU "
                                f"(it has {inventory.describe()}); use grid.device=[cpu] or [auto]")
            resolved = ["gpu"]
        else:  # gpu:<type>
            wanted = v.split(":", 1)[1]
            match = [t for t in inventory.gpus if t and t.lower() == wanted.lower() and inventory.gpus[t]]
            if not match:
                types = sorted(t for t in inventory.gpus if t)
                raise GridError(f"grid.device: {v!r} requested but the cluster has no {wanted} GPU "
                                f"(it has {inventory.describe()}; GPU types: {types or 'none reported'})")
            resolved = [f"gpu:{match[0]}"]
        out += [d for d in resolved if d not in out]
    return out


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
@dataclass
class GridPlan:
    """A validated grid: the axes plus the resolved config parts every cell starts from."""

    axes: dict[str, list[Any]]
    base: dict[str, Any]  # data, model, framework, parity, train (resolved, plain)
    options: dict[str, dict[str, dict[str, Any]]]  # group → option name (framework: arm) → resolved node
    #: Arms with package pins → what their environment installs (``runner.planning.arms.ArmEnv``), filled
    #: by ``runner.planning.checks.check_sweep``; the actors of such an arm run in that environment.
    arm_envs: dict[str, Any] = field(default_factory=dict)

    @property
    def device_values(self) -> list[str]:
        return list(self.axes["device"])

    @property
    def frameworks(self) -> list[str]:
        """The framework axis: names and arms (``keras_jax@keras==3.14.0``)."""
        return list(self.axes["framework"])

    def arms(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """``{arm: (framework name, pins)}`` of the framework axis (pins empty: the base environment)."""
        pins = {v: tuple(sorted(node.get("packages") or ())) for v, node in self.options["framework"].items()}
        return {arm_text(node["name"], pins[v]): (node["name"], pins[v]) for v, node in self.options["framework"].items()}

    def size(self, devices: Sequence[str] | None = None) -> int:
        n = 1
        for axis, values in self.axes.items():
            n *= len(devices) if axis == "device" and devices is not None else len(values)
        return n

    def cells(self, devices: Sequence[str]) -> list[dict[str, Any]]:
        """Every cell, in expansion order (framework innermost), for concrete ``devices``."""
        from runner.cell.identity import cell_id

        axes = dict(self.axes, device=list(devices))
        names = [a for a in GRID_AXES if a in axes]
        cells = []
        for values in itertools.product(*(axes[a] for a in names)):
            point = dict(zip(names, values))
            cell = self._cell(point)
            _check_combination(cell, point)
            cell_id(cell)  # raises on a malformed cell now, not in an actor
            cells.append(cell)
        ids = [cell_id(c) for c in cells]
        if len(set(ids)) != len(ids):  # e.g. two axis values that resolve to the same config
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise GridError(f"grid: different axis values give identical cells {dup}; remove the duplicate values")
        return cells

    def _cell(self, point: Mapping[str, Any]) -> dict[str, Any]:
        cell = copy.deepcopy(self.base)
        cell["framework"] = copy.deepcopy(self.options["framework"][point["framework"]])
        if not cell["framework"].get("packages"):  # the base environment: no key, so its cell ids stay as they were
            cell["framework"].pop("packages", None)
        if "model" in point:
            cell["model"] = copy.deepcopy(self.options["model"][point["model"]])
        if "data" in point:
            cell["data"] = copy.deepcopy(self.options["data"][point["data"]])
        if "precision" in point:
            cell["parity"]["precision"] = point["precision"]
        if "execution" in point:
            cell["parity"]["execution"] = point["execution"]
        if "pipeline" in point:
            cell["train"]["pipeline"] = _load_option("pipeline", point["pipeline"])
        cell["train"]["batch_size"] = int(point["batch_size"])
        cell["seed"] = int(point["seed"])
        cell["device"] = point["device"]
        return cell


def _check_combination(cell: Mapping[str, Any], point: Mapping[str, Any]) -> None:
    precision = cell["parity"].get("precision")
    if precision in GPU_ONLY_PRECISIONS and not str(cell["device"]).startswith("gpu"):
        raise GridError(f"precision={precision} needs a GPU but the grid pairs it with device={cell['device']}; "
                        f"drop {cell['device']} from grid.device or {precision} from grid.precision")


def _option_from_config(group: str, name: str, composed: Mapping[str, Any] | None, selected: str | None) -> dict:
    # The option the root config selected keeps its command-line overrides (e.g. model.filters=[4,8]);
    # other options of an axis come from their files as shipped.
    if composed is not None and selected == name:
        return copy.deepcopy(dict(composed))
    return _load_option(group, name)


def plan(cfg: Any) -> GridPlan:
    """The grid of a schema-checked config expanded against the config groups (no cluster needed).
    Raises GridError. ``runner.planning.checks.check_sweep`` checks the schemas, calls this, then checks
    across groups and against the data."""
    root = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    axes = read_axes(root.grid)
    base = {part: _resolve(root[part], part) for part in ("data", "model", "framework", "parity", "train")}
    if "tf32" in axes.get("precision", [base["parity"].get("precision")]) and "cpu" in axes["device"]:
        raise GridError("precision=tf32 needs a GPU but grid.device includes cpu; drop one of them")
    options: dict[str, dict[str, dict[str, Any]]] = {
        "framework": {f: _arm_option(f, base["framework"]) for f in axes["framework"]},
        "model": {m: _option_from_config("model", m, base["model"], model_name(base["model"]))
                  for m in axes.get("model", [])},
        "data": {d: _option_from_config("data", d, base["data"], base["data"].get("name"))
                 for d in axes.get("data", [])},
    }
    for f, node in options["framework"].items():
        name = parse_arm(f)[0]
        if node.get("name") != name:
            raise GridError(f"conf/framework/{name}.yaml: its name is {node.get('name')!r}, expected {name!r}")
    return GridPlan(axes=axes, base=base, options=options)


def _arm_option(value: str, composed: Mapping[str, Any]) -> dict[str, Any]:
    """The framework node of a grid value: the framework's option, with the arm's pins as ``packages``
    (a plain name keeps what the option has: ``framework.packages`` of the selected one, else none)."""
    name, pins = parse_arm(value)
    node = _option_from_config("framework", name, composed, composed.get("name"))
    if pins:
        node["packages"] = list(pins)
    return node


# ---------------------------------------------------------------------------------------------
# dispatch order
# ---------------------------------------------------------------------------------------------
def condition_key(cell: Mapping[str, Any]) -> str:
    """Everything but the framework: cells with one key are compared with each other (paired)."""
    from runner.cell.identity import cell_id

    return cell_id({**cell, "framework": {"name": "*"}})


def interleave(cells: Iterable[Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Cells in dispatch order: one block per condition, frameworks in a seeded random order within each.

    Every framework of a condition runs right beside the others, and which goes first is drawn
    afresh per block (``core.seeding.rng(seed, "interleave", block)``), so slow drift over a
    sweep (thermal throttling, background load) cannot systematically favour one framework.
    """
    from core.seeding import rng

    blocks: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        blocks.setdefault(condition_key(cell), []).append(dict(cell))
    ordered: list[dict[str, Any]] = []
    for i, block in enumerate(blocks.values()):
        ordered += [block[j] for j in rng(int(seed), "interleave", i).permutation(len(block))]
    return ordered
