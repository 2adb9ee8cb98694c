"""A small evaluator of Kubernetes NetworkPolicies (networking.k8s.io/v1) over rendered YAML.

``allowed(policies, src, dst, port, protocol)`` answers whether a connection is let through,
with the API's semantics: a pod is isolated for a direction once any policy of its namespace
selects it with that policy type; then a connection needs a rule of one of those policies
that matches both the peer and the port, on the egress side of the source AND on the
ingress side of the destination. Peers: ``podSelector`` (this namespace),
``namespaceSelector`` (pods in those namespaces), both (pods matching both), ``ipBlock``
(``cidr`` minus ``except``, matched on the peer's address); an empty or missing ``from``/``to``
matches every peer, missing ``ports`` every port. Named ports resolve against the
destination pod's container ports; ``endPort`` ranges are honoured. Host-network pods and
addresses outside the cluster are never isolated and match only ``ipBlock``s (as a CNI sees
them). Not modelled: Services (flows name pod ports, after DNAT), SCTP, and CNI extensions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace set, not host network) or any other address."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports
    host_network: bool = False

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None and not self.host_network

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace or ""}


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector; ``{}`` selects everything (``None`` too, where the field is absent)."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != str(v):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], [str(v) for v in expr.get("values", [])]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(policy: Doc) -> set[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def _peer_matches(peer: Doc, endpoint: Endpoint, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        return (ip in ipaddress.ip_network(block["cidr"])
                and not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])))
    if not endpoint.is_pod:
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None and endpoint.namespace != policy_ns:
        return False  # a podSelector alone means pods of the policy's own namespace
    if ns_sel is not None and not selects(ns_sel, endpoint.namespace_labels):
        return False
    return selects(pod_sel, endpoint.labels)


def _port_matches(ports: Sequence[Doc] | None, port: int, protocol: str,
                  dst: Endpoint) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            if dst.ports.get(want) == port:
                return True
        elif want <= port <= int(p.get("endPort", want)):
            return True
    return False


def _side(policies: Sequence[Doc], pod: Endpoint, direction: str, peer: Endpoint,
          port: int, protocol: str, dst: Endpoint) -> bool:
    if not pod.is_pod:
        return True
    applying = [p for p in policies
                if p["metadata"].get("namespace", pod.namespace) == pod.namespace
                and selects(p["spec"].get("podSelector"), pod.labels)
                and direction in policy_types(p)]
    if not applying:
        return True  # not isolated in this direction
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in applying:
        ns = policy["metadata"].get("namespace", pod.namespace) or ""
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if not _port_matches(rule.get("ports"), port, protocol, dst):
                continue
            if not peers or any(_peer_matches(p, peer, ns) for p in peers):
                return True
    return False


def allowed(policies: Sequence[Doc], src: Endpoint, dst: Endpoint, port: int,
            protocol: str = "TCP") -> bool:
    """Whether a connection from ``src`` to ``dst`` on ``port``/``protocol`` is let through."""
    return (_side(policies, src, "Egress", dst, port, protocol, dst)
            and _side(policies, dst, "Ingress", src, port, protocol, dst))


WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def workloads(docs: Sequence[Doc]) -> list[Doc]:
    """The rendered resources that make pods (each has ``spec.template``)."""
    return [d for d in docs if d["kind"] in WORKLOADS]


def pods_of(docs: Sequence[Doc], namespace: str, first_ip: str = "10.1.0.1") -> dict[str,
                                                                                   Endpoint]:
    """The pods the workloads of rendered manifests make, by workload name."""
    ip = ipaddress.ip_address(first_ip)
    out: dict[str, Endpoint] = {}
    for d in workloads(docs):
        tpl = d["spec"]["template"]
        ports = {p["name"]: int(p["containerPort"]) for c in tpl["spec"]["containers"]
                 for p in c.get("ports", []) if "name" in p}
        out[d["metadata"]["name"]] = Endpoint(
            d["metadata"]["name"], str(ip), d["metadata"].get("namespace", namespace),
            dict(tpl["metadata"].get("labels", {})), ports,
            bool(tpl["spec"].get("hostNetwork")))
        ip += 1
    return out
