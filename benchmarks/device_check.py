"""GPU check in one command: the ``gpu`` tests, the ceiling benchmark on both models and one
``python -m runner.cell`` per framework, on a machine with a CUDA GPU, written to ONE JSON summary.

Meant for a lent GPU machine whose image has PyTorch, JAX (CUDA), torchvision, pandas, pyarrow,
scikit-learn, pytest … but no TensorFlow, Ray or Hydra (``DEVICE_IMAGE``); the rest travels as
wheels (``CARRIED``: keras, hydra-core, omegaconf, antlr4 built as a wheel, namex, optree), which
``--fetch-wheels`` downloads/builds into ``.whl/`` here and ``benchmarks/device_check.sh`` installs
there before it runs this script. Each framework of ``core.registry`` whose modules are importable
is checked; the others (``keras`` on TensorFlow, on that image) get ``skipped`` rows with the reason.

Per framework, in this order, each step in its own process, under one time budget:

- ``gpu_tests``: ``pytest -m gpu tests/test_frameworks_gpu.py`` (that framework's items);
- ``cell``: ``python -m runner.cell framework=F seed=0 device=gpu data=eurosat_mini train.epochs=3 deploy=off``
  (deployment needs ONNX wheels the device image lacks; the cell's own path — tuning, timed training, the
  fresh-process memory probe — is what the check covers)
  (3 epochs: the median excludes the warm-up epoch);
- ``ceiling:<model>``: ``benchmarks/bench_ceiling.py --frameworks F --models small_cnn capstone_cnn
  --device gpu`` (adapter vs bare loop), one row per model.

    bash benchmarks/device_check.sh                          # on the GPU machine: JSON in $OUT
    uv run python benchmarks/device_check.py --fetch-wheels  # here, first: the wheels into .whl/
    bash benchmarks/device_check.sh --device cpu --quick     # a dry run on CPU (tiny settings)
    uv run python benchmarks/device_check.py --dry-run       # the plan only; runs nothing

Exit 0: no step failed (skips are fine); 1: a step failed or ran out of time; 2: this machine
cannot run the check (a package missing, no GPU for ``--device gpu``) — one line says why.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.registry import FRAMEWORKS, REAL_FRAMEWORKS  # noqa: E402  (framework-free)
from frameworks.knobs import cpu_name  # noqa: E402  (numpy only)

#: Distributions the check relies on that the lent GPU machines' image ('cuda') already holds (its
#: package list, read 2026-11-17: PyTorch, JAX with the CUDA plugin, … and what the carried wheels need).
DEVICE_IMAGE = (
    "torch", "torchvision", "jax", "jaxlib", "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "pillow",
    "pytest", "pyyaml", "rich", "absl-py", "h5py", "ml-dtypes", "packaging", "typing-extensions",
)
#: Carried as wheels (``.whl/``), at uv.lock's versions; their needs are in DEVICE_IMAGE or here.
CARRIED = ("keras", "namex", "optree", "hydra-core", "omegaconf", "antlr4-python3-runtime")
SDIST_ONLY = ("antlr4-python3-runtime",)  # no wheel on PyPI: built here (pure Python, py3-none-any)
MODELS = ("small_cnn", "capstone_cnn")
CHECKS = ("gpu_tests", "cell", *(f"ceiling:{m}" for m in MODELS))
GPU_TESTS = "tests/test_frameworks_gpu.py"
WHEEL_DIR = ROOT / ".whl"
WHEEL_PYTHON = "3.12"
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                   "manylinux1_x86_64")
TREE_LIMIT_MIB = 64  # what the device tool carries: the working tree + .whl/

#: (budget seconds, per-step caps) and the workload, per mode. ``quick``: tiny settings for a CPU dry run.
SETTINGS = {
    "full": {"budget": 450, "caps": {"gpu_tests": 150, "cell": 120, "ceiling": 150},
             "cell": ["data=eurosat_mini", "train.epochs=3", "deploy=off"],
             "ceiling": ["--samples", "8192", "--batch-size", "256", "--repeats", "5", "--null-samples", "32768"]},
    "quick": {"budget": 1500, "caps": {"gpu_tests": 300, "cell": 300, "ceiling": 400},
              "cell": ["data=synthetic", "train=tiny", "train.epochs=2", "deploy=off"],
              "ceiling": ["--samples", "32", "--batch-size", "16", "--repeats", "1", "--null-samples", "64",
                          "--image-size", "64"]},
}
CELL_FIGURES = ("status", "device_name", "framework_version", "accuracy", "first_epoch_seconds", "median_epoch_seconds",
                "images_per_second", "throughput_images_per_second", "latency_p50_ms", "import_seconds",
                "time_to_first_step_seconds", "peak_device_memory_mib", "peak_host_rss_mib", "execution_mode",
                "pipeline", "error")
CEILING_FIGURES = ("device", "device_name", "pipeline", "mode", "adapter_img_s_median", "bare_img_s_median",
                   "ratio_median", "ratio_best", "import_s", "knobs")


class CheckError(Exception):
    """This machine cannot run the check: one line for the person at the terminal (exit 2)."""


# ----------------------------------------------------------------------------------- the plan
def framework_status() -> dict[str, dict]:
    """Every real framework of the registry: available here, or the modules it lacks."""
    out = {}
    for name in REAL_FRAMEWORKS:
        missing = [m for m in FRAMEWORKS[name].imports if importlib.util.find_spec(m) is None]
        out[name] = {"available": not missing, "backend": FRAMEWORKS[name].backend}
        if missing:
            out[name]["reason"] = f"not installed here: {', '.join(missing)} (so no {FRAMEWORKS[name].label} on this machine)"
    return out


def plan(device: str, mode: str, frameworks: list[str], scratch: Path) -> list[dict]:
    """The steps in run order: ``{framework, check, argv, cap}`` (``ceiling`` steps cover every model)."""
    s = SETTINGS[mode]
    py = sys.executable
    steps = []
    for fw in frameworks:
        steps.append({"framework": fw, "check": "gpu_tests", "cap": s["caps"]["gpu_tests"],
                      "argv": [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", GPU_TESTS]})
    for fw in frameworks:
        steps.append({"framework": fw, "check": "cell", "cap": s["caps"]["cell"], "run_dir": str(scratch / f"cell-{fw}"),
                      "argv": [py, "-m", "runner.cell", f"framework={fw}", "seed=0", f"device={device}", *s["cell"],
                               f"hydra.run.dir={scratch / f'cell-{fw}'}"]})
    for fw in frameworks:
        out = scratch / f"ceiling-{fw}.json"
        steps.append({"framework": fw, "check": "ceiling", "cap": s["caps"]["ceiling"], "json": str(out),
                      "argv": [py, "benchmarks/bench_ceiling.py", "--frameworks", fw, "--models", *MODELS,
                               "--device", device, *s["ceiling"], "--json", str(out)]})
    return steps


# ------------------------------------------------------------------------------ the machine
def versions() -> dict[str, str | None]:
    out = {}
    for dist in (*DEVICE_IMAGE, *CARRIED):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    for dist in importlib.metadata.distributions():  # the JAX CUDA plugin, named by CUDA major version
        name = dist.metadata["Name"] or ""
        if name.lower().startswith(("jax-cuda", "jax_cuda", "nvidia-cudnn")):
            out[name.lower()] = dist.version
    return out


def gpus() -> list[dict]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(", ") for line in text.strip().splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory_mib": int(r[2]) if r[2].isdigit() else r[2]} for r in rows if len(r) == 3]


def preflight(device: str) -> None:
    missing = [d for d, v in versions().items() if v is None and d in (*DEVICE_IMAGE, *CARRIED)]
    if missing:
        carried = [d for d in missing if d in CARRIED]
        raise CheckError(f"missing here: {', '.join(missing)}"
                         + (" — carry the wheels: `python benchmarks/device_check.py --fetch-wheels` here, then "
                            "`bash benchmarks/device_check.sh` there (it installs .whl/*.whl)" if carried else
                            " — the device image should have these"))
    if device == "gpu" and not gpus():
        raise CheckError("no CUDA GPU visible here (nvidia-smi finds none): on a CPU, run the dry run "
                         "`bash benchmarks/device_check.sh --device cpu --quick`")


# -------------------------------------------------------------------------------- the steps
def run_step(step: dict, env: dict, log, timeout: float) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, the output, seconds); the output also goes to ``log``."""
    log.write(f"\n===== {step['framework']} {step['check']}: {' '.join(step['argv'])}\n")
    log.flush()
    t0 = time.perf_counter()
    # Its own process group: on a timeout the step's children (the probe and benchmark workers that
    # hold the GPU) are stopped with it.
    proc = subprocess.Popen(step["argv"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    seconds = time.perf_counter() - t0
    log.write(out + f"\n===== exit {code} after {seconds:.1f} s\n")
    log.flush()
    return code, out, seconds


def tail(out: str, lines: int = 15) -> str:
    return "\n".join(out.strip().splitlines()[-lines:])


def gpu_test_ids(env: dict, log) -> dict[str, list[str]]:
    """The gpu tests' node ids per framework (the test parameter in brackets)."""
    step = {"framework": "*", "check": "collect",
            "argv": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "-m", "gpu", GPU_TESTS]}
    code, out, _ = run_step(step, env, log, 120)
    ids: dict[str, list[str]] = {}
    if code != 0:
        log.write(f"pytest could not collect {GPU_TESTS} (exit {code})\n")
        return ids
    for node in re.findall(rf"^({re.escape(GPU_TESTS)}::\S+\[(\w+)\])$", out, re.M):
        ids.setdefault(node[1], []).append(node[0])
    return ids


def read_junit(path: Path) -> dict:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    notes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            counts["failed"] += 1
            notes.append(f"{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:300] if bad.get('message') else 'failed'}")
        elif skip is not None:
            counts["skipped"] += 1
            notes.append(f"{case.get('name')}: skipped: {skip.get('message', '')[:300]}")
        else:
            counts["passed"] += 1
    return {**counts, "notes": notes}


def cell_row(run_dir: Path) -> dict:
    import pyarrow.parquet as pq

    rows = pq.read_table(run_dir / "runs.parquet").to_pylist()
    return {k: rows[0][k] for k in CELL_FIGURES if k in rows[0]}


def execute(steps: list[dict], args, scratch: Path, log, deadline: float) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "KVP_CACHE_DIR": str(scratch / "dataset-cache"), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    ids = gpu_test_ids(env, log) if any(s["check"] == "gpu_tests" for s in steps) else {}
    table = []
    for step in steps:
        fw, check = step["framework"], step["check"]
        names = [f"ceiling:{m}" for m in MODELS] if check == "ceiling" else [check]
        left = deadline - time.monotonic()
        if left < 10:
            table += [{"framework": fw, "check": n, "status": "not_run", "reason": "the time budget was spent"} for n in names]
            continue
        argv = list(step["argv"])
        if check == "gpu_tests":
            if not ids.get(fw):
                table.append({"framework": fw, "check": check, "status": "failed",
                              "reason": f"pytest collected no gpu test of {fw} (device_check.log has its output)"})
                continue
            junit = scratch / f"junit-{fw}.xml"
            argv = argv[:-1] + [f"--junitxml={junit}", *ids[fw]]
        code, out, seconds = run_step({**step, "argv": argv}, env, log, min(step["cap"], left))
        base = {"framework": fw, "seconds": round(seconds, 1)}
        if code is None:
            table += [{**base, "check": n, "status": "timeout", "reason": f"stopped after {seconds:.0f} s",
                       "output_tail": tail(out)} for n in names]
            continue
        if check == "gpu_tests":
            figures = read_junit(junit) if junit.is_file() else {}
            status = ("failed" if code != 0 or figures.get("failed") else
                      "skipped" if figures.get("skipped") and not figures.get("passed") else "passed")
            row = {**base, "check": check, "status": status, "figures": figures}
            if status == "skipped":
                row["reason"] = figures["notes"][0].split(": skipped: ", 1)[-1]
                if args.device == "gpu":  # on a GPU machine a skip hides a fault
                    row.update(status="failed", reason=f"the gpu tests skipped on a machine with a GPU: {row['reason']}")
            if status == "failed":
                row["output_tail"] = tail(out)
            table.append(row)
        elif check == "cell":
            run_dir = Path(step["run_dir"])
            figures = cell_row(run_dir) if (run_dir / "runs.parquet").is_file() else {}
            status = {"ok": "passed", "skipped": "skipped"}.get(figures.get("status"), "failed")
            row = {**base, "check": check, "status": status, "figures": figures}
            if status == "skipped":
                row["reason"] = figures.get("error")
            if status == "failed":
                row["output_tail"] = tail(out)
            table.append(row)
        else:
            bench = json.loads(Path(step["json"]).read_text()) if Path(step["json"]).is_file() else {}
            results = {r.get("model"): r for r in bench.get("results", []) if r.get("framework") == fw}
            null = next((n for n in bench.get("null_model", []) if n.get("framework") == fw), None)
            for model in MODELS:
                r = results.get(model)
                row = {**base, "check": f"ceiling:{model}", "status": "passed" if r and code == 0 else "failed"}
                if r:
                    row["figures"] = {k: r[k] for k in CEILING_FIGURES if k in r}
                    if null:
                        row["figures"]["null_model_img_s_median"] = null.get("img_s_median")
                if row["status"] == "failed":
                    row["output_tail"] = tail(out)
                table.append(row)
    return table


# ------------------------------------------------------------------------------------ wheels
def locked_versions(names) -> dict[str, str]:
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    found = {p["name"]: p["version"] for p in lock["package"] if p["name"] in names}
    missing = sorted(set(names) - set(found))
    if missing:
        raise CheckError(f"uv.lock has no version of {', '.join(missing)}")
    return found


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``PyYAML`` = ``pyyaml``, ``hydra_core`` = ``hydra-core``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def needs(requires_dist: list[str]) -> list[str]:
    """The distributions these ``Requires-Dist`` lines ask for on the device (Python 3.12, Linux
    x86_64), extras left out."""
    from packaging.requirements import Requirement

    env = {"python_version": WHEEL_PYTHON, "python_full_version": f"{WHEEL_PYTHON}.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    out = []
    for line in requires_dist:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out.append(normalise(req.name))
    return out


def wheel_requirements(wheel: Path) -> list[str]:
    """What a wheel needs on the device (its METADATA's Requires-Dist)."""
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return needs([line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")])


def tree_bytes() -> int:
    """What travels besides .whl/: tracked files plus untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return sum((ROOT / p).stat().st_size for p in out.split("\0") if p and (ROOT / p).is_file())


def pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    if shutil.which("uvx"):
        return ["uvx", "pip"]
    raise CheckError("no pip here: install it (`uv pip install pip`) or put uv's `uvx` on the PATH")


def fetch_wheels(dest: Path = WHEEL_DIR) -> int:
    """Download (build, for SDIST_ONLY) the carried wheels at uv.lock's versions into ``dest``."""
    pinned = locked_versions(CARRIED)
    dest.mkdir(exist_ok=True)
    pip = pip_command()
    for wheel in dest.glob("*.whl"):  # one version of each: two stop the install there
        dist, version = wheel.name.split("-")[:2]
        if normalise(dist) not in CARRIED or pinned[normalise(dist)] != version:
            print(f"removing {wheel.name} (not a carried wheel at uv.lock's version)")
            wheel.unlink()
    for name, version in pinned.items():
        if any(normalise(w.name.split("-")[0]) == name for w in dest.glob("*.whl")):
            continue
        if name in SDIST_ONLY:
            cmd = [*pip, "wheel", "--no-deps", "--no-binary=:all:", "-w", str(dest), f"{name}=={version}"]
        else:
            cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", WHEEL_PYTHON,
                   "--implementation", "cp", *[f"--platform={p}" for p in WHEEL_PLATFORMS], "-d", str(dest),
                   f"{name}=={version}"]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    by_name = {normalise(w.name.split("-")[0]): w for w in wheels}
    if sorted(by_name) != sorted(CARRIED) or len(wheels) != len(CARRIED):
        raise CheckError(f"{dest} should hold one wheel each of {', '.join(CARRIED)}; it holds {[w.name for w in wheels]}")
    for name in SDIST_ONLY:
        if not by_name[name].name.endswith("-py3-none-any.whl"):
            raise CheckError(f"{by_name[name].name}: expected a pure-Python wheel (py3-none-any)")
    known = {normalise(d) for d in (*DEVICE_IMAGE, *CARRIED)}
    for name, wheel in by_name.items():
        unmet = [n for n in wheel_requirements(wheel) if n not in known]
        if unmet:
            raise CheckError(f"{wheel.name} needs {', '.join(unmet)}: neither in the device image list nor carried")
    wheel_mib = sum(w.stat().st_size for w in wheels) / 2**20
    tree_mib = tree_bytes() / 2**20
    print("\n".join(f"  {w.name}  {w.stat().st_size / 2**20:.2f} MiB" for w in wheels))
    print(f"wheels {wheel_mib:.1f} MiB + working tree {tree_mib:.1f} MiB = {wheel_mib + tree_mib:.1f} MiB "
          f"(the device tool carries at most {TREE_LIMIT_MIB} MiB)")
    if wheel_mib + tree_mib >= TREE_LIMIT_MIB:
        raise CheckError(f"over the {TREE_LIMIT_MIB} MiB the device tool carries")
    return 0


# -------------------------------------------------------------------------------------- main
def summarise(table: list[dict]) -> dict:
    counts = {s: sum(r["status"] == s for r in table) for s in ("passed", "failed", "timeout", "skipped", "not_run", "planned")}
    return {**counts, "ok": counts["failed"] == counts["timeout"] == counts["not_run"] == 0}


def _num(value, spec: str) -> str:
    return "n/a" if not isinstance(value, (int, float)) or value != value else f"{value:{spec}}"


def print_table(table: list[dict]) -> None:
    print(f"\n{'framework':<12} {'check':<21} {'status':<8} {'s':>6}  figures")
    for r in table:
        f = r.get("figures", {})
        if r["check"] == "gpu_tests":
            brief = f"{f.get('passed', 0)} passed, {f.get('failed', 0)} failed, {f.get('skipped', 0)} skipped" if f else ""
        elif r["check"] == "cell":
            brief = (f"accuracy {_num(f.get('accuracy'), '.3f')}, median epoch {_num(f.get('median_epoch_seconds'), '.2f')} s, "
                     f"{_num(f.get('images_per_second'), '.0f')} img/s on {f.get('device_name')}" if f else "")
        else:
            brief = (f"adapter {_num(f.get('adapter_img_s_median'), '.0f')} img/s, bare {_num(f.get('bare_img_s_median'), '.0f')}, "
                     f"ratio {_num(f.get('ratio_median'), '.3f')}" if f else "")
        reason = r.get("reason") or ""
        print(f"{r['framework']:<12} {r['check']:<21} {r['status']:<8} {r.get('seconds', 0):>6.1f}  "
              + (f"{brief} — {reason}" if brief and reason else brief or reason))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    p.add_argument("--quick", action="store_true", help="tiny settings (a CPU dry run of the whole flow)")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "device-check",
                   help="folder for device_check.json and device_check.log (device_check.sh: $OUT)")
    p.add_argument("--budget", type=float, help="seconds for all steps (default: 450 full, 1500 --quick)")
    p.add_argument("--frameworks", nargs="+", choices=REAL_FRAMEWORKS, default=list(REAL_FRAMEWORKS))
    p.add_argument("--dry-run", action="store_true", help="write the plan and the machine's facts; run nothing")
    p.add_argument("--fetch-wheels", action="store_true", help="HERE: the carried wheels into .whl/, then stop")
    args = p.parse_args(argv)
    try:
        if args.fetch_wheels:
            return fetch_wheels()
        return check(args)
    except CheckError as exc:
        print(f"device_check: {exc}", file=sys.stderr)
        return 2


def check(args) -> int:
    mode = "quick" if args.quick else "full"
    budget = args.budget or SETTINGS[mode]["budget"]
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    status = framework_status()
    chosen = [fw for fw in args.frameworks if status[fw]["available"]]
    if not args.dry_run:
        preflight(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kvp-device-check-") as tmp:
        scratch = Path(tmp)
        steps = plan(args.device, mode, chosen, scratch)
        skipped = [{"framework": fw, "check": c, "status": "skipped", "reason": status[fw].get("reason", "not selected")}
                   for fw in REAL_FRAMEWORKS if fw not in chosen for c in CHECKS]
        if args.dry_run:
            table = [{"framework": s["framework"], "check": c, "status": "planned", "argv": s["argv"][1:]} for s in steps
                     for c in ([f"ceiling:{m}" for m in MODELS] if s["check"] == "ceiling" else [s["check"]])] + skipped
        else:
            with open(args.out / "device_check.log", "w") as log:
                table = execute(steps, args, scratch, log, t0 + budget) + skipped
    summary = {
        "check": "kvp-bench device check", "format": 1, "argv": sys.argv[1:],
        "started_utc": started.isoformat(timespec="seconds"), "wall_seconds": round(time.monotonic() - t0, 1),
        "mode": {"device": args.device, "quick": args.quick, "dry_run": args.dry_run, "budget_seconds": budget},
        "machine": {"gpus": gpus(), "cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "git_sha": os.environ.get("KVP_GIT_SHA"),
        "versions": versions(), "frameworks": status,
        "table": table, "summary": summarise(table),
    }
    (args.out / "device_check.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print_table(table)
    print(f"\n{summary['summary']} in {summary['wall_seconds']} s → {args.out / 'device_check.json'}")
    return 0 if args.dry_run or summary["summary"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
