"""Where the checkout (or image) is, and the ``${project_root:}`` resolver shipped paths use."""
from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"


#: Random per process: with microseconds, it makes a default run directory name unique.
RUN_TOKEN = secrets.token_hex(3)


def register_resolvers() -> None:
    """``${project_root:}`` resolves to the checkout (or image) root, so shipped paths work from any cwd;
    ``${run_token:}`` to this process's ``RUN_TOKEN``."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("run_token"):
        OmegaConf.register_new_resolver("run_token", lambda: RUN_TOKEN)


register_resolvers()
