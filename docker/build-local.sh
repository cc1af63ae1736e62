#!/usr/bin/env bash
# Build docker/Dockerfile's `cpu` target and run it, on a machine WITHOUT a Docker daemon and
# WITHOUT access to an image registry (CI, this project's build machine). Uses buildah (build,
# chroot isolation) and podman (run, runc runtime); both are Debian packages.
#
#   docker/build-local.sh [--target cpu|gpu] [--no-run] [--tag NAME] [--keep-output DIR]
#
# 1. Stand-in base images, made once and kept in the containers store (root: /var/lib/containers):
#    the Dockerfile's FROM images cannot be pulled here, so images with their EXACT names are made
#    locally -- the python image from Debian bookworm (debootstrap; Python 3.11 like the real
#    python:3.11.x-slim image, with /usr/local/bin/python3 links as in the official layout), the
#    uv image from the `uv` wheel on PyPI (its /uv and /uvx binaries, at the Dockerfile's
#    UV_VERSION). Stand-ins carry the label org.kvp-bench.standin; a real image already in the
#    store under that name is used as it is and never replaced. The host's locally added CA
#    certificates (/usr/local/share/ca-certificates: a TLS-intercepting proxy's CA) are installed in
#    the stand-in python base and SSL_CERT_FILE is set there -- never in the Dockerfile.
# 2. `buildah bud --isolation chroot --network host --layers` of the UNMODIFIED docker/Dockerfile
#    (the `uv sync` cache mount persists between builds, layers are reused while inputs match).
# 3. Smoke run (cpu target): `python -m runner data=synthetic train=tiny` as the image's own user
#    (UID 1000), outputs on a mounted host folder; checks the exit code, that runs.parquet was
#    written there by UID 1000 and that every row in it is ok (read back inside the image).
#    tests/test_docker.py (marker `container`) runs this script and checks the rows on the host.
# --target gpu builds (never runs) only where the real CUDA base image is already in the store:
#    it gets no stand-in (its CUDA/cuDNN is the point; its builder downloads Python from GitHub).
#
# Needs root (chroot builds, the containers store), buildah, podman, runc, debootstrap, a python3
# with pip on PATH or uvx (to fetch the uv wheel), and ~40 GB free disk (KVP_MIN_FREE_GB). Exit status: 0 =
# built (and ran and checked), non-zero with one `error: ...` line otherwise. Timings go to
# stdout as `timing: ...` lines.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/docker/Dockerfile"
TARGET=cpu
RUN=1
TAG=""
KEEP_OUTPUT=""
STANDIN_RECIPE=1          # bump when the stand-in recipe changes: stale stand-ins are rebuilt
DEBIAN_SUITE=bookworm     # Python 3.11 (trixie has 3.13, outside requires-python)
DEBIAN_MIRROR="${KVP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA_DIR=/usr/local/share/ca-certificates

die() { echo "error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --target) TARGET="${2:?}"; shift 2 ;;
        --no-run) RUN=0; shift ;;
        --tag) TAG="${2:?}"; shift 2 ;;
        --keep-output) KEEP_OUTPUT="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$TARGET" in cpu|gpu) ;; *) die "--target must be cpu or gpu, not '$TARGET'" ;; esac
TAG="${TAG:-localhost/kvp-bench:$TARGET}"

[ "$(id -u)" = 0 ] || die "run as root (buildah chroot builds and the root containers store)"
for tool in buildah podman runc debootstrap python3; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "'$tool' not found; install: apt-get install -y buildah podman runc debootstrap python3-pip"
done

# A build of a changed lock writes ~35 GB (new layers + buildah's temporary copies in /var/tmp)
# before the previous build cache can be pruned.
MIN_FREE_GB="${KVP_MIN_FREE_GB:-40}"
mkdir -p /var/lib/containers
FREE_GB="$(df --output=avail -BG /var/lib/containers | tail -n1 | tr -dc 0-9)"
[ "$FREE_GB" -ge "$MIN_FREE_GB" ] || die "only ${FREE_GB} GB free under /var/lib/containers, the build needs ~${MIN_FREE_GB} GB \
(free space: podman image prune -a; rm -rf /var/tmp/buildah-cache; or set KVP_MIN_FREE_GB)"

# The Dockerfile's global ARG defaults: the names its FROM lines resolve to.
arg() { sed -n "s/^ARG $1=\(.*\)$/\1/p" "$DOCKERFILE" | head -n1 | tr -d '"'; }
UV_VERSION="$(arg UV_VERSION)"
PYTHON_IMAGE="$(arg PYTHON_IMAGE)"
CUDA_IMAGE="$(arg CUDA_IMAGE)"
[ -n "$UV_VERSION" ] && [ -n "$PYTHON_IMAGE" ] && [ -n "$CUDA_IMAGE" ] \
    || die "$DOCKERFILE: ARG UV_VERSION / PYTHON_IMAGE / CUDA_IMAGE defaults not found"
# Short names as Docker resolves them (docker.io/library/NAME).
qualify() {
    local first="${1%%/*}"
    if [ "$first" != "$1" ] && { [[ "$first" == *.* || "$first" == *:* ]] || [ "$first" = localhost ]; }; then
        echo "$1"
    elif [[ "$1" == */* ]]; then echo "docker.io/$1"
    else echo "docker.io/library/$1"; fi
}
PYTHON_REF="$(qualify "$PYTHON_IMAGE")"
UV_REF="ghcr.io/astral-sh/uv:$UV_VERSION"
CUDA_REF="$(qualify "$CUDA_IMAGE")"

if [ "$TARGET" = gpu ] && ! podman image exists "$CUDA_REF"; then
    # No stand-in for this one: the gpu image's point is CUDA/cuDNN and NVIDIA's runtime hooks
    # from this base, and its builder stage downloads uv's managed CPython from github.com.
    die "the gpu target needs $CUDA_REF in the containers store (podman pull/load it); it has no stand-in"
fi

# The proxy CA fingerprint is part of a stand-in's identity: new host CAs -> new stand-in.
ca_files() { find "$HOST_CA_DIR" -type f -name '*.crt' 2>/dev/null | sort; }
CA_SUM="$( { ca_files | xargs -r cat; echo "recipe=$STANDIN_RECIPE"; } | sha256sum | cut -c1-16)"

WORK="$(mktemp -d /var/tmp/kvp-build-local.XXXXXX)"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# 0 = use the image in the store; 1 = (re)make the stand-in.
need_standin() {
    local ref="$1" want="$2" have
    podman image exists "$ref" || return 0
    have="$(podman image inspect --format '{{ index .Labels "org.kvp-bench.standin" }}' "$ref" 2>/dev/null || true)"
    case "$have" in
        ""|"<no value>") echo "using $ref from the store (not a stand-in)"; return 1 ;;
        "$want") echo "using cached stand-in $ref"; return 1 ;;
        *) echo "stand-in $ref is stale ($have != $want): remaking it"; return 0 ;;
    esac
}

# A debootstrapped root file system with the host's CAs, imported under $ref; $5: setup script.
make_os_standin() {
    local ref="$1" suite="$2" mirror="$3" include="$4" rootfs="$WORK/rootfs-$2"
    echo "making stand-in $ref: debootstrap $suite from $mirror"
    debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" \
        >"$WORK/debootstrap-$suite.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap-$suite.log" >&2; die "debootstrap $suite failed (log above)"; }
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    ca_files | while read -r crt; do cp "$crt" "$rootfs/usr/local/share/ca-certificates/"; done
    chroot "$rootfs" update-ca-certificates >/dev/null
    echo "$5" | chroot "$rootfs" /bin/sh -e
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change "LABEL org.kvp-bench.standin=$CA_SUM" \
        --change "LABEL org.kvp-bench.standin.base=$suite" \
        --change 'CMD ["/bin/bash"]' \
        - "$ref" >/dev/null
    rm -rf "$rootfs"
}

t_standins="$(now)"
if need_standin "$PYTHON_REF" "$CA_SUM"; then
    # The official python image has its interpreter in /usr/local/bin; Debian's is in /usr/bin.
    make_os_standin "$PYTHON_REF" "$DEBIAN_SUITE" "$DEBIAN_MIRROR" \
        python3,python3-venv,python3-pip,ca-certificates \
        'for n in python3 python python3.11; do ln -sf /usr/bin/python3.11 /usr/local/bin/$n; done
         ln -sf /usr/bin/pip3 /usr/local/bin/pip3; ln -sf /usr/bin/pip3 /usr/local/bin/pip'
fi
if need_standin "$UV_REF" "$CA_SUM"; then
    echo "making stand-in $UV_REF: /uv and /uvx from the uv $UV_VERSION wheel (PyPI)"
    # The first python3 on PATH that has pip: under `uv run` that is the project's venv, which has none.
    PIP=()
    for py in $(type -ap python3) /usr/bin/python3 /usr/local/bin/python3; do
        if "$py" -m pip --version >/dev/null 2>&1; then PIP=("$py" -m pip); break; fi
    done
    if [ "${#PIP[@]}" = 0 ] && command -v uvx >/dev/null 2>&1; then PIP=(uvx --from pip pip); fi
    [ "${#PIP[@]}" != 0 ] || die "no python3 with pip on PATH (and no uvx) to fetch the uv $UV_VERSION wheel; install: apt-get install -y python3-pip"
    "${PIP[@]}" download --no-deps --only-binary=:all: --dest "$WORK/uv-wheel" "uv==$UV_VERSION" \
        >"$WORK/pip.log" 2>&1 \
        || { tail -n 20 "$WORK/pip.log" >&2; die "could not download the uv $UV_VERSION wheel from PyPI (log above)"; }
    mkdir -p "$WORK/uv-root"
    python3 - "$WORK/uv-wheel" "$WORK/uv-root" <<'EOF'
import os, sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("uv-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    for name in ("uv", "uvx"):
        member = next(m for m in zf.namelist() if m.endswith(f".data/scripts/{name}"))
        target = Path(sys.argv[2]) / name
        target.write_bytes(zf.read(member))
        os.chmod(target, 0o755)
EOF
    "$WORK/uv-root/uv" --version | grep -q " $UV_VERSION" || die "the uv wheel is not uv $UV_VERSION"
    tar -C "$WORK/uv-root" -c . | podman import \
        --change "LABEL org.kvp-bench.standin=$CA_SUM" --change 'CMD ["/uv"]' - "$UV_REF" >/dev/null
fi
echo "timing: stand-ins ${DEBIAN_SUITE} $(since "$t_standins") s"

# ---------------------------------------------------------------------------------------- build
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n1)"
GIT_SHA="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$GIT_SHA" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    GIT_SHA="$GIT_SHA-dirty"
fi
# The previous image goes first (its ~9 GB /app layer is rebuilt whenever anything the image copies
# changed; the builder stage stays tagged as the cache): it keeps the build's peak disk use lower.
if podman image exists "$TAG"; then
    podman rmi "$TAG" >/dev/null && podman image prune -f >/dev/null \
        || echo "warning: could not remove the previous $TAG before building"
fi
t_build="$(now)"
echo "building $TAG (target $TARGET) from docker/Dockerfile"
buildah bud --isolation chroot --network host --layers --pull=never \
    -f "$DOCKERFILE" --target "$TARGET" \
    --build-arg VERSION="$VERSION" --build-arg GIT_SHA="$GIT_SHA" \
    -t "$TAG" "$ROOT" \
    || die "buildah bud of target $TARGET failed (output above)"
echo "timing: build $(since "$t_build") s"
# Keep the builder stage tagged (its 8+ GB dependency layer is the cache of the next build; a
# rebuild with every layer cached takes seconds), then drop images nothing refers to any more
# (the previous build's layers: each build of a changed tree leaves ~10 GB behind otherwise).
buildah bud --isolation chroot --network host --layers --pull=never --quiet \
    -f "$DOCKERFILE" --target "build-$TARGET" \
    --build-arg VERSION="$VERSION" --build-arg GIT_SHA="$GIT_SHA" \
    -t "$TAG-buildcache" "$ROOT" >/dev/null \
    || die "tagging the build-$TARGET stage failed"
podman image prune -f >/dev/null || echo "warning: podman image prune failed; old layers stay on disk"
SIZE="$(podman image inspect --format '{{.Size}}' "$TAG")"
echo "image: $TAG $(python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e9:.2f} GB')" "$SIZE") ($SIZE bytes)"
USER_OF="$(podman image inspect --format '{{.Config.User}}' "$TAG")"
[ "$USER_OF" = "1000:1000" ] || die "image $TAG runs as '$USER_OF', not 1000:1000"

if [ "$RUN" = 0 ] || [ "$TARGET" = gpu ]; then
    [ "$TARGET" = gpu ] && echo "not running the gpu image: it needs an NVIDIA GPU and the real CUDA base"
    exit 0
fi

# ------------------------------------------------------------------------------------ smoke run
OUT="${KEEP_OUTPUT:-$WORK/outputs}"
mkdir -p "$OUT"
[ -z "$(ls -A "$OUT")" ] || die "output folder $OUT is not empty"
chown 1000:1000 "$OUT"
t_run="$(now)"
echo "running: python -m runner data=synthetic train=tiny (as UID 1000, outputs -> $OUT)"
set +e
# runc, not crun (crun rejects this host's hybrid cgroups); explicit rlimits (root here lacks
# CAP_SYS_RESOURCE, so podman's defaults fail with setrlimit EPERM); /dev/shm for Ray's store.
# --network none: the run needs no network (the image is offline-ready), and a Ray head sharing the
# host's network namespace cannot start while another Ray runs on the host (measured: the driver dies
# in ray.init with "Failed to register worker to Raylet ... End of file"; with its own namespace it runs).
podman --runtime runc run --rm --network none \
    --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --shm-size=2g \
    -v "$OUT:/app/outputs:z" "$TAG" data=synthetic train=tiny
rc=$?
set -e
echo "timing: run $(since "$t_run") s"
[ "$rc" = 0 ] || die "python -m runner in $TAG exited with $rc"

# The check: a runs.parquet under the mounted folder, written by UID 1000, one ok row per cell.
# The sweep's table: outputs/<date>/<time>/runs.parquet (fragments/<cell>/ hold per-cell parts).
PARQUET="$(find "$OUT" -mindepth 3 -maxdepth 3 -name runs.parquet | head -n1)"
[ -n "$PARQUET" ] || die "no <date>/<time>/runs.parquet under the mounted output folder $OUT"
[ "$(stat -c %u "$PARQUET")" = 1000 ] || die "$PARQUET is owned by UID $(stat -c %u "$PARQUET"), not 1000"
REL="${PARQUET#"$OUT"/}"
echo "files written:"; (cd "$OUT" && find . -type f | sort | sed 's/^/  /')
podman --runtime runc run --rm -i --network none --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
    -v "$OUT:/app/outputs:ro,z" --entrypoint python "$TAG" - "/app/outputs/$REL" <<'EOF'
import sys
import pandas as pd
rows = pd.read_parquet(sys.argv[1])
cols = [c for c in ("framework", "seed", "status", "accuracy", "git_sha") if c in rows.columns]
print(rows[cols].to_string(index=False))
assert len(rows) > 0, "runs.parquet has no rows"
assert "status" in rows.columns, "runs.parquet has no status column"
bad = rows[rows["status"] != "ok"]
assert bad.empty, f"{len(bad)} cell(s) not ok:\n{bad.to_string()}"
print(f"runs.parquet: {len(rows)} ok rows")
EOF
echo "ok: $TAG built and ran python -m runner data=synthetic train=tiny; results in ${KEEP_OUTPUT:-a temporary folder}"
