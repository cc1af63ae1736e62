"""The KubeRay manifests (``docker/kuberay/*.yaml``) against the KubeRay CRDs' own OpenAPI schemas,
vendored in ``docker/kuberay/crds/`` (``scripts/vendor_kuberay_crds.py``; tag and source in its README),
the way the API server would take them with ``kubectl apply`` (strict field validation):

- a RayCluster / RayJob is validated against its CRD's ``openAPIV3Schema`` (served version ``v1``);
- a Pod's ``spec`` against the PodSpec and a PersistentVolumeClaim's ``spec`` against the
  PersistentVolumeClaimSpec embedded in that same schema (KubeRay embeds core/v1's, for pod
  templates and ephemeral volumes); every ``metadata`` against the pod template's ObjectMeta subset
  (name, namespace, labels, annotations, finalizers) plus the k8s name and label syntax.

The Kubernetes extensions, as a structural schema means them (jsonschema knows none of them):
an object schema without ``x-kubernetes-preserve-unknown-fields: true`` admits no field it does not
declare (the API server prunes it; ``kubectl apply`` refuses it); ``x-kubernetes-int-or-string``
admits an integer or a string; ``nullable`` admits null; ``x-kubernetes-list-type: map`` / ``set``
admit no two items with the same keys (defaults applied) / the same value; ``format: int32`` /
``int64`` are range-checked; ``x-kubernetes-embedded-resource`` admits apiVersion/kind/metadata; a
``x-kubernetes-validations`` (CEL) rule cannot be evaluated here, so a manifest that sets such a field
fails with that reason instead of passing unchecked. YAML duplicate keys fail as in kubectl.

Not covered (no cluster here): the operator's own Go validation beyond the token rule checked below,
admission webhooks, and the API server's defaulting.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from runner import PROJECT_ROOT

KUBERAY_DIR = PROJECT_ROOT / "docker" / "kuberay"
CRD_DIR = KUBERAY_DIR / "crds"
MIN_KUBERAY = (1, 5, 1)  # spec.authOptions: the first release with KubeRay-managed token auth
MIN_RAY_FOR_TOKEN = (2, 52, 0)  # ray-operator/controllers/ray/utils/validation.go (ValidateRayClusterSpec)
CRD_KINDS = {"RayCluster": "ray.io_rayclusters.json", "RayJob": "ray.io_rayjobs.json"}
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_KEY = rf"^({DNS1123_SUBDOMAIN[1:-1]}/)?{LABEL_NAME}$"
INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


# ------------------------------------------------------------------------- schemas, k8s semantics
def structural(node, *, root: bool = True):
    """A copy of a CRD schema in plain JSON-Schema terms (draft 4), per the rules in the docstring."""
    if isinstance(node, list):
        return [structural(item, root=False) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: (value if key in ("enum", "default", "required", "x-kubernetes-list-map-keys")
                 else {name: structural(s, root=False) for name, s in value.items()} if key == "properties"
                 else structural(value, root=False))
           for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    is_object = out.get("type") == "object" or "properties" in out
    if is_object and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # undeclared fields are unknown: pruned / refused
    if out.pop("nullable", False):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def _list_type(validator, list_type, instance, schema):
    if not validator.is_type(instance, "array") or list_type == "atomic":
        return
    if list_type == "set":
        keys = [json.dumps(item, sort_keys=True) for item in instance]
    else:  # map: the key fields, with their schema defaults (a port's protocol defaults to TCP)
        props = schema.get("items", {}).get("properties", {})
        names = schema.get("x-kubernetes-list-map-keys", [])
        keys = [json.dumps([item.get(k, props.get(k, {}).get("default")) for k in names]) for item in instance
                if isinstance(item, dict)]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        yield jsonschema.ValidationError(f"x-kubernetes-list-type {list_type}: duplicate item(s) {', '.join(duplicates)}")


def _cel(validator, rules, instance, schema):
    yield jsonschema.ValidationError(
        "a CEL rule (x-kubernetes-validations) guards this field and cannot be evaluated here: "
        + "; ".join(r.get("rule", "?") for r in rules))


FORMATS = jsonschema.FormatChecker()
for _name, (_lo, _hi) in INT_RANGES.items():
    FORMATS.checks(_name)(lambda value, lo=_lo, hi=_hi: not isinstance(value, int) or lo <= value <= hi)

K8sValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel})


def _object_meta(pod_template_meta: dict) -> dict:
    """ObjectMeta as a manifest may write it: the pod template's subset, names and labels checked."""
    meta = copy.deepcopy(pod_template_meta)
    meta["properties"]["name"].update(pattern=DNS1123_SUBDOMAIN, maxLength=253)
    meta["properties"]["labels"]["additionalProperties"].update(pattern=rf"^({LABEL_NAME})?$", maxLength=63)
    meta["properties"]["labels"]["patternProperties"] = {LABEL_KEY: {}}
    return meta


def _strict_yaml(text: str) -> list:
    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dup = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key(s) {dup}", node.start_mark)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return [doc for doc in yaml.load_all(text, Loader=Loader) if doc is not None]


class Schemas:
    """One validator per kind; every validator also checks names, labels and unknown metadata fields."""

    def __init__(self, crd_dir: Path = CRD_DIR):
        self.sources, raw = {}, {}
        for kind, name in CRD_KINDS.items():
            vendored = json.loads((crd_dir / name).read_text())
            self.sources[kind], raw[kind] = vendored["source"], vendored["openAPIV3Schema"]
        cluster = raw["RayCluster"]["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]["template"]
        pod_spec = cluster["properties"]["spec"]
        pvc_spec = (pod_spec["properties"]["volumes"]["items"]["properties"]["ephemeral"]["properties"]
                    ["volumeClaimTemplate"]["properties"]["spec"])
        meta = structural(_object_meta(cluster["properties"]["metadata"]))
        group = {kind: f"{s['group']}/{s['version']}" for kind, s in self.sources.items()}
        documents = {kind: copy.deepcopy(schema) for kind, schema in raw.items()}
        for kind in ("Pod", "PersistentVolumeClaim"):
            documents[kind] = {"type": "object", "required": ["spec"], "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                "spec": copy.deepcopy(pod_spec if kind == "Pod" else pvc_spec)}}
            group[kind] = "v1"
        self.api_version = group
        self.validators = {}
        for kind, schema in documents.items():
            schema = structural(schema)
            schema["properties"]["metadata"] = meta
            schema["properties"]["apiVersion"] = {"enum": [group[kind]]}
            schema["properties"]["kind"] = {"enum": [kind]}
            schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
            schema["properties"]["metadata"] = {**meta, "required": ["name"]}
            self.validators[kind] = K8sValidator(schema, format_checker=FORMATS)

    def errors(self, doc) -> list[str]:
        """Every schema violation of one manifest document, as ``kind/name: path: message``."""
        if not isinstance(doc, dict) or doc.get("kind") not in self.validators:
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            return [f"{kind}: no schema for this kind here (add one to tests/test_kuberay_schema.py)"]
        name = f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
        found = self.validators[doc["kind"]].iter_errors(doc)
        return sorted(f"{name}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found)


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas()


@pytest.fixture(scope="module")
def documents() -> dict[str, list[dict]]:
    return {path.name: _strict_yaml(path.read_text()) for path in sorted(KUBERAY_DIR.glob("*.yaml"))}


def _all(documents) -> list[dict]:
    return [doc for docs in documents.values() for doc in docs]


def _one(documents, kind: str) -> dict:
    (doc,) = [d for d in _all(documents) if d["kind"] == kind]
    return doc


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"v?(\d+)\.(\d+)\.(\d+)", text).groups())


# --------------------------------------------------------------------------------- the manifests
def test_the_vendored_schemas_are_from_a_release_with_token_auth(schemas):
    readme = (CRD_DIR / "README.md").read_text()
    for kind, source in schemas.sources.items():
        assert source["repository"] == "github.com/ray-project/kuberay" and source["version"] == "v1", kind
        assert _version(source["tag"]) >= MIN_KUBERAY, f"{kind}: {source['tag']} predates spec.authOptions"
        assert source["tag"] in readme and source["path"] in readme and source["sha256"] in readme, kind
    spec = schemas.validators["RayCluster"].schema["properties"]["spec"]["properties"]
    assert spec["authOptions"]["properties"]["mode"]["enum"] == ["disabled", "token"]


def test_every_manifest_validates_against_the_kuberay_schemas(schemas, documents):
    kinds = [doc["kind"] for doc in _all(documents)]
    assert {"RayCluster", "RayJob", "Pod", "PersistentVolumeClaim"} <= set(kinds), kinds
    errors = [e for doc in _all(documents) for e in schemas.errors(doc)]
    assert errors == [], "\n".join(errors)


def test_token_auth_is_on_for_the_cluster_and_the_job(documents):
    """KubeRay (>= v1.5.1) makes Secret <cluster name> (key auth_token) and sets RAY_AUTH_MODE=token and
    RAY_AUTH_TOKEN (from that Secret) on every Ray container, wait-gcs-ready init container and the
    RayJob's submitter (ray-operator/controllers/ray/common/pod.go, rayjob_controller.go)."""
    cluster, job = _one(documents, "RayCluster"), _one(documents, "RayJob")
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    assert _version(cluster["spec"]["rayVersion"]) >= MIN_RAY_FOR_TOKEN, "the operator refuses token mode below Ray 2.52"
    # The submitter gets the token only from the cluster the job runs on: the selected one, or its own.
    if "clusterSelector" in job["spec"]:
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        assert "rayClusterSpec" not in job["spec"]
    else:
        assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    # Nobody overrides what the operator injects (a hand-set value would win: EnvVarExists).
    for doc in _all(documents):
        for container in _containers(doc):
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, (doc["kind"], container["name"])


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "Pod":
        return [spec]
    if doc["kind"] == "RayJob":
        return [spec["submitterPodTemplate"]["spec"]] + (_pod_specs({"kind": "RayCluster", "spec": spec["rayClusterSpec"]})
                                                         if "rayClusterSpec" in spec else [])
    if doc["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec.get("workerGroupSpecs", [])]
    return []


def _containers(doc: dict) -> list[dict]:
    return [c for spec in _pod_specs(doc) for c in spec.get("containers", []) + spec.get("initContainers", [])]


def test_the_dashboard_and_ray_ports_stay_off_public_interfaces(documents):
    assert not [d for d in _all(documents) if d["kind"] in ("Service", "Ingress", "Route", "Gateway")]
    for doc in _all(documents):
        clusters = [doc["spec"]] if doc["kind"] == "RayCluster" else \
            [doc["spec"]["rayClusterSpec"]] if doc["kind"] == "RayJob" and "rayClusterSpec" in doc["spec"] else []
        for cluster in clusters:
            head = cluster["headGroupSpec"]
            assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the head service must be ClusterIP"
            assert not head.get("enableIngress"), "no Ingress for the dashboard"
            assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
        for spec in _pod_specs(doc):
            assert not spec.get("hostNetwork"), doc["metadata"]["name"]
            for container in spec.get("containers", []):
                assert not [p for p in container.get("ports", []) if "hostPort" in p], container["name"]


def test_the_readmes_say_how_to_reach_the_dashboard_and_read_the_token():
    text = (KUBERAY_DIR / "README.md").read_text()
    cluster = _one({"raycluster.yaml": _strict_yaml((KUBERAY_DIR / "raycluster.yaml").read_text())}, "RayCluster")
    name = cluster["metadata"]["name"]
    assert f"kubectl port-forward svc/{name}-head-svc 8265:8265" in text
    assert f"kubectl get secret {name} -o jsonpath='{{.data.auth_token}}' | base64 -d" in text
    assert "v1.5.1" in text
    assert "port-forward" in (PROJECT_ROOT / "README.md").read_text()


# ------------------------------------------------------------------- the validation can fail
def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def _rename(doc: dict, path: str, new: str) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[new] = node.pop(last)
    return doc


PLANTED = [  # (kind, how the manifest is spoilt, a fragment the error must contain)
    ("RayCluster", lambda d: _set(d, "spec.authOptions.mode", "tokn"), "spec.authOptions.mode: 'tokn' is not one of"),
    ("RayCluster", lambda d: _set(d, "spec.authOptions", {"mode": "token", "secretName": "mine"}),
     "'secretName' was unexpected"),  # a v1.6 field: not in the v1.5.1 schema
    ("RayCluster", lambda d: _rename(d, "spec.headGroupSpec.serviceType", "serviceTyp"), "'serviceTyp' was unexpected"),
    ("RayCluster", lambda d: _set(d, "spec.workerGroupSpecs.0.replicas", "2"), "'2' is not of type 'integer'"),
    ("RayCluster", lambda d: _set(d, "spec.workerGroupSpecs.0.replicas", 2**31), "is not a 'int32'"),
    ("RayCluster", lambda d: _set(d, "spec.headGroupSpec.rayStartParams.num-cpus", 0), "0 is not of type 'string'"),
    ("RayCluster", lambda d: _set(d, "spec.workerGroupSpecs.0.template.spec.containers.0.resources.limits.cpu", 1.5),
     "1.5 is not valid under any of the given schemas"),  # int-or-string: a float is neither
    ("RayCluster", lambda d: _set(d, "spec.headGroupSpec.template.spec.containers.0.ports.1.containerPort", 6379),
     "x-kubernetes-list-type map: duplicate"),  # two ports 6379/TCP (protocol defaulted)
    ("RayCluster", lambda d: _set(d, "spec.managedBy", "ray.io/kuberay-operator"), "CEL rule"),
    ("RayCluster", lambda d: _rename(d, "metadata.labels", "lables"), "'lables' was unexpected"),
    ("RayCluster", lambda d: _set(d, "metadata.name", "KVP_bench"), "does not match"),
    ("RayCluster", lambda d: _set(d, "apiVersion", "ray.io/v2"), "is not one of ['ray.io/v1']"),
    ("RayJob", lambda d: _rename(d, "spec.entrypoint", "entrypont"), "'entrypont' was unexpected"),
    ("RayJob", lambda d: _set(d, "spec.submitterPodTemplate.spec.containers.0.securityContext.runAsNonRoot", "yes"),
     "'yes' is not of type 'boolean'"),
    ("Pod", lambda d: _rename(d, "spec.containers.0.volumeMounts.0.mountPath", "mountpath"), "'mountPath' is a required"),
    ("PersistentVolumeClaim", lambda d: _set(d, "spec.accessModes", "ReadWriteOnce"), "is not of type 'array'"),
    ("PersistentVolumeClaim", lambda d: _set(d, "spec.resources.requests.storage", None), "None is not valid under any"),
]


@pytest.mark.parametrize("kind, spoil, expected", PLANTED, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(PLANTED)])
def test_a_planted_bad_manifest_fails(schemas, documents, kind, spoil, expected):
    good = [d for d in _all(documents) if d["kind"] == kind][0]
    assert schemas.errors(good) == []
    errors = schemas.errors(spoil(good))
    assert any(expected in e for e in errors), errors


def test_duplicate_yaml_keys_fail_as_in_kubectl():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        _strict_yaml("kind: Pod\nspec:\n  a: 1\n  a: 2\n")


def test_an_unknown_kind_has_no_schema(schemas):
    assert "no schema" in schemas.errors({"kind": "Service", "metadata": {"name": "x"}})[0]


def test_kubernetes_extensions_on_a_small_schema():
    schema = structural({"type": "object", "properties": {
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {"type": "integer"}}},
        "closed": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
        "qty": {"x-kubernetes-int-or-string": True},
        "maybe": {"type": "string", "nullable": True},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
    }})
    v = K8sValidator(schema, format_checker=FORMATS)
    assert v.is_valid({"open": {"a": 1, "anything": [1]}, "closed": {"a": 1}, "map": {"k": "v"}, "qty": 3,
                       "maybe": None, "tags": ["x", "y"]})
    assert v.is_valid({"qty": "500m"})
    assert not v.is_valid({"open": {"a": "1"}})  # preserved, but declared fields are still typed
    assert not v.is_valid({"closed": {"b": 1}})
    assert not v.is_valid({"map": {"k": 1}})
    assert not v.is_valid({"qty": 1.5}) and not v.is_valid({"qty": True})
    assert not v.is_valid({"tags": ["x", "x"]})
    assert not v.is_valid({"unknown": 1})
