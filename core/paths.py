"""Where the checkout (or image) is, and the ``${project_root:}`` resolver shipped paths use."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """``${project_root:}`` resolves to the checkout (or image) root, so shipped paths work from any cwd."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


register_resolvers()
