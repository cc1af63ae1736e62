"""The layers import one way only: core ← frameworks ← runner; analysis ← core.

Every module's imports are parsed (``ast``, function-level imports included), so an upward import
fails here even when it hides inside a function. Deep-learning frameworks are imported only in
``frameworks/``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.registry import FRAMEWORK_ONLY_MODULES

ROOT = Path(__file__).resolve().parent.parent
OURS = ("core", "frameworks", "runner", "analysis")
#: Which of our packages each layer may import (itself included).
ALLOWED = {
    "core": {"core"},
    "frameworks": {"core", "frameworks"},
    "runner": {"core", "frameworks", "runner", "analysis"},  # analysis: only its public package API
    "analysis": {"core", "analysis"},
}
#: The runner may call the analysis only through ``import analysis`` / ``from analysis import <public>``.
RUNNER_ANALYSIS_PUBLIC = {"analysis"}
#: The modules the registry's adapters, exporters and serving runtimes import (``core.registry.Framework.imports``,
#: ``core.registry.DeployFormat.imports``): only frameworks/ may.
DEEP_LEARNING = FRAMEWORK_ONLY_MODULES


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for layer in OURS:
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in imports_of(path, root):
                top = module.split(".")[0]
                where = f"{path.relative_to(root)}:{line} imports {module}"
                if top in OURS and top not in ALLOWED[layer]:
                    bad.append(f"{where} (a {layer} module may import only {sorted(ALLOWED[layer])})")
                elif layer == "runner" and top == "analysis" and module not in RUNNER_ANALYSIS_PUBLIC:
                    bad.append(f"{where} (the runner uses only the analysis' public package API)")
                elif top in DEEP_LEARNING and layer != "frameworks":
                    bad.append(f"{where} (deep-learning frameworks are imported only in frameworks/)")
    return bad


def test_every_import_goes_down_the_layers():
    assert violations() == []


@pytest.mark.parametrize("layer, line, culprit", [
    ("core", "from runner.cell.run import cell_id", "core/"),
    ("frameworks", "    from runner import CONF_DIR  # inside a function", "frameworks/"),
    ("analysis", "import runner.store.fragments as rr", "analysis/"),
    ("runner", "from analysis.summary import summarize", "public package API"),
    ("runner", "import torch", "only in frameworks/"),
    ("analysis", "import onnxruntime", "only in frameworks/"),  # a serving runtime, from the deploy formats
    ("core", "from . import spec\nfrom ..runner import grid", "core/"),
])
def test_an_upward_import_would_fail(tmp_path, layer, line, culprit):
    for name in OURS:
        (tmp_path / name).mkdir()
    body = f"def f():\n{line}\n" if line.startswith("    ") else f"{line}\n"
    (tmp_path / layer / "planted.py").write_text(body)
    found = violations(tmp_path)
    assert len(found) == 1 and culprit in found[0] and "planted.py" in found[0], found


def test_the_driver_modules_import_no_deep_learning_framework():
    """Every module of core, runner and analysis, and what the driver uses of frameworks/, imported in a
    fresh process (so nothing else the test run imported can hide an import)."""
    from runner_support import frameworks_imported_by

    code = """
import importlib, pkgutil
import analysis, core, runner
for package in (core, runner, analysis):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
import frameworks.base, frameworks.knobs, frameworks.parity  # what the driver itself uses of frameworks/
"""
    assert frameworks_imported_by(code) == []
    assert frameworks_imported_by("import sys; sys.modules['jax'] = sys") == ["jax"]  # the probe can fail
