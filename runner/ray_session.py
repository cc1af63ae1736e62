"""Ray for one sweep: start a local instance (or join ``runner.address``), shut down what we started,
and describe the cluster for the results' provenance."""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

from core.text import one_line
from runner.grid import GridError
from runner.outcome import SweepError
from runner.slots import Slot

# Under `uv run`, Ray (≥ 2.43) would otherwise rebuild the uv environment for every worker: upload the
# working directory (outputs and dataset caches included) and create a fresh venv per worker — minutes
# of start-up on each node. Workers use the driver's interpreter instead; a cluster runs one image
# everywhere, so that interpreter exists on every node. Ray reads it when it starts: the runner
# imports ray only inside functions, after this line has run.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


class RaySession:
    """``with RaySession(runner_cfg) as session:`` — ``session.ray`` is ready; a Ray we started is shut down."""

    def __init__(self, runner_cfg: Mapping[str, Any]) -> None:
        self.runner_cfg = runner_cfg
        self.started = False  # this sweep started the local Ray (so it owns it whole)
        self.ray: Any = None

    def __enter__(self) -> "RaySession":
        import ray

        self.ray = ray
        if ray.is_initialized():
            return self
        init_kwargs: dict[str, Any] = {"include_dashboard": bool(self.runner_cfg.get("dashboard", False)),
                                       "logging_level": logging.WARNING}
        if self.runner_cfg.get("address"):
            init_kwargs["address"] = str(self.runner_cfg["address"])
        else:
            init_kwargs.update(num_cpus=self.runner_cfg.get("num_cpus"), num_gpus=self.runner_cfg.get("num_gpus"))
        try:
            ray.init(**init_kwargs)
        except (KeyboardInterrupt, GridError):
            raise
        except Exception as exc:
            where = self.runner_cfg.get("address") or "a local instance"
            raise SweepError(f"could not start/join Ray ({where}): {one_line(exc, 500)}") from None
        self.started = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.started:
            try:
                self.ray.shutdown()
            except Exception:  # pragma: no cover - best effort at exit
                pass


def environment(ray, slots: Sequence[Slot], devices: Sequence[str]) -> dict[str, Any]:
    """Driver, cluster and slot facts recorded in the results' metadata."""
    from runner import provenance

    nodes = [{"node_id": n["NodeID"], "host": n.get("NodeManagerHostname"), "address": n.get("NodeManagerAddress"),
              "resources": n.get("Resources", {})} for n in ray.nodes() if n.get("Alive", True)]
    return {"git_sha": provenance.git_sha(), "driver_host": provenance.host_name(),
            "driver_versions": provenance.library_versions(), "ray_version": ray.__version__,
            "hosts": sorted({n["host"] for n in nodes if n["host"]}), "nodes": nodes,
            "cluster_resources": ray.cluster_resources(), "devices": list(devices),
            "slots": [{"slot": s.label, "kind": s.kind, "gpu_index": s.index if s.kind == "gpu" else None,
                       "accelerator_type": s.accelerator_type, "concurrency": s.concurrency} for s in slots]}
