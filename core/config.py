"""Typed schemas of every config group (Hydra structured configs), registered in Hydra's ConfigStore.

(Over 400 lines on purpose: one file mirrors the whole conf/ tree, so every key, type and range is
found in one place.)

Each ``conf/<group>/<option>.yaml`` starts with ``defaults: [<schema>, _self_]``, so composition
checks it against its schema: an unknown key or a wrong type fails there, with Hydra's own
message. ``validate(cfg)`` then builds the dataclasses (``OmegaConf.to_object``), whose
``__post_init__`` checks ranges and choices — one ``ConfigError`` naming the key. Checks that need
more than one group or the data itself (model fits the image size, data path, classes, batch size
versus the training split) live in ``runner/planning/checks.py``; both run once per sweep, before Ray starts.

These dataclasses are the ONE typed form of each group, from composition to the adapter: the ones
an adapter receives (``ParityConfig``, ``TrainConfig`` with its ``PipelineConfig`` and
``InferenceConfig``, the ``framework`` node) are frozen, so no adapter can change what the row records.

Groups and their schemas: ``data`` (``base_folder``, ``base_eurosat``, ``base_synthetic``), ``model``
(``base_cnn``), ``framework`` (``base_framework``, ``base_pytorch``, ``base_keras``, ``base_fake``), ``parity``
(``base_parity``), ``train`` (``base_train``), ``runner`` (``base_runner``), ``report``
(``base_report``), and the root (``base_config``, with ``grid``). A new group adds its dataclass
here, an entry in ``SCHEMAS`` (or ``PACKAGED``) and a field where its package puts it (``pipeline``
lands at ``train.pipeline``: ``TrainConfig.pipeline``, typed by ``PipelineConfig``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from core.arms import ArmError, check_pin, parse_arm
from core.registry import DEPLOY_FORMATS, FRAMEWORKS

PRECISIONS = ("fp32", "tf32", "mixed_bf16")
EXECUTION_MODES = ("default", "compiled")  # parity.execution (frameworks.base documents what each means)
ON_CORRUPT = ("error", "skip")
#: The grid's axes in expansion order (the one tuple; ``runner.planning.grid`` expands them): the framework
#: axis is innermost, so consecutive cells form blocks that differ only in the framework (the unit that
#: ``runner.planning.grid.interleave`` shuffles).
GRID_AXES = ("data", "model", "precision", "execution", "pipeline", "device", "batch_size", "seed", "framework")


class ConfigError(ValueError):
    """A config value out of range or not one of its choices; the message starts with the key."""


def _filled(node: Any) -> bool:
    """False while the dataclass is a schema default with ``???`` fields (checks run on real values)."""
    return all(getattr(node, f) is not MISSING and getattr(node, f) != MISSING for f in node.__dataclass_fields__)


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _at_least(value: Any, minimum: float, key: str) -> None:
    _check(value is None or value >= minimum, key, f"must be >= {minimum}, got {value!r}")


def _one_of(value: Any, choices: tuple, key: str) -> None:
    _check(value in choices, key, f"{value!r} is not one of {list(choices)}")


# ---- data -----------------------------------------------------------------------------------
@dataclass
class DataConfig:
    _target_: str = MISSING  # a runner.data.sources class, built with hydra.utils.instantiate
    name: str = MISSING
    image_size: int = 64
    test_fraction: float = 0.2  # of all images
    val_fraction: float = 0.1  # of the train+val part
    on_corrupt: str = "error"  # error | skip
    cache_dir: str = MISSING
    #: null: each seed draws its own train/val/test split (resampled design: a claim about the data set; the
    #: quality verdicts use the Nadeau–Bengio corrected variance); an integer: every seed trains on the one
    #: split this seed draws (fixed design: a claim about these data; only training randomness varies).
    split_seed: Optional[int] = None

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _check(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name) is not None, "data.name",
               f"must be a short identifier (letters, digits, _ . -), got {self.name!r}")
        _check(8 <= self.image_size <= 1024, "data.image_size",  # 27,000 × 1024² × 3 bytes is already 85 GB
               f"must be in [8, 1024], got {self.image_size}")
        _check(0 < self.test_fraction < 1, "data.test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        _check(0 <= self.val_fraction < 1, "data.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        _one_of(self.on_corrupt, ON_CORRUPT, "data.on_corrupt")
        _at_least(self.split_seed, 0, "data.split_seed")


@dataclass
class FolderDataConfig(DataConfig):
    path: str = MISSING  # <dir>/<class>/<image>


@dataclass
class EuroSATDataConfig(DataConfig):
    path: str = MISSING  # EuroSAT_RGB.zip or the extracted folder


@dataclass
class SyntheticDataConfig(DataConfig):
    num_classes: int = 4
    samples_per_class: int = 64
    generator_seed: int = 0
    noise: float = 0.08  # std of per-pixel Gaussian noise, [0, 1] units

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _filled(self):
            return
        _check(2 <= self.num_classes <= 64, "data.num_classes", f"must be in [2, 64], got {self.num_classes}")
        _at_least(self.samples_per_class, 2, "data.samples_per_class")
        _at_least(self.generator_seed, 0, "data.generator_seed")
        _check(0 <= self.noise <= 1, "data.noise", f"must be in [0, 1] (std of pixel noise), got {self.noise}")


# ---- model ----------------------------------------------------------------------------------
@dataclass
class CNNConfig:
    _target_: str = MISSING  # core.spec.<builder>, built with hydra.utils.instantiate
    filters: List[int] = MISSING
    kernel_size: int = 3
    dense_units: int = 128
    dropout: float = 0.25

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _check(len(self.filters) > 0 and all(f >= 1 for f in self.filters), "model.filters",
               f"must be a non-empty list of positive integers, got {list(self.filters)}")
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "model.kernel_size",
               f"must be an odd integer >= 1 (symmetric 'same' padding), got {self.kernel_size}")
        _at_least(self.dense_units, 1, "model.dense_units")
        _check(0 <= self.dropout < 1, "model.dropout", f"must be in [0, 1), got {self.dropout}")


# ---- framework ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameworkConfig:
    name: str = MISSING  # a row of core.registry.FRAMEWORKS
    backend: str = MISSING  # must be that row's backend
    #: Package pins of an arm (core.arms): set by the grid's ``<framework>@<pins>``; null = the base environment.
    packages: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _one_of(self.name, tuple(FRAMEWORKS), "framework.name")
        for pin in self.packages or []:
            try:
                check_pin(pin, "framework.packages")
            except ArmError as exc:
                raise ConfigError(str(exc)) from None
        expected = FRAMEWORKS[self.name].backend
        others = [n for n, f in FRAMEWORKS.items() if f.backend == self.backend and n.startswith(self.name[:5])]
        _check(self.backend == expected, "framework.backend",
               f"{self.name} runs on {expected}, not {self.backend!r}"
               + (f"; choose framework={others[0]} for {self.backend}" if others else ""))


@dataclass(frozen=True)
class PyTorchFrameworkConfig(FrameworkConfig):
    memory_format: str = "auto"  # auto (measured on the device: runner/cell/tuning.py) | channels_last | contiguous

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _filled(self):
            return
        _one_of(self.memory_format, ("auto", "channels_last", "contiguous"), "framework.memory_format")


@dataclass(frozen=True)
class KerasFrameworkConfig(FrameworkConfig):
    #: auto (measured on the device) | channels_last (NHWC, Keras' default) | channels_first (NCHW: the model
    #: permutes its NHWC input once, then every conv/pool/BN layer runs channels-first)
    data_format: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _filled(self):
            return
        _one_of(self.data_format, ("auto", "channels_last", "channels_first"), "framework.data_format")


@dataclass(frozen=True)
class FakeHooks:
    """Test hooks of the numpy stand-in (see conf/framework/fake.yaml); null = the environment variable."""

    step_sleep_s: Optional[float] = None
    compile_sleep_s: Optional[float] = None
    predict_warmup_s: Optional[float] = None
    fail: Any = None  # true, or a list of seeds
    crash: Any = None  # true, or a list of seeds
    crash_once_file: Optional[str] = None
    crash_signal: Optional[str] = None
    record_file: Optional[str] = None
    layout_sleep_s: Optional[float] = None  # extra seconds per training step under layout=nchw (a planted difference)
    export_fail: Any = None  # true, or a list of deployment formats: export raises
    export_perturb: Any = None  # true, or a list of formats: the artifact's weights are perturbed after export


@dataclass(frozen=True)
class FakeFrameworkConfig(FrameworkConfig):
    layout: str = "nhwc"  # auto (measured, like the real frameworks' layouts) | nhwc | nchw
    fake: FakeHooks = field(default_factory=FakeHooks)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _filled(self):
            return
        _one_of(self.layout, ("auto", "nhwc", "nchw"), "framework.layout")


# ---- parity ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParityConfig:
    """The knobs of conf/parity/*.yaml; null = the framework's own default. Frozen: every adapter receives
    exactly this object (``frameworks.base.Adapter``), and it keys the adapter cache of an actor."""

    mode: str = "strict"  # strict | framework_defaults
    batchnorm_momentum: Optional[float] = 0.1
    batchnorm_epsilon: Optional[float] = 1e-3
    adam_beta_1: Optional[float] = 0.9
    adam_beta_2: Optional[float] = 0.999
    adam_epsilon: Optional[float] = 1e-7
    weight_init: str = "ported"  # ported | native
    loss_reduction: str = "mean"
    precision: str = "fp32"  # fp32 | tf32 | mixed_bf16
    execution: str = "default"  # default (each framework as its docs run it) | compiled
    cpu_threads: Optional[int] = 2
    deterministic: bool = False

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _one_of(self.mode, ("strict", "framework_defaults"), "parity.mode")
        _one_of(self.weight_init, ("ported", "native"), "parity.weight_init")
        _one_of(self.precision, PRECISIONS, "parity.precision")
        _one_of(self.execution, EXECUTION_MODES, "parity.execution")
        _at_least(self.cpu_threads, 1, "parity.cpu_threads")
        for key in ("batchnorm_momentum", "adam_beta_1", "adam_beta_2"):
            value = getattr(self, key)
            _check(value is None or 0 <= value < 1, f"parity.{key}", f"must be in [0, 1), got {value}")
        for key in ("batchnorm_epsilon", "adam_epsilon"):
            value = getattr(self, key)
            _check(value is None or value > 0, f"parity.{key}", f"must be > 0, got {value}")


# ---- train ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False


@dataclass(frozen=True)
class InferenceConfig:
    """``train.inference``: latency and throughput repeats, driven by time after untimed warm-up calls."""

    warmup_calls: int = 5
    min_calls: int = 20
    min_seconds: float = 1.0
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _at_least(self.warmup_calls, 0, "train.inference.warmup_calls")
        _at_least(self.min_calls, 1, "train.inference.min_calls")
        _at_least(self.min_seconds, 0, "train.inference.min_seconds")
        _at_least(self.max_seconds, 0, "train.inference.max_seconds")


@dataclass(frozen=True)
class MemoryConfig:
    """``train.memory``: how a cell's memory is measured (``runner/cell/probe.py``)."""

    #: true: the Leaner figure comes from a fresh process that imports the framework, loads the data, builds
    #: the cell's model (its measured choices), trains ``steps`` steps, validates and serves it — the same
    #: for every cell whatever ran before in the actor. false: only the actor's own per-cell figures.
    fresh_process: bool = True
    steps: int = 10  # training steps in the fresh process (the working set is reached within the first few)

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _at_least(self.steps, 1, "train.memory.steps")


@dataclass(frozen=True)
class PipelineConfig:
    """``conf/pipeline/*.yaml`` (``# @package train.pipeline``): where batches are made."""

    name: str = "device"  # device | native
    workers: int = 2  # native: DataLoader / PyDataset workers, tf.data thread pool
    prefetch: int = 2  # native: batches prefetched per worker (DataLoader) or by tf.data

    def __post_init__(self) -> None:
        _one_of(self.name, ("device", "native"), "train.pipeline.name")
        _at_least(self.workers, 0, "train.pipeline.workers")
        _at_least(self.prefetch, 0, "train.pipeline.prefetch")


#: Validation metrics a target can be set on, and whether higher is better.
TARGET_METRICS = {"val_accuracy": True, "val_loss": False}


@dataclass(frozen=True)
class TargetConfig:
    """``train.target``: train to a validation quality (MLPerf/AlgoPerf's time-to-result). ``threshold``
    null = no target; ``train.epochs`` is the budget; a cell that misses it within the budget is censored."""

    metric: str = "val_accuracy"  # val_accuracy (>= threshold) | val_loss (<= threshold)
    threshold: Optional[float] = None
    stop: bool = False  # true: stop at the target; false: train the whole budget (converged quality too)

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _one_of(self.metric, tuple(TARGET_METRICS), "train.target.metric")
        if self.threshold is not None and self.metric == "val_accuracy":
            _check(0 < self.threshold <= 1, "train.target.threshold",
                   f"must be in (0, 1] for val_accuracy, got {self.threshold}")
        if self.threshold is not None and self.metric == "val_loss":
            _check(self.threshold > 0, "train.target.threshold", f"must be > 0 for val_loss, got {self.threshold}")

    def words(self) -> str | None:
        """``val_accuracy >= 0.75`` (the ``target`` column), or None without a target."""
        if self.threshold is None:
            return None
        return f"{self.metric} {'>=' if TARGET_METRICS[self.metric] else '<='} {self.threshold:g}"

    def reached(self, value: float | None) -> bool:
        if self.threshold is None or value is None:
            return False
        return value >= self.threshold if TARGET_METRICS[self.metric] else value <= self.threshold


@dataclass(frozen=True)
class DeployConfig:
    """``conf/deploy/*.yaml`` (``# @package train.deploy``): after training, each ok cell exports its model in
    its framework's deployment formats, reloads each artifact in its serving runtime in a fresh process,
    checks it predicts what the trained model predicted, and times it (``runner.cell.deploy``)."""

    enabled: bool = False
    #: Formats to try (``core.registry.DEPLOY_FORMATS`` names); null = every format the adapter lists. A listed
    #: format an adapter does not list gets no row (it is not that framework's); one it cannot make is skipped.
    formats: Optional[List[str]] = None
    max_abs_prob_diff: float = 1e-4  # fp32: the artifact's probabilities within this of the trained model's
    min_argmax_agreement: float = 1.0  # share of test samples with the same predicted class (1.0 = all)
    timeout_s: float = 600.0  # one serving process (import, load, check, timing) may take this long

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        for value in self.formats or []:
            _one_of(value, tuple(DEPLOY_FORMATS), "train.deploy.formats")
        _check(self.max_abs_prob_diff > 0, "train.deploy.max_abs_prob_diff", f"must be > 0, got {self.max_abs_prob_diff}")
        _check(0 < self.min_argmax_agreement <= 1, "train.deploy.min_argmax_agreement",
               f"must be in (0, 1], got {self.min_argmax_agreement}")
        _check(self.timeout_s > 0, "train.deploy.timeout_s", f"must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2  # with a target: the epoch budget
    batch_size: int = 64  # must not exceed the training split (checked with the data, runner/planning/checks.py)
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_batch_size: int = 256
    throughput_batch_size: int = 256
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    # The `pipeline` group (conf/pipeline/, `# @package train.pipeline`) lands here, typed.
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    # The `deploy` group (conf/deploy/, `# @package train.deploy`) lands here, typed.
    deploy: DeployConfig = field(default_factory=DeployConfig)

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        for key, minimum in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("throughput_batch_size", 1)):
            _at_least(getattr(self, key), minimum, f"train.{key}")
        _one_of(self.optimizer, ("adam",), "train.optimizer")
        _check(self.learning_rate > 0, "train.learning_rate", f"must be > 0, got {self.learning_rate}")


# ---- runner ---------------------------------------------------------------------------------
@dataclass
class RunnerConfig:
    address: Optional[str] = None  # null: start a local Ray; "auto" or "ray://host:10001": join a cluster
    num_cpus: Optional[int] = None
    num_gpus: Optional[int] = None
    dashboard: bool = False
    cpus_per_actor: Optional[float] = None
    concurrency: int = 1
    max_retries: int = 2
    max_actor_restarts: int = 10
    actor_start_timeout_s: float = 600.0
    arm_env_timeout_s: float = 900.0  # an arm's environment (core.arms) not built on a node by then ⇒ that node's error
    resume: Any = False  # false | true | a path to an earlier output dir
    interleave_seed: int = 0
    parity_gate: bool = True
    parity_tolerance: float = 1e-4
    allow_parity_failure: bool = False
    progress: bool = True
    target_ci: Optional[float] = None  # adaptive seeds: null = off; else × the equivalence margin
    max_seeds: int = 10
    stop_grace_s: float = 5.0  # on SIGINT/SIGTERM/SIGHUP: how long the cell in flight may finish
    start_attempts: int = 3  # local Ray: start-up tries
    start_timeout_s: float = 180.0  # local Ray: one start-up try
    debug: bool = False  # tracebacks of sweep failures
    verbose: bool = False  # false: framework/Ray output to <out>/logs/ (runner.console.logs); true: all on the console

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _at_least(self.num_cpus, 1, "runner.num_cpus")
        _at_least(self.num_gpus, 0, "runner.num_gpus")
        _check(self.cpus_per_actor is None or self.cpus_per_actor > 0, "runner.cpus_per_actor",
               f"must be > 0 or null, got {self.cpus_per_actor}")
        _at_least(self.concurrency, 1, "runner.concurrency")
        _at_least(self.max_retries, 0, "runner.max_retries")
        _at_least(self.interleave_seed, 0, "runner.interleave_seed")
        _check(self.actor_start_timeout_s > 0, "runner.actor_start_timeout_s",
               f"must be > 0, got {self.actor_start_timeout_s}")
        _check(self.arm_env_timeout_s > 0, "runner.arm_env_timeout_s", f"must be > 0, got {self.arm_env_timeout_s}")
        _check(self.parity_tolerance > 0, "runner.parity_tolerance", f"must be > 0, got {self.parity_tolerance}")
        _check(self.target_ci is None or self.target_ci > 0, "runner.target_ci",
               f"must be > 0 (× the equivalence margin) or null, got {self.target_ci}")
        _at_least(self.max_seeds, 2, "runner.max_seeds")
        _at_least(self.max_actor_restarts, 0, "runner.max_actor_restarts")
        _at_least(self.stop_grace_s, 0, "runner.stop_grace_s")
        _at_least(self.start_attempts, 1, "runner.start_attempts")
        _check(self.start_timeout_s > 0, "runner.start_timeout_s", f"must be > 0, got {self.start_timeout_s}")


# ---- report ---------------------------------------------------------------------------------
@dataclass
class ReportConfig:
    """Statistics and the HTML report; the analysis reads the same fields (``analysis.options``)."""

    enabled: bool = True
    confidence: float = 0.95
    n_resamples: int = 2000  # bootstrap resamples
    random_state: int = 0
    margin_quality_pp: float = 1.0  # TOST margin for proportions, ± percentage points
    margin_time_ratio: float = 0.05  # TOST margin for ratios: A/B within [1/(1+m), 1+m]
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _check(0 < self.confidence < 1, "report.confidence", f"must be in (0, 1), got {self.confidence}")
        _at_least(self.n_resamples, 10, "report.n_resamples")
        _check(0 < self.alpha < 0.5, "report.alpha", f"must be in (0, 0.5), got {self.alpha}")
        _check(self.margin_quality_pp > 0, "report.margin_quality_pp", f"must be > 0, got {self.margin_quality_pp}")
        _check(self.margin_time_ratio > 0, "report.margin_time_ratio", f"must be > 0, got {self.margin_time_ratio}")


# ---- the grid and the root ------------------------------------------------------------------
@dataclass
class GridConfig:
    """Sweep axes; the cartesian product of their values is the set of cells (``runner.planning.grid``)."""

    framework: List[str] = MISSING
    seed: List[int] = MISSING
    batch_size: List[int] = MISSING
    device: List[str] = MISSING  # cpu | gpu | gpu:<accelerator type> | auto | all
    precision: Optional[List[str]] = None
    execution: Optional[List[str]] = None
    pipeline: Optional[List[str]] = None
    model: Optional[List[str]] = None
    data: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        for axis in GRID_AXES:
            values = getattr(self, axis)
            if values is None:
                continue
            _check(len(values) > 0, f"grid.{axis}", f"is empty; give at least one value, e.g. grid.{axis}=[...]")
            repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
            _check(not repeated, f"grid.{axis}", f"lists {repeated} more than once: {list(values)}")
        for value in self.seed:
            _at_least(value, 0, "grid.seed")
        for value in self.batch_size:
            _at_least(value, 1, "grid.batch_size")
        for value in self.framework:  # a name, or an arm: <framework>@<pins> (core.arms)
            if "@" not in str(value):
                _one_of(value, tuple(FRAMEWORKS), "grid.framework")
                continue
            try:
                parse_arm(value)
            except ArmError as exc:
                raise ConfigError(str(exc)) from None
        for value in self.precision or []:
            _one_of(value, PRECISIONS, "grid.precision")
        for value in self.execution or []:
            _one_of(value, EXECUTION_MODES, "grid.execution")


@dataclass
class RootConfig:
    data: Any = MISSING
    model: Any = MISSING
    framework: Any = MISSING
    parity: Any = MISSING
    train: Any = MISSING
    runner: Any = MISSING
    report: Any = MISSING
    seed: int = 0
    device: str = "auto"  # cpu | gpu | auto — for one cell (python -m runner.cell)
    grid: GridConfig = field(default_factory=GridConfig)

    def __post_init__(self) -> None:
        if not _filled(self):
            return
        _at_least(self.seed, 0, "seed")


#: The data schema of each source class (``_target_``), for data nodes that arrive as plain dicts.
DATA_SCHEMAS: dict[str, type] = {
    "runner.data.sources.FolderSource": FolderDataConfig,
    "runner.data.sources.EuroSATSource": EuroSATDataConfig,
    "runner.data.sources.SyntheticSource": SyntheticDataConfig,
}

#: group → {schema name in the ConfigStore: dataclass}; each conf/<group>/*.yaml names one in its defaults.
SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"base_folder": FolderDataConfig, "base_eurosat": EuroSATDataConfig,
             "base_synthetic": SyntheticDataConfig},
    "model": {"base_cnn": CNNConfig},
    "framework": {"base_framework": FrameworkConfig, "base_pytorch": PyTorchFrameworkConfig,
                  "base_keras": KerasFrameworkConfig, "base_fake": FakeFrameworkConfig},
    "parity": {"base_parity": ParityConfig},
    "train": {"base_train": TrainConfig},
    "runner": {"base_runner": RunnerConfig},
    "report": {"base_report": ReportConfig},
}


#: Groups whose options land inside another group (``# @package train.pipeline``): typed by that field's
#: schema, not by a ``defaults`` entry of their own.
PACKAGED: dict[str, type] = {"pipeline": PipelineConfig, "deploy": DeployConfig}


def schema_node(schema: type) -> DictConfig:
    """``OmegaConf.structured(schema)`` that composition can merge values into. OmegaConf marks the node
    of a frozen dataclass read-only; frozen is a property of the built object (what adapters receive),
    not of the node Hydra merges the YAML and the command line into."""
    node = OmegaConf.structured(schema)

    def writable(n: DictConfig) -> None:
        n._set_flag("readonly", None)
        for key in n.keys():
            child = n._get_node(key)
            if isinstance(child, DictConfig):
                writable(child)

    writable(node)
    return node


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent; done on import of ``core.config``)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=schema_node(RootConfig))
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=name, node=schema_node(node))


def load_option(group: str, path: Any) -> DictConfig:
    """One ``conf/<group>/<option>.yaml`` read on its own (not composed), typed by the schema its
    ``defaults`` names — what the grid uses for the other options of a model/data/framework axis."""
    raw = OmegaConf.load(path)
    defaults = list(raw.pop("defaults", None) or [])
    if group in PACKAGED and not defaults:  # typed by the field its package lands in
        return OmegaConf.merge(schema_node(PACKAGED[group]), raw)
    names = [d for d in defaults if d != "_self_"]
    if len(names) != 1 or names[0] not in SCHEMAS.get(group, {}):
        raise ConfigError(f"{path}: its defaults must name one schema of {sorted(SCHEMAS.get(group, {}))}, "
                          f"got {defaults}")
    return OmegaConf.merge(schema_node(SCHEMAS[group][names[0]]), raw)


def check_node(schema: type, data: Any, where: str) -> Any:
    """A plain mapping (e.g. a data node shipped to an actor) checked against ``schema`` like a composed
    one: unknown keys, types, ranges. Returns the dataclass; raises ``ConfigError`` naming ``where.key``."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        node = OmegaConf.merge(schema_node(schema), data)
        return OmegaConf.to_object(node)
    except ConfigKeyError as exc:
        key = str(getattr(exc, "full_key", "") or "")
        known = sorted(k for k in schema.__dataclass_fields__ if not k.startswith("_"))
        raise ConfigError(f"{where}.{key}: unknown key; known: {known}") from None
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", "") or "")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}.{key}: {first}" if key else f"{where}: {first}") from None


def validate(cfg: Any) -> Any:
    """Build the dataclasses of a composed config (or of one group's node): runs every range and choice
    check. Raises ``ConfigError`` (ours), or OmegaConf's error for a missing/unresolvable value."""
    if isinstance(cfg, DictConfig):
        _reject_added_keys(cfg, "")
        return OmegaConf.to_object(cfg)
    return cfg


def _reject_added_keys(node: DictConfig, where: str) -> None:
    """A key added with ``+group.key=…`` is not in the schema either: refused like an unknown key."""
    object_type = OmegaConf.get_type(node)
    known = getattr(object_type, "__dataclass_fields__", None)
    for key in node.keys():
        path = f"{where}.{key}" if where else str(key)
        if known is not None and key not in known:
            raise ConfigError(f"{path}: not a key of {object_type.__name__} (core/config.py); "
                              f"known: {sorted(k for k in known if not k.startswith('_'))}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _reject_added_keys(child, path)


register()
