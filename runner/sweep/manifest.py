"""The sweep's directory and manifest (``sweep.json``): what defines a sweep, its invocations, and resume.

``open_sweep`` decides, before Ray starts, which config defines the sweep (a resume reuses the
saved one; only ``runner.*``/``report.*``/``hydra.*`` may change), checks it
(``runner.planning.checks.check_sweep``), and raises ``GridError`` (exit 2) on anything invalid. The manifest is
written before any cell runs, so the printed resume command works whenever the sweep stops.
"""
from __future__ import annotations

import json
import logging
import secrets
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from core.atomic import atomic_write_json, atomic_write_text
from runner.planning import grid as gridlib
from runner.planning.checks import check_sweep
from runner.errors import GridError
from runner.store.io_errors import sweep_io

log = logging.getLogger("runner.sweep")

MANIFEST = "sweep.json"
#: Task overrides that only say how/where to run, so a resume may change them freely.
_RUN_ONLY_PREFIXES = ("runner.", "report.", "hydra.")


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class OpenSweep:
    """A validated sweep about to run (or resume) in ``out_dir``."""

    cfg: DictConfig  # what to run (the saved config on a resume) + how to run it (this invocation)
    manifest: dict[str, Any]
    resuming: bool
    out_dir: Path
    overrides: list[str]
    plan: gridlib.GridPlan
    runner_cfg: dict[str, Any]
    manifest_before: str | None = None  # the manifest as it was, restored if this invocation is refused

    @property
    def sweep_id(self) -> str:
        return self.manifest["sweep_id"]

    def write(self) -> None:
        with sweep_io("cannot write", self.out_dir / MANIFEST):
            atomic_write_json(self.out_dir / MANIFEST, self.manifest)

    def record_invocation(self) -> None:
        """Create the directory and append this invocation to the manifest, before anything runs."""
        with sweep_io("cannot create", self.out_dir):
            self.out_dir.mkdir(parents=True, exist_ok=True)
        with sweep_io("cannot read", self.out_dir / MANIFEST):
            self.manifest_before = (self.out_dir / MANIFEST).read_text() if self.resuming else None
        self.manifest["invocations"].append({"started": utcnow(), "resume": self.resuming,
                                             "overrides": list(self.overrides)})
        self.write()

    def undo_invocation(self) -> None:
        """Refused after all (e.g. a device the cluster lacks): leave the directory as it was."""
        if self.manifest_before is None:
            (self.out_dir / MANIFEST).unlink(missing_ok=True)
        else:
            atomic_write_text(self.out_dir / MANIFEST, self.manifest_before)

    def record_plan(self, cells: Sequence[Mapping[str, Any]], ids: Sequence[str], devices: Sequence[str],
                    done_ok: set[str]) -> list[dict[str, Any]]:
        """Store the expanded plan; return the cells still to run (a resume skips ``done_ok``)."""
        todo = [c for c, i in zip(cells, ids) if i not in done_ok]
        if self.resuming:
            unknown = set(self.manifest.get("cells", [])) - set(ids)
            if unknown:
                log.warning("resume: %d cell(s) of the original plan are not in this expansion (different "
                            "cluster devices?); they are not re-run", len(unknown))
            log.info("resume: %d of %d cells already ok; running the %d missing", len(set(ids) & done_ok),
                     len(ids), len(todo))
        self.manifest["cells"] = list(ids)
        self.manifest["devices"] = list(devices)
        self.manifest["invocations"][-1]["cells_to_run"] = len(todo)
        self.write()
        return todo

    def record_finish(self, interrupted: bool, ok: int, failed: int, missing: int,
                      **extra: Any) -> None:
        self.manifest["invocations"][-1].update(finished=utcnow(), interrupted=interrupted, ok=ok,
                                                failed=failed, missing=missing, **extra)
        self.write()


def open_sweep(cfg: Any, out_dir: str | Path | None, overrides: Sequence[str] | None,
               plan: gridlib.GridPlan | None = None) -> OpenSweep:
    """Everything decidable without a cluster; ``GridError`` (exit 2) when the sweep is invalid. ``plan``:
    what ``check_sweep`` returned for ``cfg`` already (not checked again); a resume checks its saved config."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    hydra_dir, hydra_overrides = _hydra_context()
    out_dir = Path(out_dir) if out_dir is not None else hydra_dir
    if out_dir is None:
        raise GridError("run_sweep: no output directory (pass out_dir, or run under Hydra)")
    overrides = list(overrides) if overrides is not None else hydra_overrides
    resume_arg = truthy_resume(OmegaConf.select(cfg, "runner.resume"))
    if isinstance(resume_arg, str):
        out_dir = Path(resume_arg)
    sweep_cfg, manifest, resuming = prepare_sweep(cfg, out_dir, overrides)
    if plan is None or resuming:
        plan = check_sweep(sweep_cfg)
    runner_cfg = OmegaConf.to_container(sweep_cfg.runner, resolve=True)
    return OpenSweep(sweep_cfg, manifest, resuming, out_dir, overrides, plan, runner_cfg)


def prepare_sweep(cfg: Any, out_dir: Path, overrides: Sequence[str]) -> tuple[DictConfig, dict[str, Any], bool]:
    """The config that defines the sweep, its manifest, and whether this is a resume. Raises GridError."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    resume = truthy_resume(OmegaConf.select(cfg, "runner.resume"))
    if not resume:
        if (out_dir / MANIFEST).exists():
            raise GridError(f"{out_dir} already holds a sweep; continue it with runner.resume=true "
                            f"(or runner.resume={out_dir}), or choose a new hydra.run.dir")
        manifest = {"sweep_id": f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
                    "created": utcnow(), "overrides": list(overrides),
                    "config": OmegaConf.to_container(cfg, resolve=False), "invocations": []}
        return cfg, manifest, False
    path = (out_dir / MANIFEST) if resume is True else Path(resume) / MANIFEST
    if not path.is_file():
        raise GridError(f"runner.resume: {path.parent} holds no sweep to resume (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    ours = _sweep_overrides(overrides)
    theirs = _sweep_overrides(manifest.get("overrides", []))
    if ours and ours != theirs:
        raise GridError(f"runner.resume: the sweep in {path.parent} was defined by {theirs or 'the defaults'}, "
                        f"not {ours}; resume with runner.* overrides only, or start a new sweep")
    saved = OmegaConf.create(manifest["config"])
    # What to run comes from the saved sweep; how to run it (runner.*, report.*) from this invocation.
    saved.runner = cfg.runner
    saved.report = cfg.report
    return saved, manifest, True


def truthy_resume(value: Any) -> bool | str:
    """``runner.resume``: False, True (this directory) or the path of the sweep to continue."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    text = str(value).strip()
    if text.lower() in ("", "false", "no", "0", "off", "null", "none"):
        return False
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    return text


def _sweep_overrides(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(_RUN_ONLY_PREFIXES)]


def _run_overrides(overrides: Sequence[str]) -> list[str]:
    keys = [o.lstrip("+~") for o in overrides]
    return [o for o, k in zip(overrides, keys) if k.startswith("runner.") and not k.startswith("runner.resume")]


def resume_command(out_dir: Path, overrides: Sequence[str]) -> str:
    """The command that continues the sweep in ``out_dir`` (keeping this invocation's ``runner.*``)."""
    try:
        shown = out_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = out_dir.resolve()
    return " ".join(["python -m runner", shlex.quote(f"runner.resume={shown}"),
                     *(shlex.quote(o) for o in _run_overrides(overrides))])


def _hydra_context() -> tuple[Path | None, list[str]]:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            return Path(hc.runtime.output_dir), list(hc.overrides.task)
    except Exception:  # pragma: no cover - hydra not in use
        pass
    return None, []
