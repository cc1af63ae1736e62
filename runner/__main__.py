"""``python -m runner [overrides]`` — expand the grid, run every cell on Ray, consolidate, report.

    uv run python -m runner                                  # default grid: frameworks × seeds, CPU
    uv run python -m runner +sweep=seeds                     # 10 seeds × frameworks
    uv run python -m runner +sweep=[seeds,batch_sizes] grid.seed=[0,1,2]
    uv run python -m runner runner.resume=outputs/2025-01-01/12-00-00.123456-1a2b3c   # only cells without an ok row
    uv run python -m runner runner.address=auto              # an existing Ray cluster

Exit codes: 0 every cell ok; 1 some cells failed (listed), the report failed, or the sweep could
not run (one line says why — also for its own I/O: disk full, permission denied, output dir gone);
2 invalid grid/config/data (``error: …``, one line, before Ray starts and before anything is
written); 128 + signal when stopped by a signal — 130 SIGINT (Ctrl-C), 143 SIGTERM, 129 SIGHUP (the
summary lists the missing cells and prints the resume command; see ``runner.sweep.stopping``). Tracebacks
only with ``runner.debug=true`` or ``HYDRA_FULL_ERROR=1``.

Before Hydra creates the run directory, the command line is composed and every input is checked
(``runner.planning.checks.check_sweep``), so bad input leaves no directory behind. The default run
directory, ``outputs/<date>/<time with microseconds>-<6 hex>``, is created here with an exclusive
``mkdir``: two sweeps started at the same moment never share one.

This file is the thin Hydra wrapper; the work is ``runner.sweep.run.run_sweep(cfg)``.
"""
from __future__ import annotations

import logging
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path

from runner import CONF_DIR
from runner.errors import EXIT_INTERRUPTED, EXIT_INVALID

log = logging.getLogger("runner")

def _value(args: list[str], key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.lstrip("+~").startswith(f"{key}=")), None)


def _resuming(args: list[str]) -> bool:
    resume = _value(args, "runner.resume")
    return resume is not None and resume.strip().lower() not in ("false", "null", "none", "no", "0", "")


def new_run_dir(root: Path = Path("outputs"), now: datetime | None = None) -> Path:
    """A fresh directory ``<root>/<date>/<H-M-S.microseconds>-<6 hex>``, created exclusively (atomic)."""
    now = now or datetime.now()
    day = root / f"{now:%Y-%m-%d}"
    day.mkdir(parents=True, exist_ok=True)
    while True:
        path = day / f"{now:%H-%M-%S.%f}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # astronomically unlikely; draw again
            continue


#: The plan ``preflight`` checked, by the config it checked: the sweep reuses it (inputs are checked once).
_CHECKED: dict[str, object] = {}


def config_key(cfg) -> str:
    """The composed task config as canonical JSON (Hydra's own node left out): what ``preflight`` checked."""
    import json

    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("hydra", None)
    return json.dumps(data, sort_keys=True, default=str)


def preflight(args: list[str]) -> str | None:
    """Compose the command line and check every input; the one-line problem, or None when all is well
    (then the checked plan is kept for the sweep, which does not check it again)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from runner.planning.checks import check_config, check_sweep, one_line_omegaconf
    from runner.errors import GridError
    from runner.sweep.manifest import MANIFEST

    overrides = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        if _resuming(args):
            check_config(cfg)  # the saved sweep's own config is checked when it is loaded
        else:
            _CHECKED[config_key(cfg)] = check_sweep(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
        return one_line_omegaconf(exc) + (f" ({one_line_omegaconf(cause)})" if cause else "") + _arm_hint(args)
    except GridError as exc:
        return str(exc)
    run_dir = _value(args, "hydra.run.dir")
    if run_dir and not _resuming(args) and (Path(run_dir) / MANIFEST).exists():
        return (f"{run_dir} already holds a sweep; continue it with runner.resume={run_dir}, "
                "or choose a new hydra.run.dir")
    return None


def _arm_hint(args: list[str]) -> str:
    """An arm with '=' in a list is not valid override syntax unquoted (``core.arms``): say how to write it."""
    value = _value(args, "grid.framework") or ""
    if "@" in value and "=" in value:
        return (" — an arm with '=' must be quoted inside the list: \"grid.framework=[keras_jax,'keras_jax@keras==3.14.0']\""
                ", or pin the framework's own package by its version: grid.framework=[keras_jax,keras_jax@3.14.0]")
    return ""


def argv_with_defaults(argv: list[str]) -> list[str]:
    """Hydra settings implied by the command line: the log is ``sweep.log``; a resume writes into its
    sweep; otherwise a fresh run directory (``new_run_dir``) unless ``hydra.run.dir`` is given."""
    args = list(argv)
    if not any(a.startswith("hydra.job.name=") for a in args):
        args.append("hydra.job.name=sweep")  # else Hydra names the log after this file: __main__.log
    if _value(args, "hydra.run.dir") is None:
        resume = _value(args, "runner.resume") or ""
        if not _resuming(args):
            args.append(f"hydra.run.dir={new_run_dir()}")
        elif resume.strip().lower() not in ("true", "yes", "1"):
            args.append(f"hydra.run.dir={resume}")  # resuming an earlier output dir: Hydra's run dir (and log) is it
    return args


def _debug(cfg) -> bool:
    """Tracebacks wanted: ``runner.debug=true`` or ``HYDRA_FULL_ERROR=1``."""
    from omegaconf import OmegaConf

    return bool(OmegaConf.select(cfg, "runner.debug", default=False)) or os.environ.get("HYDRA_FULL_ERROR") == "1"


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    from runner.errors import GridError

    argv = sys.argv[1:]
    if not any(a.startswith("-") for a in argv):  # --help, --cfg, -m …: Hydra's own business
        problem = preflight(argv)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(EXIT_INVALID)
    outcome: dict[str, int] = {}

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def _app(cfg: DictConfig) -> None:
        outcome["entered"] = 1
        try:
            from runner.sweep.run import run_sweep  # after the input checks: they need none of it

            result = run_sweep(cfg, plan=_CHECKED.get(config_key(cfg)))
        except GridError as exc:
            log.error("invalid sweep: %s", exc)
            outcome["code"] = EXIT_INVALID
            return
        except KeyboardInterrupt:  # a stop signal before the sweep's directory existed: nothing written
            log.warning("interrupted before the sweep started; nothing was written")
            outcome["code"] = EXIT_INTERRUPTED
            return
        if result.error is not None and _debug(cfg):
            log.error("traceback (runner.debug):", exc_info=result.error)
        outcome["code"] = result.exit_code

    if os.environ.get("HYDRA_FULL_ERROR") != "1" and "runner.debug=true" not in sys.argv:
        # A log file that cannot be written (disk full) must not print logging's own tracebacks; the
        # sweep's one-line error says what failed.
        logging.raiseExceptions = False
    sys.argv = [sys.argv[0], *argv_with_defaults(argv)]
    try:
        _app()
    except SystemExit as exc:
        # Hydra exits 1 on a composition error (unknown group option, bad override): that is an invalid config.
        if "entered" not in outcome and exc.code == 1:
            sys.exit(EXIT_INVALID)
        raise
    sys.exit(outcome.get("code", 0))  # no code: Hydra only printed something (--help, --cfg)


if __name__ == "__main__":
    main()
