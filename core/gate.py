"""The equivalence-gate record: one typed, versioned schema that the runner writes
(``parity_gate.json`` and the ``kvp.parity_gate`` Parquet metadata) and the report reads.

A record holds one check per distinct (model, data) of the sweep; a check that ran holds the
verdict of ``frameworks.parity.compare`` (``comparison``, whose ``passed`` decides the check).
A record of a version this code does not know is refused (``GateRecordError``) — never guessed at.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

GATE_SCHEMA_VERSION = 1
GATE_STATUSES = ("passed", "failed", "error", "skipped", "not run")
CHECK_STATUSES = ("passed", "failed", "error")


class GateRecordError(ValueError):
    """A gate record of an unknown version or shape."""


@dataclass
class GateCheck:
    """One (model, data) pair checked across the real frameworks."""

    model: str
    status: str  # passed | failed | error
    data: str | None = None
    seed: int | None = None
    tolerance: float | None = None
    parity: dict[str, Any] = field(default_factory=dict)  # the parity knobs the gate ran with (fp32, eager)
    comparison: dict[str, Any] | None = None  # frameworks.parity.compare(...) verdict; None on error
    errors: dict[str, str] = field(default_factory=dict)  # framework → why it produced no output

    @property
    def reasons(self) -> list[str]:
        """Why the check did not pass: the comparison's reasons, or the frameworks' errors."""
        if self.comparison is not None:
            return [str(r) for r in self.comparison.get("reasons", [])]
        return [f"{fw}: {e}" for fw, e in self.errors.items()]


@dataclass
class GateRecord:
    status: str  # passed | failed | error | skipped | not run
    summary: str = ""
    frameworks: list[str] = field(default_factory=list)
    checks: list[GateCheck] = field(default_factory=list)
    created: str = ""
    schema_version: int = GATE_SCHEMA_VERSION

    @classmethod
    def not_run(cls, why: str = "") -> "GateRecord":
        return cls(status="not run", summary=why)

    @classmethod
    def new(cls, frameworks: list[str]) -> "GateRecord":
        return cls(status="passed", frameworks=list(frameworks),
                   created=datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def conclude(self) -> "GateRecord":
        """Overall status and a one-line summary from the checks."""
        statuses = [c.status for c in self.checks]
        self.status = "error" if "error" in statuses else ("failed" if "failed" in statuses else "passed")
        bad = [f"{c.model}×{c.data}: {c.status} (" + "; ".join(c.reasons[:3]) + ")"
               for c in self.checks if c.status != "passed"]
        self.summary = "; ".join(bad) if bad else f"{len(statuses)} check(s) passed"
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "GateRecord":
        """Read a stored record; ``GateRecordError`` names what is wrong (version, field, status)."""
        if not isinstance(data, Mapping):
            raise GateRecordError(f"an equivalence-gate record is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != GATE_SCHEMA_VERSION:
            raise GateRecordError(f"equivalence-gate record version {version!r} is unknown to this code "
                                  f"(it reads version {GATE_SCHEMA_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GateRecordError(f"equivalence-gate record has unknown field(s) {unknown}")
        if data.get("status") not in GATE_STATUSES:
            raise GateRecordError(f"equivalence-gate status {data.get('status')!r} is not one of {list(GATE_STATUSES)}")
        checks = [_check_from_dict(c) for c in data.get("checks") or []]
        return cls(**{**dict(data), "checks": checks})


def _check_from_dict(data: Any) -> GateCheck:
    if not isinstance(data, Mapping):
        raise GateRecordError(f"an equivalence-gate check is a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(GateCheck)}
    unknown, missing = sorted(set(data) - known), sorted({"model", "status"} - set(data))
    if unknown or missing:
        raise GateRecordError(f"equivalence-gate check: unknown field(s) {unknown}, missing {missing}")
    if data["status"] not in CHECK_STATUSES:
        raise GateRecordError(f"equivalence-gate check status {data['status']!r} is not one of {list(CHECK_STATUSES)}")
    comparison = data.get("comparison")
    if comparison is not None and not isinstance(comparison.get("passed"), bool):
        raise GateRecordError("equivalence-gate check: its comparison has no boolean 'passed'")
    return GateCheck(**dict(data))
