"""``python -m runner [overrides]`` — expand the grid, run every cell on Ray, consolidate, report.

    uv run python -m runner                                  # default grid: frameworks × seeds, CPU
    uv run python -m runner +sweep=seeds                     # 10 seeds × frameworks
    uv run python -m runner +sweep=[seeds,batch_sizes] grid.seed=[0,1,2]
    uv run python -m runner runner.resume=outputs/2025-01-01/12-00-00   # only cells without an ok row
    uv run python -m runner runner.address=auto              # an existing Ray cluster

Exit codes: 0 every cell ok; 1 some cells failed (listed), the report failed, or the sweep could
not run (one line says why — also for its own I/O: disk full, permission denied, output dir gone);
2 invalid grid/config (before any cell runs); 128 + signal when stopped by a signal — 130 SIGINT
(Ctrl-C), 143 SIGTERM, 129 SIGHUP (the summary lists the missing cells and prints the resume
command; see ``runner.stopping``). Tracebacks only with ``runner.debug=true`` or ``HYDRA_FULL_ERROR=1``.

This file is the thin Hydra wrapper; the work is ``runner.sweep.run_sweep(cfg)``.
"""
from __future__ import annotations

import logging
import os
import sys

from runner import CONF_DIR
from runner.outcome import EXIT_INTERRUPTED, EXIT_INVALID
from runner.sweep import run_sweep

log = logging.getLogger("runner")


def _argv_with_defaults(argv: list[str]) -> list[str]:
    """Hydra settings implied by the command line: the log is ``sweep.log``; a resume writes into its sweep."""
    args = list(argv)
    if not any(a.startswith("hydra.job.name=") for a in args):
        args.append("hydra.job.name=sweep")  # else Hydra names the log after this file: __main__.log
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("runner.resume=")), None)
    if resume and resume.strip().lower() not in ("true", "false", "null", "none", "yes", "no", "1", "0", "") \
            and not any(a.startswith("hydra.run.dir=") for a in args):
        # Resuming an earlier output dir: Hydra's run dir (and so the log file) is that dir.
        args.append(f"hydra.run.dir={resume}")
    return args


def _debug(cfg) -> bool:
    """Tracebacks wanted: ``runner.debug=true`` or ``HYDRA_FULL_ERROR=1``."""
    from omegaconf import OmegaConf

    return bool(OmegaConf.select(cfg, "runner.debug", default=False)) or os.environ.get("HYDRA_FULL_ERROR") == "1"


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    from runner.grid import GridError

    outcome: dict[str, int] = {}

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def _app(cfg: DictConfig) -> None:
        outcome["entered"] = 1
        try:
            result = run_sweep(cfg)
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
    sys.argv = [sys.argv[0], *_argv_with_defaults(sys.argv[1:])]
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
