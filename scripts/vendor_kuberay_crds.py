"""Vendor the KubeRay CRDs' OpenAPI schemas that ``tests/test_kuberay_schema.py`` validates the
manifests of ``docker/kuberay/`` against.

For each CRD (RayCluster, RayJob) this reads ``ray-operator/config/crd/bases/ray.io_<plural>.yaml`` at
a KubeRay release tag — from a local clone (``--git``) or from raw.githubusercontent.com —, keeps
only ``spec.versions[name=v1].schema.openAPIV3Schema`` (the served storage version; ``v1alpha1`` and
the printer columns are dropped) and writes it, unchanged, as JSON beside a ``source`` record (tag,
commit, path, sha256 of the upstream file) to ``ray.io_<plural>.json`` in docker/kuberay/crds/.

    uv run python scripts/vendor_kuberay_crds.py --tag v1.5.1 --git /path/to/kuberay
    uv run python scripts/vendor_kuberay_crds.py --tag v1.5.1       # downloads the two files
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docker" / "kuberay" / "crds"
CRDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs"}
VERSION = "v1"
UPSTREAM = "ray-operator/config/crd/bases/ray.io_{plural}.yaml"
RAW_URL = "https://raw.githubusercontent.com/ray-project/kuberay/{tag}/{path}"


def upstream_text(tag: str, path: str, git: Path | None) -> tuple[bytes, str | None]:
    """The upstream file's bytes and (from a clone) the tag's commit."""
    if git is not None:
        def run(*args: str) -> bytes:
            return subprocess.run(["git", "-C", str(git), *args], check=True, capture_output=True).stdout
        return run("show", f"{tag}:{path}"), run("rev-list", "-n", "1", tag).decode().strip()
    with urllib.request.urlopen(RAW_URL.format(tag=tag, path=path), timeout=60) as response:
        return response.read(), None


def served_schema(crd: dict, kind: str) -> dict:
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind, crd["metadata"]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    if not (version["served"] and version["storage"]):
        raise SystemExit(f"{kind}: {VERSION} is not the served storage version")
    return version["schema"]["openAPIV3Schema"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", required=True, help="a KubeRay release tag, e.g. v1.5.1")
    p.add_argument("--git", type=Path, help="a local clone of github.com/ray-project/kuberay (else: download)")
    args = p.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for kind, plural in CRDS.items():
        path = UPSTREAM.format(plural=plural)
        raw, commit = upstream_text(args.tag, path, args.git)
        schema = served_schema(yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), kind)
        source = {"repository": "github.com/ray-project/kuberay", "tag": args.tag, "commit": commit, "path": path,
                  "sha256": hashlib.sha256(raw).hexdigest(), "kind": kind, "group": "ray.io", "version": VERSION,
                  "kept": f"spec.versions[name={VERSION}].schema.openAPIV3Schema, unchanged"}
        out = OUT_DIR / f"ray.io_{plural}.json"
        out.write_text(json.dumps({"source": source, "openAPIV3Schema": schema}, indent=1) + "\n")
        print(f"{out.relative_to(ROOT)}: {kind} {VERSION} from {args.tag} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
