"""``benchmarks/device_check.sh`` / ``.py`` (the GPU check in one command), without a GPU.

Cheap: the shell script parses; the Python part's dry run writes its plan and imports no framework
and no Ray; and every package the checked code imports is either in the device image's list or
carried as a wheel (``DEVICE_IMAGE`` / ``CARRIED`` of the script), found by following the imports of
what the plan runs (AST, function-level imports included) — as are the carried wheels' own needs.
The real run (the wheels installed into a Python with only the image's packages, then every step on
CPU) is the README's dry run; on a GPU, ``bash benchmarks/device_check.sh``.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.registry import DEPLOY_MODULES, FRAMEWORKS, REAL_FRAMEWORKS
from test_layers import imports_of

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"
SHELL = ROOT / "benchmarks" / "device_check.sh"
_spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
dc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dc)

OURS = ("core", "frameworks", "runner", "analysis")
#: What the check must run on the lent GPU machines (no TensorFlow there).
EXPECTED_ON_DEVICE = {"pytorch", "keras_jax", "keras_torch"}


def test_the_shell_script_parses_and_installs_the_carried_wheels():
    subprocess.run(["bash", "-n", str(SHELL)], check=True)
    text = SHELL.read_text()
    assert re.search(r"pip install .*--no-index --no-deps .*--target", text)
    assert "benchmarks/device_check.py --out" in text and '"$@"' in text and "${OUT:-" in text


def test_the_dry_run_writes_the_plan_and_imports_no_framework(tmp_path):
    code = ("import runpy, sys; sys.argv = [%r, '--dry-run', '--out', sys.argv[1]]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = {'torch', 'jax', 'tensorflow', 'keras', 'ray', 'hydra'} & {m.split('.')[0] for m in sys.modules}\n"
            "print('HEAVY', sorted(heavy))\n") % str(SCRIPT)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    summary = json.loads((tmp_path / "device_check.json").read_text())
    assert summary["mode"] == {"device": "gpu", "quick": False, "dry_run": True, "budget_seconds": 450}
    rows = {(r["framework"], r["check"]): r for r in summary["table"]}
    assert set(rows) == {(fw, check) for fw in REAL_FRAMEWORKS for check in dc.CHECKS}
    assert all(r["status"] in ("planned", "skipped") for r in rows.values())
    for fw in REAL_FRAMEWORKS:
        if rows[(fw, "cell")]["status"] == "planned":
            assert f"framework={fw}" in rows[(fw, "cell")]["argv"] and "device=gpu" in rows[(fw, "cell")]["argv"]
            ceiling = rows[(fw, "ceiling:capstone_cnn")]["argv"]
            assert ceiling[ceiling.index("--models") + 1:][:2] == list(dc.MODELS)
    assert set(summary["versions"]) >= set(dc.DEVICE_IMAGE) | set(dc.CARRIED)


def test_a_missing_carried_package_is_one_clear_error(monkeypatch):
    real = dc.versions
    monkeypatch.setattr(dc, "versions", lambda: {**real(), "keras": None})
    with pytest.raises(dc.CheckError, match=r"missing here: keras — carry the wheels: .*--fetch-wheels"):
        dc.preflight("cpu")


def test_gpu_mode_without_a_gpu_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(dc, "gpus", lambda: [])
    with pytest.raises(dc.CheckError, match="no CUDA GPU visible here"):
        dc.preflight("gpu")


def test_failures_timeouts_and_a_spent_budget_become_rows(tmp_path):
    """``execute`` on stand-in steps (no framework): a failing cell, a ceiling past its cap (its child
    process group is stopped), a ceiling with one model's figures, and steps past the budget."""
    import argparse
    import time

    py = sys.executable
    bench = json.dumps({"results": [{"framework": "keras_jax", "model": "small_cnn", "adapter_img_s_median": 10.0,
                                     "bare_img_s_median": 11.0, "ratio_median": 0.9}], "null_model": []})
    steps = [
        {"framework": "pytorch", "check": "cell", "cap": 60, "run_dir": str(tmp_path / "cell"),
         "argv": [py, "-c", "print('boom'); raise SystemExit(1)"]},
        {"framework": "pytorch", "check": "ceiling", "cap": 1, "json": str(tmp_path / "a.json"),
         "argv": [py, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])"]},
        {"framework": "keras_jax", "check": "ceiling", "cap": 60, "json": str(tmp_path / "b.json"),
         "argv": [py, "-c", f"open({str(tmp_path / 'b.json')!r}, 'w').write({bench!r}); raise SystemExit(1)"]},
    ]
    args = argparse.Namespace(device="cpu")
    t0 = time.monotonic()
    with open(tmp_path / "log", "w") as log:
        rows = {(r["framework"], r["check"]): r for r in dc.execute(steps, args, tmp_path, log, time.monotonic() + 120)}
        assert time.monotonic() - t0 < 30, "the timed-out step's child was not stopped with it"
        late = dc.execute(steps[:1], args, tmp_path, log, time.monotonic() + 5)
    assert rows[("pytorch", "cell")]["status"] == "failed" and "boom" in rows[("pytorch", "cell")]["output_tail"]
    assert {rows[("pytorch", f"ceiling:{m}")]["status"] for m in dc.MODELS} == {"timeout"}
    small, capstone = rows[("keras_jax", "ceiling:small_cnn")], rows[("keras_jax", "ceiling:capstone_cnn")]
    assert small["status"] == "failed" and small["figures"]["ratio_median"] == 0.9  # exit 1: not a pass
    assert capstone["status"] == "failed" and "figures" not in capstone
    assert [r["status"] for r in late] == ["not_run"]
    assert dc.summarise(list(rows.values()))["ok"] is False


# ---------------------------------------------------------------- what the check imports
def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def third_party_imports(entries: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """Top-level third-party modules imported by ``entries`` and every module of ours they reach
    (at any depth: function-level imports too) → the files that import them."""
    support = {p.stem for p in (root / "tests").glob("*.py")}  # tests' helpers, imported by name
    seen, todo, found = set(), list(entries), {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for _, module in imports_of(path, root):
            top = module.split(".")[0]
            if top in OURS:
                parts = module.split(".")
                todo += [f for k in range(1, len(parts) + 1) if (f := _module_file(".".join(parts[:k]), root))]
            elif top in support:
                todo.append(root / "tests" / f"{top}.py")
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(str(path.relative_to(root)))
    return found


def entries_of(steps: list[dict], root: Path = ROOT) -> list[Path]:
    """The files the plan's commands run, plus what they load by name: adapters, Keras backends, conf targets."""
    from frameworks.keras_backends import BACKEND_OF

    files = [root / "benchmarks" / "device_check.py"]
    for step in steps:
        argv = step["argv"][1:]
        if argv[:2] == ["-m", "pytest"]:
            files += [root / a for a in argv if a.endswith(".py")] + [root / "tests" / "conftest.py"]
        elif argv[0] == "-m":
            files.append(_module_file(argv[1] + ".__main__", root) or _module_file(argv[1], root))
        else:
            files.append(root / argv[0])
        fw = step["framework"]
        files.append(root / FRAMEWORKS[fw].adapter_file)
        if fw in BACKEND_OF:
            files.append(root / "frameworks" / "keras_backends" / f"{BACKEND_OF[fw]}.py")
    targets = {m.group(1) for p in (root / "conf").rglob("*.yaml") for m in re.finditer(r"_target_:\s*([\w.]+)", p.read_text())}
    files += [f for t in targets if (f := _module_file(t.rsplit(".", 1)[0], root))]
    return sorted(set(files))


@functools.lru_cache(maxsize=None)
def _module_dists() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # a scan of every installed distribution: once


def _dists(module: str) -> set[str]:
    return {dc.normalise(d) for d in _module_dists().get(module, [])}


def test_every_package_the_check_imports_is_on_the_device_or_carried(tmp_path):
    allowed = {dc.normalise(d) for d in (*dc.DEVICE_IMAGE, *dc.CARRIED)}
    on_device = {fw for fw in REAL_FRAMEWORKS if all(_dists(m) and _dists(m) <= allowed for m in FRAMEWORKS[fw].imports)}
    assert on_device == EXPECTED_ON_DEVICE
    # Modules only a framework that is skipped there imports (TensorFlow: keras' backend, the bare TF loop).
    skipped_modules = {m for fw in set(REAL_FRAMEWORKS) - on_device for m in FRAMEWORKS[fw].imports
                       if not _dists(m) <= allowed}
    # The cells run with deploy=off there: the deployment formats' exporters and runtimes are not imported.
    assert all("deploy=off" in step["argv"] for step in dc.plan("gpu", "full", ["pytorch"], tmp_path)
               if step["check"] == "cell")
    skipped_modules |= DEPLOY_MODULES
    steps = dc.plan("gpu", "full", sorted(on_device), tmp_path)
    found = third_party_imports(entries_of(steps))
    assert {"torch", "jax", "keras", "hydra", "omegaconf", "pyarrow", "pytest"} <= set(found)  # it does look
    unknown = {m: sorted(where) for m, where in found.items()
               if m not in skipped_modules and not (_dists(m) and _dists(m) <= allowed)}
    assert unknown == {}, f"imported, but neither in the device image list nor carried: {unknown}"
    assert "ray" not in found and not set(found) & {"tensorflow"} - skipped_modules


def test_a_planted_import_is_found(tmp_path):
    for name in OURS:
        (tmp_path / name).mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "deep.py").write_text("def f():\n    import ray\n")
    (tmp_path / "entry.py").write_text("from core.deep import f\nimport numpy\n")
    assert set(third_party_imports([tmp_path / "entry.py"], tmp_path)) == {"ray", "numpy"}


def test_the_carried_wheels_need_nothing_else():
    """Each carried distribution at uv.lock's version (installed here too) asks only for packages of the
    image or other carried ones — read from the same METADATA the wheel carries."""
    locked = dc.locked_versions(dc.CARRIED)
    allowed = {dc.normalise(d) for d in (*dc.DEVICE_IMAGE, *dc.CARRIED)}
    for dist in dc.CARRIED:
        assert importlib.metadata.version(dist) == locked[dist], f"{dist}: installed here ≠ uv.lock"
        unmet = set(dc.needs(importlib.metadata.requires(dist) or [])) - allowed
        assert not unmet, f"{dist} needs {sorted(unmet)}"
    assert set(dc.SDIST_ONLY) <= set(dc.CARRIED)


def test_the_readme_documents_the_gpu_check():
    readme = (ROOT / "README.md").read_text()
    assert "### GPU check" in readme
    for text in ("python benchmarks/device_check.py --fetch-wheels", "bash benchmarks/device_check.sh",
                 "--device cpu --quick", "device_check.json"):
        assert text in readme, text
    assert ast.get_docstring(ast.parse(SCRIPT.read_text()))
