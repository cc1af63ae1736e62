"""One cell, end to end: prepare data → build the spec natively → train (timed) → test metrics → rows.

(Over 400 lines on purpose: every clock a cell's figures come from is in this one file, so what a timed
second contains can be checked in one place — the tuner's clock, ``runner.cell.tuning``, only chooses a
layout before them; its identity is ``runner.cell.identity``.)

A cell is a pure function from a fully resolved config to result rows (``runs``, ``epochs``,
``predictions`` of ``runner/store/fragments.py``). ``run_cell`` is what the Ray actors call; the CLI runs one
cell in-process::

    uv run python -m runner.cell framework=pytorch seed=0 [data=synthetic train=tiny ...]

What is timed, and how (every clock read is preceded by ``adapter.sync()``):

- Set-up, before any clock: the adapter (cached per process), ``Adapter.release`` of what an earlier cell
  left, the data made resident, the device's measured choices (``runner.cell.tuning``; their trial models
  released again), then the memory snapshot (``runner.cell.memory``).
- ``epoch_seconds``: ``train_epoch`` only — validation is evaluated after the clock stops (its own
  clock: ``eval_seconds``). The first epoch pays one-off costs (graph tracing, XLA/torch.compile, cuDNN
  autotune, allocator growth, the device copy of the data), so it is reported apart
  (``first_epoch_seconds``) and ``median_epoch_seconds`` is the median of the later epochs — none with one
  epoch (``unmeasured`` says why); ``images_per_second`` = train samples / median.
- Time to target (``train.target``): after each epoch's validation; ``train_seconds_to_target`` sums the
  epoch clocks up to the target epoch (AlgoPerf), ``wall_seconds_to_target`` is one clock from the first
  batch to the end of that validation (MLPerf). Energy is read at the same epoch boundaries
  (``runner.cell.energy``).
- ``time_to_first_step_seconds`` = ``build`` + the first optimizer step. To measure the step, epoch 0
  is fed as two ``train_epoch`` calls — its first batch, then the rest — with exactly the same
  batches, order and augmentation as one call would see; both parts count toward epoch 0.
- ``import_seconds``: a cold start only: ``get_adapter`` (the framework import and runtime set-up) in a
  process that had not imported the framework — timed by each Ray actor as the first thing it does
  (reported on its first cell), or by ``runner.cell`` in its own process. Otherwise null, and
  ``import_note`` says why (adapter reused, framework already imported); never a misleading 0.
- Per-step times: each ``train_epoch`` returns its steps' wall times (CUDA events on a GPU, step-output
  completion elsewhere: no extra per-step synchronisation); ``epochs`` rows carry their count, median
  and p10/p90/p99 (``steps``, ``step_seconds_*``).
- Inference is measured like training: the same pipeline placement (``device``: the batch is already
  on the device, normalised inside the timed call; ``native``: a host batch, copied inside it) and the
  same execution mode (eval/inference mode, compiled predict). Latency (batch 1) and throughput
  (``throughput_batch_size`` test images, cycled when the split is smaller) each run
  ``train.inference.warmup_calls`` untimed calls, then timed calls until both
  ``inference.min_calls`` and ``inference.min_seconds`` are reached (or ``max_seconds``); latency
  p50/p90/p99 and throughput median/p10/p90 (from per-call times) and the call counts are recorded.
- Memory (``runner.cell.memory``): the actor's footprint at the snapshot and its peak above it, host and
  device; after everything timed, the Leaner figure from a fresh process (``runner.cell.probe``).
- Deployment (``train.deploy``) after every in-framework measurement above and before the fresh-process memory
  probe: export, a fresh serving process per artifact, the equality check, served timings → ``deployments``
  rows (``runner/cell/deploy.py``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np

from core.config import ConfigError, FrameworkConfig, InferenceConfig, ParityConfig, TrainConfig, check_node
from core.registry import FRAMEWORKS
from core.results import RUNS_SCHEMA
from core.spec import init_weights
from core.text import one_line
from runner.cell import energy, memory, metrics, probe, provenance, tuning
from runner.cell.identity import IDENTITY_KEYS, CellConfigError, cell_id, config_hash, digest, plain_containers
from runner.cell.metrics import RUNS_COLUMNS as METRIC_COLUMNS
from runner.cell.metrics import classification_metrics

log = logging.getLogger("runner.cell")  # not "__main__" under python -m

#: ``runs`` columns the caller (the Ray runner) may fill through ``context``.
CONTEXT_COLUMNS = ("host", "node_id", "node_ip", "gpu_index", "gpu_uuid", "accelerator_type", "attempt", "concurrency",
                   "git_sha")


class CellSkipped(Exception):
    """A combination the framework cannot honour (its adapter's ``unsupported``): not run, not a failure."""


# ---------------------------------------------------------------------------------------------
# the cell
# ---------------------------------------------------------------------------------------------
@dataclass
class CellResult:
    cell_id: str
    status: str  # ok | failed
    tables: dict[str, list[dict[str, Any]]]
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why roc_auc is NaN

    @property
    def run(self) -> dict[str, Any]:
        """The cell's ``runs`` row."""
        return self.tables["runs"][0]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: ``adapter_cache`` key of an actor's cold-start measurement (``runner.cluster.actors``), used by one cell.
COLD_START_KEY = "cold_start"


def _framework_imported(framework: str) -> bool:
    entry = FRAMEWORKS.get(framework)
    if entry is None:
        return False
    # The stand-ins have no package of their own: their adapter module is what a cold start imports.
    module = entry.package if entry.real else entry.adapter.split(":")[0]
    return module in sys.modules


def _adapter_device(device: str) -> str:
    """``gpu:<type>`` (a grid axis value) → ``gpu``: the GPU is already pinned by CUDA_VISIBLE_DEVICES."""
    device = str(device)
    return "gpu" if device.startswith("gpu") else device


def _subset(batches, sl: slice):
    return dataclasses.replace(batches, order=batches.order[sl], hflip=batches.hflip[sl],
                               vflip=batches.vflip[sl], rot90=batches.rot90[sl])


def _merge_stats(parts):
    from frameworks.base import EpochStats

    samples = sum(p.samples for p in parts)
    return EpochStats(loss=sum(p.loss * p.samples for p in parts) / samples,
                      accuracy=sum(p.accuracy * p.samples for p in parts) / samples,
                      samples=samples, steps=sum(p.steps for p in parts))


def run_cell(cell: Mapping[str, Any], *, sweep_id: str = "", context: Mapping[str, Any] | None = None,
             adapter_cache: dict | None = None) -> CellResult:
    """Run one fully resolved cell in this process; never raises (except KeyboardInterrupt/SystemExit).

    ``cell``: plain dict with ``data, model, framework, parity, train, seed, device`` (batch size in
    ``train.batch_size``). ``context``: runner-supplied ``runs`` columns (``CONTEXT_COLUMNS``).
    ``adapter_cache``: a dict the caller keeps across cells; adapters are reused by
    (framework, parity, device), so imports and runtime set-up are paid once per process.
    """
    start_time = _utcnow()
    row: dict[str, Any] = {"sweep_id": sweep_id, "start_time": start_time}
    epoch_rows: list[dict[str, Any]] = []
    prediction_rows: list[dict[str, Any]] = []
    deployment_rows: list[dict[str, Any]] = []  # runner.cell.deploy (train.deploy)
    notes: list[str] = []
    state: dict[str, Any] = {}  # what _run got as far as (the adapter cache key)
    # A config too broken to hash still gets a (stable) id, so its failed row can be stored.
    row["cell_id"] = "invalid-" + digest(repr(cell))[:8]
    try:
        cell = plain_containers(cell)
        row["cell_id"] = cid = cell_id(cell)
        row["config_hash"] = config_hash(cell)
        _fill_context(row, context or {})
        _run(cell, cid, row, epoch_rows, prediction_rows, notes, adapter_cache, state, deployment_rows)
        row["status"] = "ok"
    except CellSkipped as exc:
        row.update(status="skipped", error=str(exc))
        log.warning("cell %s skipped: %s", row["cell_id"], row["error"])
    except Exception as exc:  # a cell's failure is data (a failed row), never a crash of the caller
        row.update(status="failed", error=one_line(exc), traceback=traceback.format_exc())
        epoch_rows.clear()  # partial epochs/predictions of a failed cell would look like results
        prediction_rows.clear()
        deployment_rows.clear()
        if adapter_cache is not None and "cache_key" in state:  # a half-built adapter must not serve the next cell
            adapter_cache.pop(state["cache_key"], None)
        log.error("cell %s failed: %s", row["cell_id"], row["error"])
    row["end_time"] = _utcnow()
    row.setdefault("host", provenance.host_name())
    row.setdefault("git_sha", provenance.git_sha())
    row = {name: row.get(name) for name in RUNS_SCHEMA.names}  # every column present, schema order
    return CellResult(cell_id=row["cell_id"], status=row["status"], error=row.get("error"), notes=notes,
                      tables={"runs": [row], "epochs": epoch_rows, "predictions": prediction_rows,
                              "deployments": deployment_rows})


def _fill_context(row: dict[str, Any], context: Mapping[str, Any]) -> None:
    unknown = set(context) - set(CONTEXT_COLUMNS)
    if unknown:
        raise CellConfigError(f"context: unknown key(s) {sorted(unknown)}; allowed: {list(CONTEXT_COLUMNS)}")
    row.update({k: v for k, v in context.items() if v is not None})


@dataclass
class _Cell:
    """What one cell's steps share: its config, its typed settings (``core.config``), and its row."""

    cell: dict[str, Any]
    cid: str
    row: dict[str, Any]
    framework: FrameworkConfig  # the adapter's own schema (``Adapter.config_schema``), checked in _adapter
    seed: int
    parity: ParityConfig
    train: TrainConfig  # with its pipeline, inference, augment and target settings
    unmeasured: dict[str, str] = field(default_factory=dict)  # column → why it has no value


def _run(cell: dict[str, Any], cid: str, row: dict[str, Any], epoch_rows: list, prediction_rows: list,
         notes: list, adapter_cache: dict | None, state: dict[str, Any], deployment_rows: list | None = None) -> None:
    """The cell's steps in order; each fills its columns of ``row`` (see the module doc for the timing).

    Set-up (untimed): the adapter, what an earlier cell left released, the data resident, the spec, the
    measured choices of the device (``runner.cell.tuning``). Then the memory snapshot, and everything
    measured: build, training (to the target or the budget), test quality, latency, throughput; then the
    deployments and the fresh-process memory probe."""
    import runner.data as data

    c = _settings(cell, cid, row)
    adapter = _adapter(c, adapter_cache, state)  # a combination it cannot honour is skipped before it is made
    adapter.release()  # what an earlier cell of this process left: every cell starts from the same state
    memory.free_unused()
    ds = data.prepare(cell["data"], c.seed)
    memory.make_resident(ds.x)
    row.update(data=ds.name, num_classes=int(ds.num_classes), image_size=int(ds.image_size), split_hash=ds.split_hash,
               train_samples=len(ds.train_idx), val_samples=len(ds.val_idx))
    if c.train.target.threshold is not None and len(ds.val_idx) == 0:
        raise CellConfigError(f"train.target needs a validation split, but data {ds.name!r} has none; "
                              "raise data.val_fraction")
    spec = _model_spec(cell, ds)
    row["model"] = spec.name
    weights = init_weights(spec, c.seed) if c.parity.weight_init == "ported" else None
    row["tuning"] = json.dumps(_tune(c, adapter, ds, spec, weights, adapter_cache), sort_keys=True)
    adapter.release()  # the tuning's trial models: not part of any cell's footprint
    metrics.load()  # one-time imports before the snapshot, whichever cell of the process comes first
    memory.free_unused()
    cell_memory = memory.CellMemory()
    cell_memory.start(adapter)
    build_seconds = _build(c, adapter, spec, weights)
    epoch_rows.extend(_train(c, adapter, ds, build_seconds))
    prediction_rows.extend(_test_quality(c, adapter, ds, notes))
    test_idx = np.asarray(ds.test_idx)
    row.update(_latency(c, adapter, ds, test_idx, c.train.inference))
    row.update(_throughput(c, adapter, ds, test_idx, c.train.throughput_batch_size, c.train.inference))
    columns, unmeasured = cell_memory.finish(adapter)
    row.update(columns)
    c.unmeasured.update(unmeasured)
    if deployment_rows is not None and c.train.deploy.enabled:  # after every in-framework measurement
        from runner.cell.deploy import deploy

        deployment_rows.extend(deploy(adapter, ds, prediction_rows, train=c.train, precision=c.parity.precision,
                                      cpu_threads=c.parity.cpu_threads, device_kind=row.get("device_kind") or "cpu",
                                      identity=row))
    _fresh_memory(c, adapter, json.loads(row["tuning"]))
    row["unmeasured"] = json.dumps(c.unmeasured, sort_keys=True) if c.unmeasured else None


def _fresh_memory(c: _Cell, adapter, tuned: Mapping[str, Any]) -> None:
    """The Leaner figures from a fresh process (``runner.cell.probe``), after everything timed."""
    if not c.train.memory.fresh_process:
        for column in probe.COLUMNS:
            c.unmeasured[column] = "not measured: train.memory.fresh_process=false (the actor's own peak is used)"
        return
    adapter.release()  # the actor's model and data copy: not held while the probe runs on the same device
    choices = {knob: result["choice"] for knob, result in tuned.items()}
    columns, why = probe.measure(c.cell, choices, _adapter_device(c.cell["device"]), c.train.memory.steps)
    if why is not None:
        for column in probe.COLUMNS:
            c.unmeasured[column] = why
        return
    c.row.update(columns)
    if columns.get("peak_device_memory_fresh_mib") is None:
        c.unmeasured["peak_device_memory_fresh_mib"] = "not measured: no device memory counter on a CPU"


def _tune(c: _Cell, adapter, ds, spec, weights, adapter_cache: dict | None) -> dict[str, Any]:
    """The device's measured choices for this condition (``runner.cell.tuning``): measured in the first cell
    of a condition in this process, reused by its other seeds. Empty when the config forces every choice."""
    if not adapter.tunables():
        return {}
    device = _adapter_device(c.cell["device"])
    key = ("tuning", c.framework.name, device, json.dumps(spec.weight_shapes(), sort_keys=True), c.train.batch_size,
           c.parity.execution, c.parity.precision, c.train.pipeline.name, c.parity.deterministic)
    cached = adapter_cache.get(key) if adapter_cache is not None else None
    if cached is not None:
        tuning.apply(adapter, cached["measured"])
        return {knob: dict(result, measured_in=cached["cell_id"]) for knob, result in cached["measured"].items()}
    import runner.data as data

    batches = data.epoch_batches(ds, c.seed, 0, c.train.batch_size, dataclasses.asdict(c.train.augment), split="train")
    measured = tuning.measure(adapter, spec, c.train, weights, c.seed, batches)
    if adapter_cache is not None:
        adapter_cache[key] = {"measured": measured, "cell_id": c.cid}
    return {knob: dict(result, measured_in="this cell") for knob, result in measured.items()}


def _settings(cell: dict[str, Any], cid: str, row: dict[str, Any]) -> _Cell:
    """The cell's typed settings (``core.config``, the same schemas as at composition); fills the identity
    columns of ``row``."""
    try:
        framework_cfg = check_node(FrameworkConfig, {k: cell["framework"][k] for k in ("name", "backend")}, "framework")
        train_cfg = check_node(TrainConfig, cell["train"], "train")
        parity = check_node(ParityConfig, cell["parity"], "parity")
    except (ConfigError, TypeError, KeyError) as exc:
        raise CellConfigError(f"cell config: {exc}") from None
    seed = int(cell["seed"])
    c = _Cell(cell=cell, cid=cid, row=row, framework=framework_cfg, seed=seed, parity=parity, train=train_cfg)
    row.update(framework=framework_cfg.name, backend=framework_cfg.backend, seed=seed, batch_size=train_cfg.batch_size,
               epochs=train_cfg.epochs, device=str(cell["device"]), data=cell["data"].get("name"),
               model=str(cell["model"].get("_target_", "")).rsplit(".", 1)[-1] or None,
               precision_policy=parity.precision, execution_mode=parity.execution, parity_mode=parity.mode,
               deterministic=parity.deterministic, pipeline=train_cfg.pipeline.name,
               cpu_threads=parity.cpu_threads, throughput_batch_size=train_cfg.throughput_batch_size,
               target=train_cfg.target.words(),
               stop_at_target=bool(train_cfg.target.stop) if train_cfg.target.threshold is not None else None,
               split_design="resampled" if cell["data"].get("split_seed") is None else "fixed")
    row["packages"] = ",".join(sorted(cell["framework"].get("packages") or ())) or None  # an arm's pins, as asked
    return c


def _model_spec(cell: dict[str, Any], ds):
    """The framework-neutral ``ModelSpec`` for this dataset's classes, image size and channels."""
    import hydra.utils

    return hydra.utils.instantiate(cell["model"], num_classes=int(ds.num_classes), image_size=int(ds.image_size),
                                   channels=int(ds.x.shape[-1]), _convert_="all")


def _adapter(c: _Cell, adapter_cache: dict | None, state: dict[str, Any]):
    """The framework's adapter (import + runtime set-up), cached per process; fills versions and device.

    Raises ``CellSkipped`` for a combination the adapter cannot honour — asked of its class, before an
    instance exists (making one may change process-wide state, e.g. TensorFlow's op determinism)."""
    from frameworks.base import adapter_class

    row, name = c.row, c.framework.name
    device = _adapter_device(c.cell["device"])
    cache_key = (name, c.parity, device)
    adapter = adapter_cache.get(cache_key) if adapter_cache is not None else None
    already = _framework_imported(name)
    with provenance.Stopwatch() as import_sw:
        cls = type(adapter) if adapter is not None else adapter_class(name)
    reason = cls.unsupported(name, c.parity.execution, c.parity.deterministic, device)
    if reason:
        raise CellSkipped(reason)
    try:
        options = check_node(cls.config_schema, c.cell["framework"], "framework")
    except ConfigError as exc:
        raise CellConfigError(f"cell config: {exc} (the {name} adapter reads {cls.config_schema.__name__})") from None
    if adapter is None:
        with provenance.Stopwatch() as make_sw:
            adapter = cls(parity=c.parity, device=device, framework=name, pipeline=c.train.pipeline)
        if already:  # imported by the gate or an earlier cell: what the stopwatch saw is not an import
            row["import_seconds"] = None
            row["import_note"] = "not measured: the framework was already imported in this process"
        else:
            row["import_seconds"] = import_sw.seconds + make_sw.seconds
            row["import_note"] = "cold start: first import in this process (runner.cell)"
        if adapter_cache is not None:
            adapter_cache[cache_key] = adapter
    else:
        cold = adapter_cache.get(COLD_START_KEY) if adapter_cache is not None else None
        if cold is not None and cold.get("key") == cache_key:  # the actor's start-up measurement, reported once
            adapter_cache.pop(COLD_START_KEY)
            row["import_seconds"], row["import_note"] = cold["seconds"], cold["note"]
        else:
            row["import_seconds"] = None
            row["import_note"] = "not measured: adapter reused from an earlier cell of this process"
        adapter.set_pipeline(c.train.pipeline)  # the device copy of the images stays cached in the adapter
    state["cache_key"] = cache_key
    adapter.configure(options)
    versions = {**provenance.library_versions(), **provenance.pinned_versions(c.cell["framework"].get("packages")),
                **adapter.versions()}
    row["versions"] = json.dumps(versions, sort_keys=True)
    row["framework_version"] = versions.get(FRAMEWORKS[name].package)
    info = adapter.device_info()
    row.update(device_kind=info.get("device_kind"), device_name=info.get("device_name"))
    adapter.reset_peak_memory()
    return adapter


def _build(c: _Cell, adapter, spec, weights) -> float:
    """Build the spec natively (``weights``: the ported init under ``weight_init: ported``); the build seconds."""
    with provenance.Stopwatch(adapter.sync) as build_sw:
        adapter.build(spec, c.train, weights, c.seed)
    counts = adapter.param_counts()
    if adapter.builds_spec and counts != spec.param_counts():
        raise RuntimeError(f"{c.framework.name}: built model has {counts} parameters, the spec {spec.name} has "
                           f"{spec.param_counts()}; the native build does not match the spec")
    c.row.update(param_count=int(counts["trainable"]), param_count_total=int(counts["total"]),
                 parity_knobs=json.dumps(adapter.knobs(), sort_keys=True, default=str))
    return build_sw.seconds


def _train(c: _Cell, adapter, ds, build_seconds: float) -> list[dict[str, Any]]:
    """All epochs of the budget (or up to the target, with ``train.target.stop``): ``train_epoch`` timed,
    validation after each (timed apart); returns the ``epochs`` rows and fills the speed, time-to-target
    and energy columns of the row."""
    import runner.data as data
    from frameworks.base import eval_plan
    from frameworks.pipeline import step_time_summary

    row, batch_size, target = c.row, c.train.batch_size, c.train.target
    y_val = ds.y[ds.val_idx]
    val_plan = eval_plan(ds.x, ds.y, ds.val_idx, ds.mean, ds.std, c.train.eval_batch_size)
    augment = dataclasses.asdict(c.train.augment)
    meter = energy.EnergyMeter(row.get("device_kind"), row.get("gpu_uuid"))
    epoch_rows, epoch_seconds, epoch_joules = [], [], []
    reached_at: int | None = None
    adapter.sync()
    wall_start = time.perf_counter()  # MLPerf's clock: everything from the first batch, evaluation included
    for epoch in range(c.train.epochs):
        batches = data.epoch_batches(ds, c.seed, epoch, batch_size, augment, split="train")
        n = len(batches.order)
        # Epoch 0's first batch goes alone so the first optimizer step can be timed (see module doc).
        parts = [slice(0, batch_size), slice(batch_size, n)] if epoch == 0 and n > batch_size else [slice(0, n)]
        stats, part_seconds, step_seconds = [], [], []
        for part in parts:
            with provenance.Stopwatch(adapter.sync) as sw:
                stats.append(adapter.train_epoch(_subset(batches, part) if len(parts) > 1 else batches))
            part_seconds.append(sw.seconds)
            step_seconds = None if step_seconds is None or stats[-1].step_seconds is None \
                else step_seconds + list(stats[-1].step_seconds)
        epoch_joules.append(meter.read())  # after the synchronised clock stop: training energy only
        if epoch == 0:
            row["time_to_first_step_seconds"] = build_seconds + part_seconds[0]
        epoch_stats = _merge_stats(stats) if len(stats) > 1 else stats[0]
        if epoch_stats.samples != n:
            raise RuntimeError(f"{c.framework.name}: train_epoch saw {epoch_stats.samples} samples, the epoch has {n} "
                               "(a dropped or repeated batch)")
        seconds = float(sum(part_seconds))
        epoch_seconds.append(seconds)
        val_loss = val_accuracy = eval_seconds = None
        if len(y_val):
            with provenance.Stopwatch(adapter.sync) as eval_sw:
                val_loss, val_probs = adapter.evaluate(val_plan)
            eval_seconds = eval_sw.seconds
            val_accuracy = float(np.mean(np.asarray(val_probs).argmax(axis=1) == y_val))
            val_loss = float(val_loss)
        if reached_at is None and target.reached({"val_accuracy": val_accuracy, "val_loss": val_loss}[target.metric]):
            reached_at = epoch + 1
            row.update(epochs_to_target=reached_at, train_seconds_to_target=float(sum(epoch_seconds)),
                       wall_seconds_to_target=time.perf_counter() - wall_start)
        epoch_rows.append({"sweep_id": row["sweep_id"], "cell_id": c.cid, "framework": c.framework.name, "seed": c.seed,
                           "epoch": epoch + 1, "train_loss": float(epoch_stats.loss),
                           "train_accuracy": float(epoch_stats.accuracy), "val_loss": val_loss,
                           "val_accuracy": val_accuracy, "epoch_seconds": seconds, "eval_seconds": eval_seconds,
                           "images_per_second": n / seconds if seconds > 0 else None,
                           **step_time_summary(step_seconds)})
        log.info("epoch %d/%d: %.2fs, train loss %.4f acc %.4f, val acc %s", epoch + 1, c.train.epochs, seconds,
                 epoch_stats.loss, epoch_stats.accuracy, "n/a" if val_accuracy is None else f"{val_accuracy:.4f}")
        if reached_at is not None and target.stop:
            break
    row["training_wall_seconds"] = time.perf_counter() - wall_start
    row["epochs_run"] = len(epoch_seconds)
    row["val_accuracy"], row["val_loss"] = epoch_rows[-1]["val_accuracy"], epoch_rows[-1]["val_loss"]
    if target.threshold is not None:
        row["reached_target"] = reached_at is not None
    _speed_columns(c, ds, epoch_seconds)
    _energy_columns(c, meter, epoch_joules, len(ds.train_idx), reached_at)
    return epoch_rows


def _speed_columns(c: _Cell, ds, epoch_seconds: list[float]) -> None:
    """Training speed: the first (warm-up) epoch apart, the median of the later ones — none with one epoch."""
    row = c.row
    row.update(train_seconds=float(sum(epoch_seconds)), first_epoch_seconds=epoch_seconds[0])
    if len(epoch_seconds) < 2:
        why = ("not measured: one epoch is the warm-up (tracing, compilation, autotuning) — use train.epochs ≥ 2"
               if c.train.epochs < 2 else "not measured: the cell stopped at its target after the warm-up epoch")
        c.unmeasured.update(median_epoch_seconds=why, images_per_second=why, step_seconds=why)
        row.update(median_epoch_seconds=None, images_per_second=None)
        return
    median_epoch = float(np.median(epoch_seconds[1:]))
    row.update(median_epoch_seconds=median_epoch,
               images_per_second=len(ds.train_idx) / median_epoch if median_epoch > 0 else None)


def _energy_columns(c: _Cell, meter, epoch_joules: list[float | None], train_images: int, reached_at: int | None) -> None:
    row = c.row
    row["energy_note"] = meter.note
    if not meter.available or epoch_joules[-1] is None:
        for column in ("energy_joules", "joules_per_training_image", "joules_to_target"):
            c.unmeasured[column] = meter.note
        return
    total = float(epoch_joules[-1])
    row["energy_joules"] = total
    row["joules_per_training_image"] = total / max(train_images * len(epoch_joules), 1)
    if reached_at is not None:
        row["joules_to_target"] = float(epoch_joules[reached_at - 1])


def _test_quality(c: _Cell, adapter, ds, notes: list) -> list[dict[str, Any]]:
    """Test-set metrics (the one shared function) into ``row``; returns the ``predictions`` rows."""
    row = c.row
    test_idx = np.asarray(ds.test_idx)
    if test_idx.size == 0:
        raise CellConfigError(f"data {ds.name!r}: the test split is empty; raise data.test_fraction")
    from frameworks.base import eval_plan

    y_test = ds.y[test_idx]
    _, probs = adapter.evaluate(eval_plan(ds.x, ds.y, test_idx, ds.mean, ds.std, c.train.eval_batch_size))
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape != (test_idx.size, ds.num_classes):
        raise RuntimeError(f"{c.framework.name}: evaluate returned scores of shape {probs.shape}, "
                           f"expected ({test_idx.size}, {ds.num_classes})")
    metrics = classification_metrics(y_test, probs, ds.classes)
    notes.extend(metrics["notes"])
    for key in METRIC_COLUMNS:
        value = metrics[key]
        row[key] = json.dumps(value) if key in ("confusion_matrix", "per_class", "classes") else value
    y_pred = probs.argmax(axis=1)
    return [{"sweep_id": row["sweep_id"], "cell_id": c.cid, "framework": c.framework.name, "seed": c.seed,
             "sample_index": int(i), "y_true": int(t), "y_pred": int(p), "scores": s}
            for i, t, p, s in zip(test_idx.tolist(), y_test.tolist(), y_pred.tolist(), probs.tolist())]


def timed_calls(adapter, batch, settings: InferenceConfig) -> np.ndarray:
    """Seconds of each timed ``adapter.infer(batch)`` call (clock read after ``sync``), after
    ``warmup_calls`` untimed ones; calls continue until ``min_calls`` and ``min_seconds`` are both
    reached, or ``max_seconds`` has passed (at least one call is always timed)."""
    from core.timing import timed_calls as repeat  # the one rule, shared with frameworks.serving

    return repeat(lambda: adapter.infer(batch), warmup_calls=settings.warmup_calls, min_calls=settings.min_calls,
                  min_seconds=settings.min_seconds, max_seconds=settings.max_seconds, sync=adapter.sync)


def _latency(c: _Cell, adapter, ds, test_idx: np.ndarray, settings: InferenceConfig) -> dict[str, float | int | None]:
    """Batch-1 inference latency percentiles (ms); one test image, placed as the pipeline places data."""
    from core.timing import latency_summary

    batch = adapter.inference_input(ds.x[test_idx[:1]], ds.mean, ds.std)
    out, why = latency_summary(timed_calls(adapter, batch, settings))
    c.unmeasured.update(why)
    return out


def _throughput(c: _Cell, adapter, ds, test_idx: np.ndarray, batch_size: int,
                settings: InferenceConfig) -> dict[str, float | int | None]:
    """Images/s of inference on one ``batch_size`` batch of test images: median and p10/p90 over calls."""
    from core.timing import throughput_summary

    batch = adapter.inference_input(ds.x[np.resize(test_idx, batch_size)], ds.mean, ds.std)
    out, why = throughput_summary(timed_calls(adapter, batch, settings), batch_size)
    c.unmeasured.update(why)
    return out


def cell_from_config(cfg: Any) -> dict[str, Any]:
    """The one cell described by a composed root config (its groups + ``seed`` + ``device``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    missing = [k for k in IDENTITY_KEYS if k not in cfg]
    if missing:
        raise CellConfigError(f"config lacks {missing}; select them, e.g. framework=pytorch seed=0")
    try:
        return {k: OmegaConf.to_container(cfg[k], resolve=True, throw_on_missing=True)
                if OmegaConf.is_config(cfg[k]) else cfg[k] for k in IDENTITY_KEYS}
    except MissingMandatoryValue as exc:
        raise CellConfigError(f"config value {exc.full_key} is required (it is ???): set it on the command line, "
                              f"e.g. {exc.full_key}=<value>") from None
    except OmegaConfBaseException as exc:
        raise CellConfigError(f"config value {getattr(exc, 'full_key', '?')} cannot be resolved: "
                              f"{' '.join(str(exc).splitlines()[:1])}") from None
