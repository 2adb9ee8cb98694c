"""The NetworkPolicies of each overlay, evaluated (tests/deploy/netpol.py) against a table of
flows a working cluster needs and flows that must stay closed.

The peers outside the manifests are where docs/operations.md says they run: the ingress
controller in namespace ingress-nginx, Prometheus in monitoring, the OpenTelemetry collector
in observability, NATS / MongoDB / MinIO in nats / mongodb / minio, CoreDNS in kube-system and
NodeLocal DNS on 169.254.20.10 (host network); cert-manager's HTTP-01 solver pod runs in the
overlay's own namespace.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.conftest import OVERLAYS
from tests.deploy.netpol import Endpoint, allowed, pods_of

NAMESPACE = {"dev": "secmsg-dev", "production": "secmsg"}
SERVICES = ("ingest", "store", "notify", "retrieve", "notify-deliverability")
INTERNAL = {"ingest": 9080, "store": 8081, "notify": 8082, "retrieve": 9443,
            "notify-deliverability": 8083}

OUTSIDE = {
    "ingress": Endpoint("ingress-nginx controller", "10.2.0.5", "ingress-nginx",
                        {"app.kubernetes.io/name": "ingress-nginx",
                         "app.kubernetes.io/component": "controller"}),
    "prometheus": Endpoint("prometheus", "10.2.1.5", "monitoring",
                           {"app.kubernetes.io/name": "prometheus"}),
    "otel": Endpoint("otel collector", "10.2.2.5", "observability",
                     {"app.kubernetes.io/name": "opentelemetry-collector"}),
    "nats": Endpoint("nats", "10.2.3.5", "nats", {"app.kubernetes.io/name": "nats"}),
    "mongodb": Endpoint("mongodb", "10.2.4.5", "mongodb", {"app.kubernetes.io/name": "mongodb"}),
    "minio": Endpoint("minio", "10.2.5.5", "minio", {"app.kubernetes.io/name": "minio"}),
    "kube-dns": Endpoint("coredns", "10.2.6.5", "kube-system", {"k8s-app": "kube-dns"}),
    "nodelocaldns": Endpoint("node-local-dns", "169.254.20.10", "kube-system",
                             {"k8s-app": "node-local-dns"}, host_network=True),
    "metadata": Endpoint("cloud metadata", "169.254.169.254"),
    "smtp": Endpoint("a tenant's mail server", "203.0.113.25"),
    "mail-sender": Endpoint("a mail server sending a bounce", "198.51.100.7"),
    "stranger": Endpoint("a pod of another application", "10.2.7.5", "default",
                         {"app": "curl"}),
    "dns-elsewhere": Endpoint("a pod on port 53 elsewhere", "10.2.8.5", "default",
                              {"app": "dnsmasq"}),
}

# (source, destination, port, protocol, allowed?, why). Names: a secmsg service, a key of
# OUTSIDE, "solver" (cert-manager's HTTP-01 pod) or "intruder" (an unlabelled pod in the
# secmsg namespace).
FLOWS: list[tuple[str, str, int, str, bool, str]] = [
    ("ingress", "ingest", 8080, "TCP", True, "the sender API through the Ingress"),
    ("ingress", "retrieve", 8443, "TCP", True, "recipients through the Ingress"),
    ("ingress", "solver", 8089, "TCP", True, "Let's Encrypt's HTTP-01 challenge"),
    ("retrieve", "ingest", 8080, "TCP", True, "the webmail's secure replies"),
    ("mail-sender", "notify-deliverability", 2525, "TCP", True, "bounce reports"),
    ("notify", "smtp", 25, "TCP", True, "notifications"),
    ("notify", "smtp", 587, "TCP", True, "notifications (submission)"),
    ("retrieve", "smtp", 587, "TCP", True, "sign-in codes"),
    ("ingest", "smtp", 587, "TCP", True, "the admin's test notification"),
    ("notify-deliverability", "smtp", 53, "UDP", True, "a DNSBL resolver anywhere"),
    ("ingress", "ingest", 9080, "TCP", False, "probes/metrics are never public"),
    ("ingress", "retrieve", 9443, "TCP", False, "probes/metrics are never public"),
    ("ingress", "store", 8081, "TCP", False, "a worker takes no traffic"),
    ("ingress", "notify-deliverability", 8083, "TCP", False, "probes are never public"),
    ("stranger", "ingest", 8080, "TCP", False, "only the ingress controller"),
    ("stranger", "retrieve", 8443, "TCP", False, "only the ingress controller"),
    ("stranger", "solver", 8089, "TCP", False, "only the ingress controller"),
    ("ingress", "solver", 8080, "TCP", False, "only the solver's port"),
    ("intruder", "nats", 4222, "TCP", False, "default deny for unknown pods"),
    ("intruder", "ingest", 8080, "TCP", False, "default deny for unknown pods"),
    ("store", "ingest", 8080, "TCP", False, "only retrieve calls ingest"),
    ("notify", "retrieve", 8443, "TCP", False, "no service calls retrieve"),
    ("prometheus", "ingest", 8080, "TCP", False, "Prometheus: the internal port only"),
    ("prometheus", "retrieve", 8443, "TCP", False, "Prometheus: the internal port only"),
    ("store", "smtp", 25, "TCP", False, "store sends no mail"),
    ("notify", "smtp", 443, "TCP", False, "no general internet egress"),
    ("notify", "metadata", 80, "TCP", False, "cloud metadata is closed"),
    ("notify", "metadata", 25, "TCP", False, "cloud metadata is closed, even on SMTP"),
    ("retrieve", "metadata", 53, "UDP", False, "only NodeLocal DNS's link-local address"),
    ("store", "dns-elsewhere", 53, "UDP", False, "DNS only to the cluster's resolvers"),
    ("ingest", "kube-dns", 5353, "UDP", False, "DNS port only"),
    ("store", "otel", 8080, "TCP", False, "the collector's OTLP ports only"),
    ("ingest", "nats", 8222, "TCP", False, "NATS' client port only (not monitoring)"),
    ("mail-sender", "ingest", 8080, "TCP", False, "the internet reaches only the bounce port"),
]
for _svc in SERVICES:
    FLOWS += [
        (_svc, "kube-dns", 53, "UDP", True, "DNS"),
        (_svc, "kube-dns", 53, "TCP", True, "DNS over TCP (large answers)"),
        (_svc, "nodelocaldns", 53, "UDP", True, "NodeLocal DNS"),
        (_svc, "nodelocaldns", 53, "TCP", True, "NodeLocal DNS over TCP"),
        (_svc, "nats", 4222, "TCP", True, "events"),
        (_svc, "mongodb", 27017, "TCP", True, "documents"),
        (_svc, "minio", 9000, "TCP", True, "content"),
        (_svc, "otel", 4318, "TCP", True, "traces, OTLP/HTTP"),
        (_svc, "otel", 4317, "TCP", True, "traces, OTLP/gRPC"),
        ("prometheus", _svc, INTERNAL[_svc], "TCP", True, "scraping /metrics"),
        ("stranger", _svc, INTERNAL[_svc], "TCP", False, "only Prometheus scrapes"),
    ]
DEV_FLOWS = [
    ("notify", "mailpit", 1025, "TCP", True, "dev: notifications land in Mailpit"),
    ("retrieve", "mailpit", 1025, "TCP", True, "dev: sign-in codes land in Mailpit"),
    ("ingest", "mailpit", 1025, "TCP", True, "dev: the admin's test notification"),
    ("store", "mailpit", 1025, "TCP", False, "store sends no mail"),
    ("stranger", "mailpit", 1025, "TCP", False, "only the services"),
]


def _endpoint(name: str, pods: dict[str, Endpoint], ns: str) -> Endpoint:
    if name in OUTSIDE:
        return OUTSIDE[name]
    if name == "solver":  # what cert-manager creates for an order
        return Endpoint("cm-acme-http-solver", "10.1.9.1", ns,
                        {"acme.cert-manager.io/http01-solver": "true"}, {"http": 8089})
    if name == "intruder":
        return Endpoint("unlabelled pod", "10.1.9.2", ns, {"run": "debug"})
    return pods[name if name == "mailpit" else f"secmsg-{name}"]


def _cases(overlay: str) -> list[tuple[str, str, int, str, bool, str]]:
    return FLOWS + (DEV_FLOWS if overlay == "dev" else [])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_through_exactly_the_flows_in_the_table(
        rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    ns = NAMESPACE[overlay]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = pods_of(docs, ns)
    wrong = []
    for src, dst, port, proto, expected, why in _cases(overlay):
        got = allowed(policies, _endpoint(src, pods, ns), _endpoint(dst, pods, ns), port, proto)
        if got != expected:
            wrong.append(f"{src} -> {dst}:{port}/{proto}: {'open' if got else 'blocked'}, "
                         f"should be {'open' if expected else 'blocked'} ({why})")
    assert not wrong, "\n".join(wrong)


def test_the_evaluator_follows_the_api_semantics() -> None:
    """The evaluator itself, on small hand-made policies (it must be able to say no)."""
    a = Endpoint("a", "10.0.0.1", "ns", {"app": "a"}, {"web": 8080})
    b = Endpoint("b", "10.0.0.2", "ns", {"app": "b"}, {"web": 9090})
    other = Endpoint("o", "10.9.0.1", "other", {"app": "a"})
    assert allowed([], a, b, 1)  # nothing isolates anything
    deny = {"metadata": {"name": "d", "namespace": "ns"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    assert not allowed([deny], a, b, 9090)
    assert allowed([deny], other, Endpoint("x", "1.2.3.4"), 443)  # other namespace: free
    egress = {"metadata": {"name": "e", "namespace": "ns"}, "spec": {
        "podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                    "ports": [{"port": "web"}]}]}}
    ingress = {"metadata": {"name": "i", "namespace": "ns"}, "spec": {
        "podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ns"}}, "podSelector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["a"]}]}}],
            "ports": [{"port": 9000, "endPort": 9100}]}]}}
    policies = [deny, egress, ingress]
    assert allowed(policies, a, b, 9090)  # named port on the destination, inside endPort
    assert not allowed(policies, a, b, 8080)  # "web" is 9090 on b
    assert not allowed(policies, b, a, 8080)  # b has no egress
    assert not allowed([egress, ingress], other, b, 9090)  # podSelector alone: own namespace
    block = {"metadata": {"name": "x", "namespace": "ns"}, "spec": {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {
            "cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}], "ports": [
                {"protocol": "UDP", "port": 53}]}]}}
    assert allowed([block], a, Endpoint("r", "8.8.8.8"), 53, "UDP")
    assert not allowed([block], a, Endpoint("r", "8.8.8.8"), 53, "TCP")
    assert not allowed([block], a, Endpoint("m", "169.254.169.254"), 53, "UDP")
