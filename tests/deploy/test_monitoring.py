"""Watching the platform on Kubernetes: the ServiceMonitor reaches every pod's internal port
(and nothing public), the alerts and the Grafana dashboard ask only for metrics the services
really export, and replicas spread across zones with a PodDisruptionBudget each."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.deploy.conftest import K8S
from tests.deploy.netpol import selects

Doc = dict[str, Any]
# The modules that define the services' metrics (importing registers them).
METRIC_MODULES = ("secmsg.shared.telemetry", "secmsg.shared.worker", "secmsg.ingest.metrics",
                  "secmsg.store.deadletters", "secmsg.store.metrics", "secmsg.notify.metrics",
                  "secmsg.notify.deliverability.metrics", "secmsg.retrieve.metrics")
METRIC_RE = re.compile(r"\bsecmsg_[a-z_]+\b")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
DASHBOARD = K8S / "overlays" / "production" / "grafana-dashboard.json"


def exported() -> set[str]:
    for m in METRIC_MODULES:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as exc:
            if exc.name != m:  # a module that moved is fine; a broken import is not
                raise
    return {metric.name for metric in REGISTRY.collect()}


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def alert_rules(docs: list[Doc]) -> dict[str, Doc]:
    return {r["alert"]: r for rule in of_kind(docs, "PrometheusRule")
            for g in rule["spec"]["groups"] for r in g["rules"]}


def test_alerts_cover_what_an_operator_must_hear_about_with_real_metrics(
        rendered: dict[str, list[Doc]]) -> None:
    alerts = alert_rules(rendered["production"])
    known = exported()
    for name, rule in alerts.items():
        used = set(METRIC_RE.findall(rule["expr"]))
        assert used, name
        assert {family(u) for u in used} <= known, (name, used - known)
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    # what the alerts must cover -> a metric one of them has to use
    wanted = {"dead letters": "secmsg_dead_letters", "deferral backlog":
              'consumer="notify-retry"', "bounce rate": 'secmsg_bounces_total{outcome="hard"}',
              "DNSBL listing": "secmsg_dnsbl_listed", "ingest 5xx": "secmsg_ingest_http_requests",
              "retrieve 5xx": "secmsg_retrieve_requests", "consumer lag":
              "secmsg_consumer_pending_messages{consumer!="}
    for what, needle in wanted.items():
        assert any(needle in r["expr"] for r in alerts.values()), f"no alert on {what}"


def test_the_dashboard_asks_only_for_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    known = exported()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 10 and len(exprs) >= len(dash["panels"])
    for expr in exprs:
        used = {family(u) for u in METRIC_RE.findall(expr)}
        assert used and used <= known, (expr, used - known)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_the_dashboard_ships_as_a_grafana_sidecar_configmap(
        rendered: dict[str, list[Doc]]) -> None:
    (cm,) = [d for d in of_kind(rendered["production"], "ConfigMap")
             if d["metadata"]["name"] == "secmsg-grafana-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["secmsg.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize("overlay", ["production"])
def test_the_servicemonitor_scrapes_every_pods_internal_port_only(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    services = [s for s in of_kind(docs, "Service")
                if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert [s["metadata"]["name"] for s in services] == ["secmsg-metrics"]
    (svc,) = services
    endpoints = monitor["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == ["internal"]
    assert all(e.get("honorLabels") is True and e["path"] == "/metrics" for e in endpoints)
    (port,) = svc["spec"]["ports"]
    assert port["name"] == "internal" and port["targetPort"] == "internal"
    assert svc["spec"]["clusterIP"] == "None"
    scraped = [d for d in of_kind(docs, "Deployment")
               if selects({"matchLabels": svc["spec"]["selector"]},
                          d["spec"]["template"]["metadata"]["labels"])]
    names = {d["metadata"]["name"] for d in scraped}
    assert {"secmsg-ingest", "secmsg-store", "secmsg-notify", "secmsg-retrieve",
            "secmsg-notify-deliverability"} <= names
    for d in scraped:
        ports = [p["name"] for c in d["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])]
        assert "internal" in ports, d["metadata"]["name"]
    # No Ingress routes to it, and the public Services do not carry the internal port.
    for ing in of_kind(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] != "secmsg-metrics"
                assert path["backend"]["service"]["port"].get("name") != "internal"


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_replicas_spread_across_zones_and_nodes_with_a_disruption_budget(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for svc in ("ingest", "store", "notify", "retrieve"):
        (dep,) = [d for d in of_kind(docs, "Deployment")
                  if d["metadata"]["name"] == f"secmsg-{svc}"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = [c["topologyKey"] for c in spread]
        assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"], svc
        for c in spread:
            assert selects(c["labelSelector"], labels), svc
            # a one-zone or one-node cluster must still schedule every replica
            assert c["whenUnsatisfiable"] == "ScheduleAnyway" and c["maxSkew"] == 1
        budgets = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(budgets) == 1, svc
        assert budgets[0]["spec"].get("maxUnavailable") == 1, svc
