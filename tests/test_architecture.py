"""The house rules that can be checked mechanically (issue: "a house a newcomer can live in").

- runner/'s sub-packages import one way (``RUNNER_ALLOWED``) and no module of ours is part of an import
  cycle (function-level imports included);
- no private reach-across: a ``_name`` is never imported from another module of ours;
- no stale pointer: every module path named in a docstring, comment or the README (``runner/cell/run.py``,
  ``runner.sweep.dispatch``, ``core.config.GridConfig``) exists;
- the README's architecture section names every package and sub-package, and no package that is gone;
- no two classes of the project carry the same set of fields (one definition per concept);
- runner/ keeps at most 8 top-level modules besides its sub-packages.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from test_layers import OURS, ROOT, imports_of

#: Which runner sub-packages each one may import (itself included). ``errors`` is a module every part may use.
RUNNER_ALLOWED = {
    "console": {"console", "errors"},
    "store": {"store", "errors"},
    "data": {"data", "errors"},
    "cell": {"cell", "data", "store", "errors"},
    "planning": {"planning", "cell", "data", "errors"},
    "cluster": {"cluster", "planning", "cell", "console", "data", "errors"},
    "sweep": {"sweep", "cluster", "planning", "cell", "console", "store", "data", "errors"},
}
#: The top-level modules of runner/ and what they may import of runner's parts.
RUNNER_TOP = {"__init__": {"errors"}, "__main__": set(RUNNER_ALLOWED) | {"errors"}, "errors": set()}


def _python_files(root: Path = ROOT) -> list[Path]:
    return [p for layer in OURS for p in sorted((root / layer).rglob("*.py"))]


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runner_part(module: str) -> str | None:
    """``runner.cell.run`` → ``cell``; ``runner.errors`` → ``errors``; ``runner`` → ``__init__``."""
    parts = module.split(".")
    if parts[0] != "runner":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def runner_violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / "runner").rglob("*.py")):
        here = _runner_part(_module_name(path, root))
        allowed = RUNNER_ALLOWED.get(here, RUNNER_TOP.get(here, set()) | {here})
        for line, module in imports_of(path, root):
            there = _runner_part(module)
            if there is None or there == "__init__" or there == here:
                continue
            if there not in allowed:
                bad.append(f"{path.relative_to(root)}:{line} imports {module} "
                           f"(runner.{here} may import only {sorted(allowed - {here})} of runner)")
    return bad


def test_runner_subpackages_import_one_way():
    assert runner_violations() == []


def test_a_planted_upward_import_between_runner_subpackages_would_fail(tmp_path):
    for name in OURS:
        (tmp_path / name).mkdir()
    (tmp_path / "runner" / "cell").mkdir()
    (tmp_path / "runner" / "cell" / "planted.py").write_text("def f():\n    from runner.sweep.run import run_sweep\n")
    found = runner_violations(tmp_path)
    assert len(found) == 1 and "runner.cell may import only" in found[0], found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the modules of ours it imports (any depth); ``from pkg import mod`` counts as ``pkg.mod``."""
    files = {_module_name(p, root): p for p in _python_files(root)}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere():
    # A package's __init__ importing its own modules is not a cycle a newcomer trips over; everything else is.
    graph = {m: {t for t in e if not (t.startswith(m + ".") and m.count(".") < t.count("."))} for m, e in
             import_graph().items()}
    graph = {m: {t for t in e if not m.startswith(t + ".")} for m, e in graph.items()}  # a module → its own package
    assert cycles(graph) == []


def test_a_planted_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def private_imports(root: Path = ROOT) -> list[str]:
    """``from <another module of ours> import _name`` (or ``import x._y``)."""
    bad = []
    for path in _python_files(root) + sorted((root / "tests").glob("*.py")) + sorted((root / "benchmarks").glob("*.py")):
        here = _module_name(path, root) if path.relative_to(root).parts[0] in OURS else None
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OURS:
                if node.module == here:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{path.relative_to(root)}:{node.lineno} imports {alias.name} from {node.module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] in OURS and any(p.startswith("_") and not p.startswith("__") for p in parts):
                        bad.append(f"{path.relative_to(root)}:{node.lineno} imports {alias.name}")
    return bad


def test_no_private_name_is_imported_from_another_module():
    assert private_imports() == []


def test_a_planted_private_import_would_fail(tmp_path):
    for name in OURS:
        (tmp_path / name).mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "analysis" / "planted.py").write_text("from analysis.report import _secret\n")
    found = private_imports(tmp_path)
    assert len(found) == 1 and "_secret" in found[0], found


# ---- stale pointers ----------------------------------------------------------------------------
_SLASH_PATH = re.compile(r"(?<![\w./-])((?:core|frameworks|runner|analysis|conf|docker|benchmarks|scripts|tests)"
                         r"/[\w./-]*[\w/])")
_DOTTED = re.compile(r"(?<![\w./-])((?:core|frameworks|runner|analysis)(?:\.[A-Za-z_]\w*)+)")


def _config_keys() -> set[str]:
    """``runner.<key>``: a config key of the runner group, not a module path."""
    from core.config import RunnerConfig

    return set(RunnerConfig.__dataclass_fields__)


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _resolves(dotted: str, root: Path) -> bool:
    parts = dotted.split(".")
    if parts[0] == "runner" and len(parts) > 1 and parts[1] in _config_keys():
        return True  # runner.verbose=true, runner.resume, …
    for cut in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[cut:]
            if not rest:
                return True
            if rest[0] in _top_level_names(module):
                return True
            return (base / rest[0]).is_dir() or (base / f"{rest[0]}.py").is_file()
    return False


def stale_pointers(root: Path = ROOT) -> list[str]:
    # The code and the READMEs; tests are left out (they plant paths that must not exist).
    texts = [p for p in _python_files(root)] + sorted((root / "benchmarks").glob("*.py")) \
        + sorted((root / "scripts").glob("*.py")) + [root / "README.md"] + sorted(root.glob("*/README.md"))
    bad = []
    for path in texts:
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for m in _SLASH_PATH.finditer(line):
                target = m.group(1).rstrip("./")
                if "*" in target or "<" in target:
                    continue
                if not (root / target).exists():
                    bad.append(f"{path.relative_to(root)}:{lineno} names {target}, which does not exist")
            for m in _DOTTED.finditer(line):
                dotted = m.group(1)
                if dotted.endswith((".py", ".yaml", ".md", ".json", ".html")):
                    continue
                if not _resolves(dotted, root):
                    bad.append(f"{path.relative_to(root)}:{lineno} names {dotted}, which does not exist")
    return bad


def test_every_module_path_named_in_docs_and_comments_exists():
    assert stale_pointers() == []


def test_a_planted_stale_pointer_would_fail(tmp_path):
    for name in OURS:
        (tmp_path / name).mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "real.py").write_text("THING = 1\n")
    (tmp_path / "core" / "planted.py").write_text(
        '"""See ``core.real.THING`` and core/real.py; the schemas live in ``core.gone`` and runner/results.py."""\n')
    found = stale_pointers(tmp_path)
    assert len(found) == 2 and any("core.gone" in f for f in found) and any("runner/results.py" in f for f in found), found


# ---- README architecture ------------------------------------------------------------------------
def _architecture_section(readme: str) -> str:
    start = readme.index("## Architecture")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end > 0 else None]


def packages(root: Path = ROOT) -> list[str]:
    """Every package and sub-package of ours, as a folder path (``runner/cell/``)."""
    return sorted(str(p.parent.relative_to(root)) + "/" for layer in OURS for p in (root / layer).rglob("__init__.py"))


def test_the_readme_architecture_names_every_package_and_subpackage():
    section = _architecture_section((ROOT / "README.md").read_text())
    missing = [p for p in packages() if p.rstrip("/").rsplit("/", 1)[-1] + "/" not in section]
    assert missing == [], f"README's architecture section does not name {missing}"
    # ... and names no folder that is gone
    named = set(re.findall(r"^\s*([a-z_]+/)\s", section, flags=re.M))
    known = {p.rstrip("/").rsplit("/", 1)[-1] + "/" for p in packages()} | {
        p.name + "/" for p in ROOT.iterdir() if p.is_dir()} | {
        p.name + "/" for p in (ROOT / "conf").iterdir() if p.is_dir()} | {
        p.name + "/" for p in (ROOT / "docker").iterdir() if p.is_dir()} | {
        p.name + "/" for p in (ROOT / "analysis").iterdir() if p.is_dir()}
    assert sorted(named - known) == []


def test_the_readme_has_a_where_does_my_change_go_table():
    section = _architecture_section((ROOT / "README.md").read_text())
    for change in ("a framework", "a metric", "a dataset", "a statistical test", "a grid axis", "a report section"):
        assert re.search(rf"^\|\s*{change}\b", section, flags=re.M), f"no row for {change!r}"


# ---- one definition per concept -------------------------------------------------------------------
def _is_record(node: ast.ClassDef) -> bool:
    """A dataclass, TypedDict or NamedTuple: a class that is its fields."""
    decorators = [ast.unparse(d) for d in node.decorator_list]
    bases = [ast.unparse(b) for b in node.bases]
    return any(d.split("(")[0].endswith("dataclass") for d in decorators) or any(
        b.endswith(("TypedDict", "NamedTuple")) for b in bases)


def class_fields(root: Path = ROOT) -> dict[str, frozenset[str]]:
    """Every record class of the project (dataclasses, TypedDicts, NamedTuples) → its fields."""
    out = {}
    for path in _python_files(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and _is_record(node):
                fields = frozenset(n.target.id for n in node.body
                                   if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                                   and "ClassVar" not in ast.unparse(n.annotation))
                if len(fields) >= 2:
                    out[f"{_module_name(path, root)}.{node.name}"] = fields
    return out


def test_no_two_classes_carry_the_same_fields():
    seen: dict[frozenset[str], list[str]] = {}
    for name, fields in class_fields().items():
        seen.setdefault(fields, []).append(name)
    twins = [names for names in seen.values() if len(names) > 1]
    assert twins == []


def test_runner_has_at_most_eight_top_level_modules():
    modules = sorted(p.name for p in (ROOT / "runner").glob("*.py"))
    assert len(modules) <= 8, modules
