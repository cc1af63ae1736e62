"""Placement: the cluster's nodes as **slots**, places where one timing cell runs at a time.

One slot per GPU, and ``runner.concurrency`` per CPU-only node; on a cluster with no CPU-only
node, one CPU slot per GPU node that, while busy, holds every GPU lock of its node (so CPU
timings never share the machine with a GPU cell's input pipeline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from runner import grid as gridlib
from runner.grid import GridError


@dataclass(frozen=True)
class Slot:
    """One place where one timing cell runs at a time."""

    key: str  # "<node id>/gpu<i>" | "<node id>/cpu<j>"
    node_id: str
    host: str
    kind: str  # cpu | gpu
    index: int  # Ray's GPU id on the node, or the CPU slot number
    accelerator_type: str | None
    cpus: float  # CPUs reserved for the slot (split among its actors); 0 for GPU slots
    locks: frozenset[str]  # the slot runs only while none of these is held by another slot
    concurrency: int  # timing cells sharing the node (CPU) or device (GPU) at once

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
    gpu_nodes = []
    for node in alive:
        res = node.get("Resources", {})
        node_id, host = node["NodeID"], node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?")
        gpus, cpus = int(res.get("GPU", 0)), float(res.get("CPU", 0))
        if gpus:
            gpu_nodes.append((node, gpus, cpus))
            atype = _accelerator_type(res)
            slots += [Slot(f"{node_id}/gpu{i}", node_id, host, "gpu", i, atype, 0.0,
                           frozenset({f"{node_id}/gpu{i}"}), 1) for i in range(gpus)]
        elif cpus > 0:
            share = min(float(cpus_per_actor or cpus), cpus / concurrency)
            slots += [Slot(f"{node_id}/cpu{j}", node_id, host, "cpu", j, None, share,
                           frozenset({f"{node_id}/cpu{j}"}), concurrency) for j in range(concurrency)]
    if not any(s.kind == "cpu" for s in slots):
        # No CPU-only node: a CPU cell runs on a GPU node alone (it holds every GPU lock of that node),
        # so CPU timings never share the machine with a GPU cell's input pipeline.
        for node, gpus, cpus in gpu_nodes:
            if cpus <= 0:
                continue
            node_id = node["NodeID"]
            host = node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?")
            locks = frozenset({f"{node_id}/cpu0"} | {f"{node_id}/gpu{i}" for i in range(gpus)})
            slots.append(Slot(f"{node_id}/cpu0", node_id, host, "cpu", 0, None,
                              min(float(cpus_per_actor or cpus), cpus), locks, 1))
    return slots


def inventory(slots: Sequence[Slot]) -> gridlib.DeviceInventory:
    """What devices the slots offer, for resolving the grid's ``device`` axis."""
    gpus: dict[str | None, int] = {}
    for s in slots:
        if s.kind == "gpu":
            gpus[s.accelerator_type] = gpus.get(s.accelerator_type, 0) + 1
    return gridlib.DeviceInventory(cpu=any(s.kind == "cpu" for s in slots), gpus=gpus)
