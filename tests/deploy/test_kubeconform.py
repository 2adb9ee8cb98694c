"""Every overlay passes ``kubeconform -strict`` with the Kubernetes schemas AND the schemas of
the CRDs it uses (ServiceMonitor, PrometheusRule, KEDA's ScaledObject), offline
(devstack/kubeconform.py: kubeconform from the Go module proxy, the Kubernetes schemas of the
kubernetes-validate package, the CRDs of the prometheus-operator and KEDA Go modules).

Then the other way round: a misspelled field in a ServiceMonitor (and in the other CRD kinds
and a core kind) fails, so "valid" means the schemas were really applied; and the CRD
converter's rules, on a small CustomResourceDefinition."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devstack import kubeconform
from tests.deploy.conftest import OVERLAYS

Doc = dict[str, Any]
# Oldest Kubernetes we support and the newest the schemas know.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule"), ("keda.sh/v1alpha1", "ScaledObject")}


def _write(path: Path, docs: list[Doc]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_overlay_passes_kubeconform_strict_with_the_crd_schemas(
        rendered: dict[str, list[Doc]], tmp_path: Path, version: str) -> None:
    names = [*OVERLAYS, "base"]
    files = [_write(tmp_path / f"{name}.yaml", rendered[name]) for name in names]
    results = kubeconform.validate(files, version)

    failures = [f"{Path(r['filename']).stem}: {r['kind']}/{r['name']}: {r.get('msg')}"
                for r in results if r["status"] != "statusValid"]
    assert not failures, "\n".join(failures)
    # every resource was validated (none skipped for want of a schema), CRD kinds included
    for name in names:
        checked = sorted((r["version"], r["kind"], r["name"]) for r in results
                         if Path(r["filename"]).stem == name)
        expected = sorted((d["apiVersion"], d["kind"], d["metadata"]["name"])
                          for d in rendered[name])
        assert checked == expected, name
    validated = {(r["version"], r["kind"]) for r in results}
    assert validated >= CRD_KINDS, CRD_KINDS - validated


def _one(docs: list[Doc], kind: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return copy.deepcopy(doc)


def _first(docs: list[Doc], kind: str) -> Doc:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind))


def test_a_misspelled_field_fails_kubeconform_strict(
        rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    prod = rendered["production"]
    monitor = _one(prod, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"  # interval
    selector_typo = _one(prod, "ServiceMonitor")
    selector_typo["metadata"]["name"] += "-2"
    selector_typo["spec"]["selectr"] = selector_typo["spec"].pop("selector")
    rule = _first(prod, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["expresion"] = "up == 0"
    scaled = _one(prod, "ScaledObject")
    scaled["spec"]["minReplicaCount"] = "two"
    deployment = _first(prod, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    broken = [monitor, selector_typo, rule, scaled, deployment]

    results = kubeconform.validate([_write(tmp_path / "broken.yaml", broken)], K8S_VERSIONS[0])

    by_name = {(r["kind"], r["name"]): r for r in results}
    assert len(by_name) == len(broken)
    expected = {
        (monitor["kind"], monitor["metadata"]["name"]): ("/spec/endpoints/0", "'intervall'"),
        (selector_typo["kind"], selector_typo["metadata"]["name"]): ("/spec", "'selectr'"),
        (rule["kind"], rule["metadata"]["name"]): ("/spec/groups/0/rules/0", "'expresion'"),
        (scaled["kind"], scaled["metadata"]["name"]): ("/spec/minReplicaCount", "want integer"),
        (deployment["kind"], deployment["metadata"]["name"]): (
            "/spec/template/spec/containers/0", "'imagePulPolicy'"),
    }
    for key, (path, words) in expected.items():
        result = by_name[key]
        assert result["status"] == "statusInvalid", (key, result)
        # kubeconform's validationErrors stop at the first schema level; msg has the leaf
        assert f"at '{path}'" in result["msg"] and words in result["msg"], (key, result["msg"])


CRD: Doc = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"},
             "scope": "Namespaced", "versions": [
                 {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object",
                     "properties": {
                         "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                         "metadata": {"type": "object"},
                         "spec": {"type": "object", "properties": {
                             "port": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                      "x-kubernetes-int-or-string": True},
                             "size": {"x-kubernetes-int-or-string": True},
                             "note": {"type": "string", "nullable": True},
                             "extra": {"type": "object", "properties": {"a": {"type": "string"}},
                                       "x-kubernetes-preserve-unknown-fields": True},
                             "labels": {"type": "object",
                                        "additionalProperties": {"type": "string"}},
                             "items": {"type": "array", "items": {
                                 "type": "object", "properties": {"b": {"type": "integer"}}}},
                         }}}}}},
                 {"name": "v0", "served": False, "storage": False,
                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}


def test_the_crd_converter_closes_objects_like_the_api_server() -> None:
    schemas = kubeconform.crd_schemas(CRD)
    assert list(schemas) == ["example.com/widget_v1.json"]  # v0 is not served
    schema = schemas["example.com/widget_v1.json"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["apiVersion"]["enum"] == ["example.com/v1"]
    assert schema["properties"]["kind"]["enum"] == ["Widget"]
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["items"]["items"]["additionalProperties"] is False
    # x-kubernetes-preserve-unknown-fields keeps an object open; a map stays a map
    assert "additionalProperties" not in spec["properties"]["extra"]
    assert spec["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert spec["properties"]["note"]["type"] == ["string", "null"]
    assert "nullable" not in spec["properties"]["note"]
    assert spec["properties"]["size"]["type"] == ["integer", "string"]
    assert "type" not in spec["properties"]["port"]  # its anyOf already says it
    assert "additionalProperties" not in schema["properties"]["metadata"]
    # the source is left as it was
    assert "additionalProperties" not in CRD["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["spec"]
    with pytest.raises(ValueError, match="not a CustomResourceDefinition"):
        kubeconform.crd_schemas({"kind": "Deployment"})
