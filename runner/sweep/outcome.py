"""What a sweep ends with: exit codes, ``SweepOutcome``, and the closing lines the user reads."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger("runner.sweep")

from runner.cell.identity import cell_label
from runner.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


@dataclass
class SweepOutcome:
    exit_code: int
    out_dir: Path
    sweep_id: str = ""
    planned: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell id → error
    missing: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # cells run by this invocation
    message: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    slots: int = 0
    wall_seconds: float = 0.0
    dispatch_seconds: float = 0.0  # first dispatch → last result
    resume_command: str = ""
    error: BaseException | None = None  # what made the sweep fail (its traceback: runner.debug=true)


def count_cells(outcome: SweepOutcome, out_dir: Path) -> None:
    """Fill ``ok``/``failed``/``missing`` of ``outcome`` from the fragments on disk."""
    from runner.store import fragments as results  # pyarrow: not needed by a command that stops at its input checks

    runs = results.read_fragments(out_dir, "runs")
    status = dict(zip(runs["cell_id"].to_pylist(), zip(runs["status"].to_pylist(), runs["error"].to_pylist())))
    outcome.ok = [c for c in outcome.planned if status.get(c, (None,))[0] == "ok"]
    # "skipped": a combination the framework cannot honour (Adapter.unsupported) — stated, not a failure.
    outcome.failed = {c: status[c][1] or "failed" for c in outcome.planned
                      if c in status and status[c][0] not in ("ok", "skipped")}
    outcome.missing = [c for c in outcome.planned if c not in status]


def say_deployments(out_dir: Path | None, labels: Mapping[str, str]) -> None:
    """One line for the deployments (``train.deploy``), when there are any, and one per failed deployment: a wrong
    artifact must not hide behind "all cells ok"."""
    from runner.store import fragments as results

    if out_dir is None:
        return
    table = results.read_fragments(out_dir, "deployments")
    if not table.num_rows:
        return
    rows = table.select(["cell_id", "format", "runtime", "status", "error"]).to_pylist()
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    log.info("deployments: %d ok, %d failed, %d skipped (deployments.parquet; the report's Deploys section)",
             counts["ok"], counts["failed"], counts["skipped"])
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed[:10]:
        log.warning("  deployment failed %s %s → %s: %s", labels.get(r["cell_id"], r["cell_id"]), r["format"],
                    r["runtime"], r["error"])
    if len(failed) > 10:
        log.warning("  … and %d more", len(failed) - 10)


def say_sweep_failed(outcome: SweepOutcome) -> SweepOutcome:
    """The sweep itself failed (Ray, actors, gate): where the partial results are, and why."""
    log.info("results so far: %s (%d ok, %d failed of %d cells)", outcome.out_dir, len(outcome.ok),
             len(outcome.failed), len(outcome.planned))
    log.error(outcome.message)
    return outcome


def say_interrupted(outcome: SweepOutcome, cells: Sequence[Mapping[str, Any]]) -> SweepOutcome:
    """Interrupted: what finished, what is missing, and the command that resumes it (exit 130)."""
    outcome.exit_code = EXIT_INTERRUPTED
    log.warning("interrupted: %d of %d cells finished (%d ok, %d failed), %d missing; finished cells are in %s",
                len(outcome.ok) + len(outcome.failed), len(outcome.planned), len(outcome.ok),
                len(outcome.failed), len(outcome.missing), outcome.out_dir)
    labels = {cid: cell_label(c) for c, cid in zip(cells, outcome.planned)}
    for cid in outcome.missing[:20]:
        log.warning("  missing %s", labels.get(cid, cid))
    if len(outcome.missing) > 20:
        log.warning("  … and %d more", len(outcome.missing) - 20)
    log.warning("resume with: %s", outcome.resume_command)
    what = f"{len(outcome.missing)} cell(s) missing" if outcome.planned else "before any cell was planned"
    outcome.message = f"interrupted: {what}; resume with: {outcome.resume_command}"
    return outcome


def say_finished(outcome: SweepOutcome, cells: Sequence[Mapping[str, Any]], report_ok: bool) -> SweepOutcome:
    """Every cell ran: the counts, each failure, and the exit code (0 only when all are ok)."""
    log.info("results: %s (%d ok, %d failed of %d cells)", outcome.out_dir, len(outcome.ok), len(outcome.failed),
             len(outcome.planned))
    labels = {cid: cell_label(c) for c, cid in zip(cells, outcome.planned)}
    say_deployments(outcome.out_dir, labels)
    for cid, err in list(outcome.failed.items())[:20]:
        log.error("  failed %s: %s", labels.get(cid, cid), err)
    if not outcome.ok and outcome.planned:
        first = next(iter(outcome.failed.values()), "no result")
        outcome.message = f"sweep failed: all {len(outcome.planned)} cells failed; first error: {first}"
    elif outcome.failed or outcome.missing:
        outcome.message = (f"{len(outcome.failed)} of {len(outcome.planned)} cells failed: "
                           + ", ".join(list(outcome.failed)[:10]) + (" …" if len(outcome.failed) > 10 else ""))
    elif not report_ok:
        outcome.message = "all cells ok, but the report step failed (see above); results are intact"
    else:
        outcome.message = f"all {len(outcome.planned)} cells ok"
        outcome.exit_code = EXIT_OK
    (log.info if outcome.exit_code == EXIT_OK else log.error)(outcome.message)
    return outcome
