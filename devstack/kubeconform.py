"""kubeconform, offline: the manifests of deploy/k8s checked ``-strict`` against the Kubernetes
schemas AND the schemas of the custom resources they use (ServiceMonitor, PrometheusRule,
KEDA's ScaledObject), with no network but the Go module proxy on the first run.

kubeconform normally downloads its schemas from GitHub. Here everything comes from a package
registry and is cached by version under ``~/.cache/secmsg/bin/`` (``SECMSG_BIN_CACHE``), like
the dev servers:

* the binary: ``go install github.com/yannh/kubeconform/cmd/kubeconform@KUBECONFORM_VERSION``;
* the Kubernetes schemas: the strict, per-version JSON schemas that the PyPI package
  ``kubernetes-validate`` ships (``v1.N.0-local-strict/``). Each names itself with an
  ``$id`` under ``https://kubernetes.io/api/`` and refers to ``/api/_definitions.json``, URLs
  only that package's resolver maps to files; the cached copy drops the ``$id``s and makes the
  references relative (``_definitions.json``) so kubeconform's file loader follows them;
* the custom resources' schemas: the CustomResourceDefinitions in the Go modules of
  prometheus-operator and KEDA (``go mod download``), converted by :func:`crd_schemas`.

Use it on a rendered overlay:

    kustomize build deploy/k8s/overlays/production | uv run python -m devstack.kubeconform -

tests/deploy/test_deploy_k8s.py runs it over every overlay, for the oldest and newest
Kubernetes versions we support.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import importlib.resources
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from devstack.servers import _build_go_install, _go, bin_cache

# v0.7.0 is the newest kubeconform whose go.mod asks for no newer Go than the 1.24 toolchain
# scripts/bootstrap installs (v0.8.0 wants Go 1.26).
KUBECONFORM_VERSION = "v0.7.0"
KUBECONFORM_MODULE = "github.com/yannh/kubeconform/cmd/kubeconform"
# Go module -> (version, folder of CustomResourceDefinition YAML files in it). The versions
# are the newest whose go.mod the same Go 1.24 toolchain accepts.
CRD_MODULES: dict[str, tuple[str, str]] = {
    "github.com/prometheus-operator/prometheus-operator": (
        "v0.85.0", "example/prometheus-operator-crd"),
    "github.com/kedacore/keda/v2": ("v2.17.2", "config/crd/bases"),
}
# Bump when crd_schemas() or the rewriting of the Kubernetes schemas changes what it writes:
# the cache key includes it, so a stale conversion is never reused.
CONVERTER_REVISION = "2"
CRD_LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
K8S_LOCATION = "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/" \
               "{{ .ResourceKind }}{{ .KindSuffix }}.json"

Schema = dict[str, Any]


class _CrdLoader(yaml.SafeLoader):
    """PyYAML reads a bare ``=`` (an enum value in some CRDs, e.g. a relabelling or label
    matcher operator) as YAML 1.1's "value" key type, which it cannot build: keep the text."""


def _value_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "expected a scalar", node.start_mark)
    return str(loader.construct_scalar(node))


_CrdLoader.add_constructor("tag:yaml.org,2002:value", _value_as_text)


def ensure_kubeconform() -> Path:
    """Build kubeconform once from the Go module proxy and return the cached binary."""
    bin_cache().mkdir(parents=True, exist_ok=True)
    return _build_go_install("kubeconform", KUBECONFORM_MODULE, KUBECONFORM_VERSION)


def _publish(build: Path, target: Path) -> Path:
    """Move a finished ``build`` folder to ``target`` (a concurrent run may have won)."""
    try:
        build.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(build, ignore_errors=True)
    return target


def _cache_root() -> Path:
    root = bin_cache() / "kubeconform-schemas"
    root.mkdir(parents=True, exist_ok=True)
    return root


def normalize_k8s_version(version: str) -> str:
    """``1.30`` -> ``1.30.0`` (kubernetes-validate names its folders ``v1.30.0-local-strict``)."""
    parts = version.removeprefix("v").split(".")
    return ".".join([*parts, "0", "0"][:3])


def k8s_schemas(versions: list[str]) -> Path:
    """A folder with ``v<version>-local-strict/`` for each Kubernetes version, from the
    schemas kubernetes-validate ships, their ``$ref``s made relative (see the module doc)."""
    package = importlib.metadata.version("kubernetes-validate")
    root = _cache_root() / f"kubernetes-validate-{package}-r{CONVERTER_REVISION}"
    source = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    for version in map(normalize_k8s_version, versions):
        name = f"v{version}-local-strict"
        target = root / name
        if target.is_dir():
            continue
        src = Path(str(source / name))
        if not src.is_dir():
            known = sorted(p.name for p in Path(str(source)).iterdir() if "strict" in p.name)
            raise ValueError(f"kubernetes-validate {package} has no schemas for Kubernetes "
                             f"{version}; it has {', '.join(known)}")
        root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        for f in src.glob("*.json"):
            schema = json.loads(f.read_text())
            schema.pop("$id", None)  # so that references resolve against the file's path
            text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
            (build / f.name).write_text(text)
        _publish(build, target)
    return root


def _structural(node: Any) -> Any:
    """One OpenAPI v3 schema node of a CRD as JSON Schema draft 4, closed like the API server
    closes it: an object that lists its ``properties`` takes no other field (the API server
    prunes unknown fields, ``kubectl --validate=strict`` rejects them) unless it says
    ``x-kubernetes-preserve-unknown-fields``; ``nullable`` allows ``null``;
    ``x-kubernetes-int-or-string`` allows an integer or a string."""
    if isinstance(node, list):
        return [_structural(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _structural(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _structural(value)
        elif key == "nullable":
            continue  # not JSON Schema: folded into "type" below
        else:
            out[key] = value
    if node.get("nullable") is True and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"] if "null" not in types else types
    if node.get("x-kubernetes-int-or-string") is True and "type" not in out \
            and "anyOf" not in out and "oneOf" not in out:
        out["type"] = ["integer", "string"]
    open_object = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and "additionalProperties" not in out and not open_object:
        out["additionalProperties"] = False
    return out


def crd_schemas(crd: dict[str, Any]) -> dict[str, Schema]:
    """The kubeconform schemas of one CustomResourceDefinition: for each served version with
    an ``openAPIV3Schema``, ``<group>/<kind>_<version>.json`` -> a strict JSON schema that also
    pins ``apiVersion`` and ``kind``."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"not a CustomResourceDefinition: {crd.get('kind')!r}")
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    out: dict[str, Schema] = {}
    for version in spec.get("versions") or []:
        source = (version.get("schema") or {}).get("openAPIV3Schema")
        if source is None or not version.get("served", True):
            continue
        schema = _structural(copy.deepcopy(source))
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {**props.get("apiVersion", {}), "type": "string",
                               "enum": [f"{group}/{version['name']}"]}
        props["kind"] = {**props.get("kind", {}), "type": "string", "enum": [kind]}
        schema.setdefault("additionalProperties", False)
        out[f"{group}/{kind.lower()}_{version['name']}.json"] = schema
    return out


def crd_schemas_dir() -> Path:
    """The converted schemas of every CRD in :data:`CRD_MODULES`, made once and cached."""
    key = hashlib.sha256(json.dumps([CRD_MODULES, CONVERTER_REVISION]).encode()).hexdigest()
    target = _cache_root() / f"crds-{key[:16]}"
    if target.is_dir():
        return target
    build = Path(tempfile.mkdtemp(prefix=".crds-", dir=_cache_root()))
    try:
        for module, (version, folder) in CRD_MODULES.items():
            info = json.loads(_go("mod", "download", "-json", f"{module}@{version}"))
            files = sorted((Path(info["Dir"]) / folder).glob("*.yaml"))
            if not files:
                raise RuntimeError(f"{module}@{version} has no CRDs in {folder}/")
            for f in files:
                for doc in yaml.load_all(f.read_text(), Loader=_CrdLoader):
                    if not doc or doc.get("kind") != "CustomResourceDefinition":
                        continue
                    for rel, schema in crd_schemas(doc).items():
                        path = build / rel
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps(schema, indent=1, sort_keys=True))
        (build / "SOURCES.txt").write_text("".join(
            f"{m}@{v} {d}/\n" for m, (v, d) in CRD_MODULES.items()))
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return _publish(build, target)


def command(k8s_version: str, *, strict: bool = True) -> list[str]:
    """The kubeconform command line (files or ``-`` for stdin to append): only local schema
    locations, so it never reaches for the network; a kind without a schema is an error."""
    version = normalize_k8s_version(k8s_version)
    argv = [str(ensure_kubeconform()), "-kubernetes-version", version,
            "-schema-location", str(k8s_schemas([version]) / K8S_LOCATION),
            "-schema-location", str(crd_schemas_dir() / CRD_LOCATION),
            "-output", "json", "-summary"]
    return argv + (["-strict"] if strict else [])


def validate(files: list[Path], k8s_version: str) -> list[dict[str, Any]]:
    """Run ``kubeconform -strict`` over manifest files; return one result per resource
    (``filename``, ``kind``, ``name``, ``version``, ``status`` -- ``statusValid`` when it
    passed -- and, when not, ``msg`` and ``validationErrors``)."""
    proc = subprocess.run([*command(k8s_version), "-verbose", *map(str, files)],
                          capture_output=True, text=True, check=False, timeout=300)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"kubeconform failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}") from None
    results: list[dict[str, Any]] = report.get("resources") or []
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.kubeconform",
        description="kubeconform -strict with the Kubernetes and CRD schemas, offline.")
    parser.add_argument("--kubernetes-version", default="1.30",
                        help="Kubernetes version whose schemas to use (default: 1.30)")
    parser.add_argument("files", nargs="+", help="manifest files or folders, - for stdin")
    args = parser.parse_args(argv)
    argv_ = [*command(args.kubernetes_version), *args.files]
    argv_[argv_.index("json")] = "text"  # people read the text output
    return subprocess.run(argv_, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
