"""The equivalence gate of a sweep: ``frameworks.parity.gate_outputs`` in each real framework's
actor, ``compare`` on the driver, once per distinct (model, data); and the decision whether a
failed gate stops the sweep."""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from core.arms import arm_of
from core.gate import GateCheck, GateRecord
from core.registry import FRAMEWORKS
from core.text import one_line
from runner.planning import grid as gridlib
from runner.cluster.actors import ActorRecord
from runner.errors import SweepError

log = logging.getLogger("runner.sweep")

PARITY_GATE_FILE = "parity_gate.json"
#: Frameworks the equivalence gate skips: the numpy stand-in builds no ModelSpec.
GATE_SKIP = {n for n, f in FRAMEWORKS.items() if not f.real}


def run_gate(ray, actors: Sequence[ActorRecord], cells: Sequence[Mapping[str, Any]], cfg: DictConfig,
             runner_cfg: Mapping[str, Any]) -> GateRecord:
    """One check per distinct (model, data) of ``cells``, over their real frameworks — each arm (a
    framework at other package versions, ``core.arms``) in its own actor, so versions are checked too."""
    names = {arm_of(c["framework"]): c["framework"]["name"] for c in cells}
    frameworks = sorted(a for a, n in names.items() if n not in GATE_SKIP)
    stand_ins = sorted(a for a, n in names.items() if n in GATE_SKIP)
    unchecked = f"; not checked: {', '.join(stand_ins)} (stand-ins that build no model spec)" if stand_ins else ""
    record = GateRecord.new(frameworks)
    if len(frameworks) < 2:
        record.status = "skipped"
        record.summary = f"fewer than two real frameworks ({', '.join(frameworks) or 'none'}){unchecked}"
        log.info("equivalence gate skipped: %s", record.summary)
        return record
    from frameworks.parity import compare

    tolerance = float(runner_cfg.get("parity_tolerance", 1e-4))
    parity_cfg = OmegaConf.to_container(cfg.parity, resolve=True)
    # The gate checks the model definitions, not the speed policies: fp32 and each framework's default mode.
    parity_cfg = dict(parity_cfg, precision="fp32", execution="default")
    groups: dict[str, tuple[dict, dict, int]] = {}
    for cell in cells:  # the first cell's seed: its dataset split is prepared for the cells anyway
        key = json.dumps([cell["model"], cell["data"]], sort_keys=True, default=str)
        groups.setdefault(key, (cell["model"], cell["data"], int(cell["seed"])))
    for model_cfg, data_cfg, seed in groups.values():
        check = GateCheck(model=gridlib.model_name(model_cfg), data=data_cfg.get("name"), seed=seed,
                          tolerance=tolerance, parity=parity_cfg, status="error")
        outputs = _gate_outputs(ray, actors, frameworks, check, model_cfg, data_cfg, parity_cfg, seed)
        if not check.errors:
            check.comparison = compare(outputs, tolerance=tolerance)
            check.status = "passed" if check.comparison["passed"] else "failed"
        record.checks.append(check)
        log.info("equivalence gate %s × %s over %s: %s", check.model, check.data, frameworks, check.status.upper())
    record.conclude()
    record.summary += unchecked
    return record


def _gate_outputs(ray, actors, frameworks, check: GateCheck, model_cfg, data_cfg, parity_cfg, seed) -> dict[str, Any]:
    """Each framework's gate outputs, computed in parallel in its ready actor; errors go into ``check``."""
    refs = {}
    for fw in frameworks:
        actor = next((a for a in actors if a.framework == fw and a.state == "ready"), None)
        if actor is None:
            check.errors[fw] = "no running actor"
            continue
        refs[fw] = actor.handle.gate.remote(model_cfg, data_cfg, parity_cfg, seed, actor.slot.kind)
    outputs = {}
    for fw, ref in refs.items():
        try:
            outputs[fw] = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the whole cause (the actor's exception), not a cut of it
            cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
            check.errors[fw] = one_line(cause, 100_000)
    return outputs


def check_gate(gate: GateRecord, cfg: DictConfig, runner_cfg: Mapping[str, Any]) -> None:
    """A failed/errored gate stops a strict-parity sweep (``SweepError``) unless allowed; else a warning."""
    if gate.status not in ("failed", "error"):
        return
    log.error("EQUIVALENCE GATE %s: %s (see %s)", gate.status.upper(), gate.summary, PARITY_GATE_FILE)
    strict = OmegaConf.select(cfg, "parity.mode") == "strict"
    if strict and not runner_cfg.get("allow_parity_failure", False):
        raise SweepError(f"the equivalence gate {gate.status} ({gate.summary}); the frameworks do not "
                         "compute the same function, so timings would not compare like with like. "
                         "Fix the parity settings, or run anyway with runner.allow_parity_failure=true")
    log.warning("continuing despite the failed gate (%s); the report shows it",
                "parity.mode is not strict" if not strict else "runner.allow_parity_failure=true")
