"""Grid expansion, cell ids, validation, device resolution, slots and dispatch order — no Ray needed."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from core.gate import GateRecord
from runner.planning import grid as gridlib
from runner.cell.identity import cell_id
from runner.planning.checks import check_sweep
from runner.errors import GridError
from runner.planning.grid import DeviceInventory, interleave, plan, resolve_devices
from runner.cluster.actors import actor_env
from runner.cluster.slots import discover_slots, inventory
from runner_support import compose_cfg, frameworks_imported_by


def _cells(overrides=(), devices=("cpu",), fake=True):
    return plan(compose_cfg(overrides, fake=fake)).cells(list(devices))


# ---- expansion ------------------------------------------------------------------------------
def test_expansion_is_the_cartesian_product_of_the_axes():
    cfg = compose_cfg(["grid.framework=[keras,pytorch,fake]", "grid.seed=[0,1,2]", "grid.batch_size=[16,32]"])
    cells = plan(cfg).cells(["cpu"])
    assert len(cells) == 3 * 3 * 2
    got = {(c["framework"]["name"], c["seed"], c["train"]["batch_size"], c["device"]) for c in cells}
    assert got == set(itertools.product(["keras", "pytorch", "fake"], [0, 1, 2], [16, 32], ["cpu"]))
    keras = next(c for c in cells if c["framework"]["name"] == "keras")
    # loaded from conf/framework/keras.yaml
    assert keras["framework"] == {"name": "keras", "backend": "tensorflow", "data_format": "auto"}
    assert all(set(c) == {"data", "model", "framework", "parity", "train", "seed", "device"} for c in cells)
    assert all(c["data"]["name"] == "synthetic" and c["data"]["samples_per_class"] == 16 for c in cells)


def test_sweep_files_combine_and_axes_override_them():
    cfg = compose_cfg(["+sweep=[seeds,batch_sizes]"], fake=False)
    p = plan(cfg)
    assert p.axes["seed"] == list(range(10)) and p.axes["batch_size"] == [32, 64, 128, 256]
    assert p.size(["cpu"]) == 10 * 4 * len(cfg.grid.framework)
    cfg = compose_cfg(["+sweep=[seeds,batch_sizes]", "grid.seed=[0,1,2]", "grid.batch_size=[32,64]"], fake=False)
    assert plan(cfg).size(["cpu"]) == 3 * 2 * len(cfg.grid.framework)
    full = plan(compose_cfg(["+sweep=full"], fake=False))
    assert full.axes["framework"] == ["keras", "pytorch", "keras_jax", "keras_torch"]
    assert full.axes["device"] == ["all"]


def test_optional_axes_reach_parity_model_and_data():
    cells = _cells(["grid.precision=[fp32,mixed_bf16]", "grid.execution=[default,compiled]",
                    "grid.pipeline=[device,native]",
                    "grid.model=[small_cnn,capstone_cnn]", "grid.data=[synthetic,eurosat_mini]",
                    "data.image_size=64", "grid.seed=[0]"])  # capstone_cnn needs 64×64
    assert len(cells) == 2 * 2 * 2 * 2 * 2
    assert {(c["parity"]["precision"], c["parity"]["execution"], c["train"]["pipeline"]["name"]) for c in cells} == set(
        itertools.product(["fp32", "mixed_bf16"], ["default", "compiled"], ["device", "native"]))
    native = next(c for c in cells if c["train"]["pipeline"]["name"] == "native")
    assert native["train"]["pipeline"]["workers"] >= 1  # the option's file, not just its name
    assert {gridlib.model_name(c["model"]) for c in cells} == {"small_cnn", "capstone_cnn"}
    assert {c["data"]["name"] for c in cells} == {"synthetic", "eurosat_mini"}
    # The selected data option keeps its command-line overrides; other options come from their files.
    synth = next(c for c in cells if c["data"]["name"] == "synthetic")
    assert synth["data"]["samples_per_class"] == 16


def test_command_line_overrides_of_the_selected_model_reach_every_cell():
    cells = _cells(["model.filters=[4,8]"])
    assert all(c["model"]["filters"] == [4, 8] for c in cells)


# ---- ids ------------------------------------------------------------------------------------
def test_cell_ids_are_stable_and_distinct():
    a = _cells(["grid.seed=[0,1,2]", "grid.batch_size=[16,32]"])
    b = _cells(["grid.batch_size=[16,32]", "grid.seed=[0,1,2]"])
    ids_a = [cell_id(c) for c in a]
    assert len(set(ids_a)) == len(ids_a) == 6
    assert sorted(ids_a) == sorted(cell_id(c) for c in b)  # same cells, whatever the override order
    assert len({cell_id(c) for c in _cells(["grid.seed=[0]", "train.learning_rate=0.01"])} & set(ids_a)) == 0


# ---- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["grid.framework=[fake,tensorflow]"], "grid.framework: 'tensorflow' is not one of ['keras', 'pytorch'"),
    (["grid.seed=[]"], "grid.seed: is empty"),
    (["grid.seed=[1,1]"], "grid.seed: lists ['1'] more than once: [1, 1]"),
    (["grid.batch_size=[0]"], "grid.batch_size: must be >= 1, got 0"),
    (["grid.seed=[-1]"], "grid.seed: must be >= 0, got -1"),
    (["grid.device=[tpu]"], "unknown device 'tpu'"),
    (["grid.precision=[fp64]"], "grid.precision: 'fp64' is not one of ['fp32', 'tf32', 'mixed_bf16']"),
    (["grid.model=[resnet]"], "unknown model 'resnet'; choose from ['capstone_cnn', 'small_cnn']"),
    (["+grid.colour=[red]"], "grid.colour: not a key of GridConfig"),
    (["model=capstone_cnn"], "capstone_cnn: image_size 16 is too small for 6 MaxPool(2) blocks"),
    (["grid.precision=[tf32]"], "precision=tf32 needs a GPU"),
    (["grid.batch_size=[512]"], "batch size [512] exceeds the training split of data 'synthetic'"),
    (["train.epochs=0"], "train.epochs: must be >= 1, got 0"),
    (["framework=keras", "framework.backend=jax"], "framework.backend: keras runs on tensorflow, not 'jax'"),
])
def test_invalid_grids_fail_with_one_clear_message(overrides, message, tmp_path, monkeypatch):
    monkeypatch.setenv("KVP_CACHE_DIR", str(tmp_path))
    with pytest.raises(GridError) as err:
        check_sweep(compose_cfg(overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


# ---- devices --------------------------------------------------------------------------------
def test_device_resolution_against_the_cluster():
    cpu_only = DeviceInventory(cpu=True, gpus={})
    mixed = DeviceInventory(cpu=True, gpus={"A100": 2, "H100": 1})
    assert resolve_devices(["auto"], cpu_only) == ["cpu"]
    assert resolve_devices(["auto"], mixed) == ["gpu"]
    assert resolve_devices(["all"], cpu_only) == ["cpu"]
    assert resolve_devices(["all"], mixed) == ["cpu", "gpu:A100", "gpu:H100"]
    assert resolve_devices(["gpu:h100", "cpu", "auto"], mixed) == ["gpu:H100", "cpu", "gpu"]
    with pytest.raises(GridError, match="'gpu' requested but the cluster has no GPU"):
        resolve_devices(["gpu"], cpu_only)
    with pytest.raises(GridError, match=r"no V100 GPU .*GPU types: \['A100', 'H100'\]"):
        resolve_devices(["gpu:V100"], mixed)


def test_tf32_on_a_resolved_cpu_device_is_refused():
    p = plan(compose_cfg(["grid.precision=[tf32]", "grid.device=[auto]"]))
    with pytest.raises(GridError, match="tf32 needs a GPU"):
        p.cells(resolve_devices(p.device_values, DeviceInventory(cpu=True, gpus={})))


def _node(node_id, cpus, gpus=0, atype=None):
    res = {"CPU": float(cpus), "memory": 1e9}
    if gpus:
        res["GPU"] = float(gpus)
    if atype:
        res[f"accelerator_type:{atype}"] = 1.0
    return {"NodeID": node_id, "Alive": True, "NodeManagerHostname": f"host-{node_id}", "Resources": res}


def test_slots_one_per_gpu_and_concurrency_per_cpu_only_node():
    nodes = [_node("a", 16, 2, "A100"), _node("b", 8), _node("c", 4), {**_node("d", 8), "Alive": False}]
    slots = discover_slots(nodes, concurrency=2, cpus_per_actor=2)
    kinds = Counter((s.node_id, s.kind) for s in slots)
    assert kinds == {("a", "gpu"): 2, ("b", "cpu"): 2, ("c", "cpu"): 2}
    assert {s.accelerator_type for s in slots if s.kind == "gpu"} == {"A100"}
    assert all(s.concurrency == 2 and s.cpus == 2 for s in slots if s.kind == "cpu")
    assert len({lock for s in slots for lock in s.locks}) == len(slots)  # independent slots
    assert inventory(slots) == DeviceInventory(cpu=True, gpus={"A100": 2})
    gpu = next(s for s in slots if s.kind == "gpu")
    assert gpu.accepts("gpu") and gpu.accepts("gpu:a100") and not gpu.accepts("gpu:H100") and not gpu.accepts("cpu")


def test_cpu_cells_on_a_gpu_only_cluster_hold_the_whole_node():
    slots = discover_slots([_node("a", 16, 2)], concurrency=1, cpus_per_actor=None)
    cpu = [s for s in slots if s.kind == "cpu"]
    assert len(cpu) == 1
    assert all(lock in cpu[0].locks for s in slots if s.kind == "gpu" for lock in s.locks)
    # Every slot is one bundle pinned to its node; the node's CPUs are split between them (they reserve at once).
    assert all(s.cpus == 5.3333 for s in slots) and sum(s.cpus for s in slots) <= 16
    assert [s.bundle() for s in slots] == [{"GPU": 1.0, "CPU": 5.3333}] * 2 + [{"CPU": 5.3333}]


def test_gpu_bundles_get_a_cpu_share_when_cpu_only_nodes_exist():
    slots = discover_slots([_node("a", 8, 2, "H100"), _node("b", 4)], concurrency=1, cpus_per_actor=None)
    gpu = [s for s in slots if s.kind == "gpu"]
    assert [s.bundle() for s in gpu] == [{"GPU": 1.0, "CPU": 4.0}] * 2  # no CPU slot on the GPU node
    assert [s.bundle() for s in slots if s.kind == "cpu"] == [{"CPU": 4.0}]
    zero_cpu = discover_slots([_node("h", 0), _node("g", 0, 1)], concurrency=1, cpus_per_actor=None)
    assert [s.bundle() for s in zero_cpu] == [{"GPU": 1.0}]  # a 0-CPU head gets no slot; GPU alone


def test_actor_environment_is_set_before_import():
    parity = {"cpu_threads": 3}
    keras = actor_env({"name": "keras_jax", "backend": "jax"}, parity, "gpu")
    assert keras["KERAS_BACKEND"] == "jax" and keras["OMP_NUM_THREADS"] == "3"
    assert keras["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and keras["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "CUDA_VISIBLE_DEVICES" not in keras  # Ray pins the GPU
    torch_cpu = actor_env({"name": "pytorch", "backend": "torch"}, parity, "cpu")
    assert "KERAS_BACKEND" not in torch_cpu and torch_cpu["CUDA_VISIBLE_DEVICES"] == ""


# ---- dispatch order -------------------------------------------------------------------------
def test_interleave_alternates_frameworks_in_a_seeded_order():
    cells = _cells(["grid.framework=[keras,pytorch,fake]", "grid.seed=[0,1,2,3,4,5,6,7]"])
    order = interleave(cells, seed=0)
    assert sorted(map(cell_id, order)) == sorted(map(cell_id, cells))
    names = [c["framework"]["name"] for c in order]
    blocks = [names[i:i + 3] for i in range(0, len(names), 3)]
    assert all(sorted(b) == ["fake", "keras", "pytorch"] for b in blocks)  # every framework once per block
    assert all(len({c["seed"] for c in order[i:i + 3]}) == 1 for i in range(0, len(order), 3))
    assert len({tuple(b) for b in blocks}) > 1  # the order within blocks varies …
    assert Counter(b[0] for b in blocks).most_common(1)[0][1] < len(blocks)  # … so no framework always goes first
    assert [cell_id(c) for c in interleave(cells, seed=0)] == [cell_id(c) for c in order]  # seeded
    assert [cell_id(c) for c in interleave(cells, seed=1)] != [cell_id(c) for c in order]


# ---- equivalence gate (actors and frameworks.parity.compare stood in for) --------------------
class _Call:
    def __init__(self, fn):
        self.remote = fn


class _StubRay:
    """Just what Dispatcher.parity_gate uses: ``get`` on the (already computed) "refs"."""

    import ray.exceptions as exceptions

    @staticmethod
    def get(ref):
        return ref


def _gate_run(tmp_path, overrides, calls):
    """``run_gate`` over stub actors of keras, pytorch and fake on one CPU slot; returns (cfg, record)."""
    from runner.cluster.actors import ActorRecord
    from runner.sweep.gate import run_gate

    cfg = compose_cfg(overrides)
    cells = plan(cfg).cells(["cpu"])
    slot = discover_slots([_node("n", 2)], concurrency=1, cpus_per_actor=2)[0]

    def handle(fw):
        def gate(model, data, parity, seed, device):
            calls.append((fw, gridlib.model_name(model), parity["precision"], seed, device))
            return {"framework": fw, "model": gridlib.model_name(model)}
        return type("Handle", (), {"gate": _Call(gate)})()

    actors = [ActorRecord(handle(fw), fw, slot, state="ready") for fw in ("keras", "pytorch", "fake")]
    return cfg, run_gate(_StubRay, actors, cells, cfg, {"max_retries": 0, "parity_tolerance": 1e-4})


def test_parity_gate_runs_once_per_model_over_the_real_frameworks(tmp_path, monkeypatch):
    import frameworks.parity

    from runner.sweep.gate import check_gate
    from runner.errors import SweepError

    def compare(outputs, tolerance):  # stand-in: capstone_cnn "differs"
        model = next(iter(outputs.values()))["model"]
        return {"passed": model == "small_cnn", "reasons": [] if model == "small_cnn" else ["max |Δ logits| 0.3"]}

    monkeypatch.setattr(frameworks.parity, "compare", compare)
    calls = []
    overrides = ["grid.framework=[keras,pytorch,fake]", "grid.seed=[3,4]", "grid.model=[small_cnn,capstone_cnn]",
                 "grid.precision=[fp32,mixed_bf16]", "data.image_size=64"]
    cfg, record = _gate_run(tmp_path, overrides, calls)
    assert record.frameworks == ["keras", "pytorch"]  # the fake framework builds no spec: skipped
    # Once per model (not per seed or precision), in fp32, on the first cell's seed.
    assert sorted(calls) == sorted((fw, m, "fp32", 3, "cpu") for fw in ("keras", "pytorch")
                                   for m in ("small_cnn", "capstone_cnn"))
    assert [(c.model, c.status) for c in record.checks] == [("small_cnn", "passed"), ("capstone_cnn", "failed")]
    assert record.status == "failed" and "max |Δ logits| 0.3" in record.summary
    assert GateRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record  # what is written reads back
    # strict parity: a failed gate stops the sweep … unless allowed; framework_defaults expects differences.
    with pytest.raises(SweepError, match="runner.allow_parity_failure=true"):
        check_gate(record, cfg, {"allow_parity_failure": False})
    check_gate(record, cfg, {"allow_parity_failure": True})
    check_gate(record, compose_cfg(["parity=framework_defaults"]), {"allow_parity_failure": False})


def test_parity_gate_is_skipped_without_two_real_frameworks(tmp_path):
    calls = []
    _, record = _gate_run(tmp_path, ["grid.framework=[fake,pytorch]"], calls)
    assert record.status == "skipped" and calls == []


def test_planning_real_frameworks_imports_none_of_them(tmp_path):
    code = f"""
from runner_support import compose_cfg
from runner.planning.checks import check_sweep
from runner.planning.grid import interleave
cfg = compose_cfg(["grid.framework=[keras,pytorch,keras_jax,keras_torch]", "grid.model=[small_cnn,capstone_cnn]",
                   "data.image_size=64"])
cells = interleave(check_sweep(cfg, data=False).cells(["cpu"]), 0)
assert len(cells) == 4 * 2 * 3, len(cells)
"""
    assert frameworks_imported_by("import sys; sys.path.insert(0, 'tests')\n" + code) == []


# ---- pairs on one device (the dispatcher's rule, with stand-in actors) -------------------------
def _pair_dispatcher(tmp_path, nodes, seeds):
    from runner.cluster.actors import ActorRecord
    from runner.sweep.dispatch import Dispatcher

    cells = interleave(_cells(["grid.framework=[fake,fake_twin]", f"grid.seed={seeds}"], devices=["gpu"]), 0)
    slots = [s for s in discover_slots(nodes, concurrency=1, cpus_per_actor=None) if s.kind == "gpu"]
    pool = type("Pool", (), {"ray": None, "slots": slots, "lost": {}, "actors": [
        ActorRecord(object(), fw, s, state="ready") for s in slots for fw in ("fake", "fake_twin")]})()
    started = []
    dispatcher = Dispatcher(pool, cells, {"max_retries": 2, "concurrency": 1}, "sweep", tmp_path, "driver-sha")
    dispatcher._start = lambda item, actor: (started.append((item, actor.slot)),
                                             [dispatcher.held.__setitem__(k, actor.slot.key) for k in actor.slot.locks])
    return dispatcher, pool, started


def _finish(dispatcher, started):
    """Every started cell finishes: its slot is free again and it counts as done."""
    for item, slot in started:
        for lock in slot.locks:
            dispatcher.held.pop(lock, None)
        if all(item is not done for done, _ in dispatcher.done.get(dispatcher.condition[item.cell_id], [])):
            dispatcher.done.setdefault(dispatcher.condition[item.cell_id], []).append((item, slot))
            dispatcher.finished.append(item.cell_id)


def test_both_frameworks_of_a_seed_run_on_one_gpu(tmp_path):
    nodes = [_node("a", 4, 2, "H100"), _node("b", 4, 1, "A100")]
    dispatcher, _, started = _pair_dispatcher(tmp_path, nodes, "[0,1,2,3,4,5]")
    ran = []
    while dispatcher.queue:
        dispatcher._dispatch()
        assert started, "nothing could start"
        _finish(dispatcher, started)
        runs = list(started)
        started.clear()
        assert len({s.key for _, s in runs}) == len(runs)  # one cell per slot at a time
        ran += runs
    by_seed = {}
    for item, slot in ran:
        by_seed.setdefault(item.cell["seed"], set()).add(slot.key)
    assert sorted(by_seed) == [0, 1, 2, 3, 4, 5] and all(len(keys) == 1 for keys in by_seed.values())
    assert len({k for keys in by_seed.values() for k in keys}) == 3  # every GPU was used


def test_a_lost_node_moves_the_pair_to_one_type_and_reruns_the_partner(tmp_path):
    nodes = [_node("a", 4, 1, "H100"), _node("b", 4, 1, "A100")]
    dispatcher, pool, started = _pair_dispatcher(tmp_path, nodes, "[0]")
    dispatcher._dispatch()
    (first, slot_a), = started  # one of the pair started; its partner waits for that GPU
    assert not dispatcher.queue[0].cell_id == first.cell_id and len(dispatcher.queue) == 1
    _finish(dispatcher, started)
    started.clear()
    pool.lost[slot_a.node_id] = f"node {slot_a.host} was lost"  # ... and the node is gone
    for actor in pool.actors:
        if actor.slot.node_id == slot_a.node_id:
            actor.state = "dead"
    dispatcher._dispatch()  # the partner goes to the A100 (no H100 left) and the finished cell is queued again
    _finish(dispatcher, started)
    dispatcher._dispatch()
    moved = {item.cell_id: slot for item, slot in started}
    assert len(moved) == 2 and len({s.key for s in moved.values()}) == 1  # both on the one other GPU
    assert first.cell_id in moved and first.attempt == 2 and "to stay paired" in first.errors[-1]
    assert "was lost" in first.errors[-1]


def test_a_failed_join_names_the_token_settings():
    from runner.cluster.session import auth_hint

    hint = auth_hint(ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379"))
    assert "RAY_AUTH_MODE=token" in hint and "RAY_AUTH_TOKEN" in hint
    assert auth_hint(ValueError("address must be host:port")) == ""


# ---- experiment presets (conf/experiment/) ------------------------------------------------------------------
def test_the_experiment_presets_are_there():
    assert {"time_to_target", "eurosat_15_epochs"} <= set(gridlib.choices("experiment"))


@pytest.mark.parametrize("name", gridlib.choices("experiment"))
def test_every_experiment_preset_composes_and_passes_the_checks(name):
    # full EuroSAT has no default path (it is not in the repo): the user names it; not read here (data=False)
    path = ["data.path=/data/EuroSAT_RGB.zip"] if name == "eurosat_15_epochs" else []
    cfg = compose_cfg([f"+experiment={name}", *path], fake=False)
    p = check_sweep(cfg, data=False)
    cells = p.cells(["gpu"] if cfg.grid.device == ["gpu"] else ["cpu"])
    assert cells and all(c["train"]["target"]["threshold"] > 0 for c in cells), name
    assert {c["train"]["epochs"] for c in cells} == {15}, name  # the seed notebook's 15 epochs
