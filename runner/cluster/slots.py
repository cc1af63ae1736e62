"""Placement: the cluster's nodes as **slots**, places where one timing cell runs at a time.

One slot per GPU, and ``runner.concurrency`` per CPU-only node; on a cluster with no CPU-only
node, one CPU slot per GPU node that, while busy, holds every GPU lock of its node (so CPU
timings never share the machine with a GPU cell's input pipeline).

Each slot is one Ray **placement-group bundle** (``Slot.bundle``), pinned to its node by the
``ray.io/node-id`` label: a GPU slot reserves one whole GPU plus its share of the node's CPUs, a
CPU slot its CPUs. Every framework actor of the slot is created inside that bundle (fractions of
its GPU/CPUs), so all of them see the same physical GPU — Ray picks the GPU when it reserves the
bundle, and nothing is corrected afterwards. ``discover_slots`` is called again during the sweep
(``runner.sweep.dispatch``): slots of a node that joined later are added on the next dispatch round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from runner.planning import grid as gridlib
from runner.errors import GridError


@dataclass(frozen=True)
class Slot:
    """One place where one timing cell runs at a time."""

    key: str  # "<node id>/gpu<i>" | "<node id>/cpu<j>" (i: the bundle's number on the node)
    node_id: str
    host: str
    kind: str  # cpu | gpu
    index: int  # the GPU bundle's number on the node (the GPU id is Ray's, read from the actors), or the CPU slot number
    accelerator_type: str | None
    cpus: float  # CPUs reserved in the slot's bundle (split among its actors)
    locks: frozenset[str]  # the slot runs only while none of these is held by another slot
    concurrency: int  # timing cells sharing the node (CPU) or device (GPU) at once
    node_ip: str | None = None

    def bundle(self) -> dict[str, float]:
        """The slot's placement-group bundle: one whole GPU (GPU slots) and the slot's CPUs."""
        res = {"GPU": 1.0} if self.kind == "gpu" else {}
        if self.cpus > 0:
            res["CPU"] = self.cpus
        return res or {"CPU": 0.0001}  # a bundle must reserve something

    @property
    def label(self) -> str:
        return f"{self.host}:{self.node_id[:6]}/{self.kind}{self.index}"

    def accepts(self, device: str) -> bool:
        if device == "cpu":
            return self.kind == "cpu"
        if device == "gpu":
            return self.kind == "gpu"
        if device.startswith("gpu:"):
            return self.kind == "gpu" and (self.accelerator_type or "").lower() == device[4:].lower()
        return False


def _accelerator_type(resources: Mapping[str, float]) -> str | None:
    types = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
    return types[0] if len(types) == 1 else None


def discover_slots(nodes: Sequence[Mapping[str, Any]], *, concurrency: int, cpus_per_actor: float | None) -> list[Slot]:
    """Slots from ``ray.nodes()``: one per GPU; ``concurrency`` per CPU-only node (see the module doc)."""
    if concurrency < 1:
        raise GridError(f"runner.concurrency must be >= 1, got {concurrency}")
    alive = sorted((n for n in nodes if n.get("Alive", True)), key=lambda n: n["NodeID"])
    slots: list[Slot] = []
    # No CPU-only node: a CPU cell runs on a GPU node alone (it holds every GPU lock of that node),
    # so CPU timings never share the machine with a GPU cell's input pipeline.
    cpu_on_gpu_nodes = not any(float(n.get("Resources", {}).get("CPU", 0)) > 0
                               and not int(n.get("Resources", {}).get("GPU", 0)) for n in alive)
    for node in alive:
        res = node.get("Resources", {})
        node_id, host = node["NodeID"], node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?")
        ip = node.get("NodeManagerAddress")
        gpus, cpus = int(res.get("GPU", 0)), float(res.get("CPU", 0))
        if gpus:
            atype = _accelerator_type(res)
            cpu_slot = cpu_on_gpu_nodes and cpus > 0
            # Bundles reserve at once, so the node's CPUs are split between its GPU bundles (and its CPU slot).
            share = _floor(min(float(cpus_per_actor or cpus), cpus / (gpus + cpu_slot)))
            slots += [Slot(f"{node_id}/gpu{i}", node_id, host, "gpu", i, atype, share,
                           frozenset({f"{node_id}/gpu{i}"}), 1, ip) for i in range(gpus)]
            if cpu_slot:
                locks = frozenset({f"{node_id}/cpu0"} | {f"{node_id}/gpu{i}" for i in range(gpus)})
                slots.append(Slot(f"{node_id}/cpu0", node_id, host, "cpu", 0, None, share, locks, 1, ip))
        elif cpus > 0:
            share = _floor(min(float(cpus_per_actor or cpus), cpus / concurrency))
            slots += [Slot(f"{node_id}/cpu{j}", node_id, host, "cpu", j, None, share,
                           frozenset({f"{node_id}/cpu{j}"}), concurrency, ip) for j in range(concurrency)]
    return slots


def _floor(cpus: float) -> float:
    """Ray's resource granularity is 1e-4: round down so the bundles of a node fit it."""
    return math.floor(cpus * 1e4) / 1e4


def inventory(slots: Sequence[Slot]) -> gridlib.DeviceInventory:
    """What devices the slots offer, for resolving the grid's ``device`` axis."""
    gpus: dict[str | None, int] = {}
    for s in slots:
        if s.kind == "gpu":
            gpus[s.accelerator_type] = gpus.get(s.accelerator_type, 0) + 1
    return gridlib.DeviceInventory(cpu=any(s.kind == "cpu" for s in slots), gpus=gpus)
