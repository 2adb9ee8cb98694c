"""deploy/k8s: every overlay renders with kustomize (test_kubeconform.py validates it against
the Kubernetes and CRD schemas) and keeps the properties operators rely on (probes, limits,
non-root, read-only root FS, no committed secrets, network isolation, notify autoscaling)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from secmsg.shared import subjects
from tests.deploy.conftest import K8S, OVERLAYS
from tests.deploy.netpol import selects, workloads

Doc = dict[str, Any]
SERVICES = {"ingest": 8080, "store": 8081, "notify": 8082, "retrieve": 8443}
PUBLIC = {"ingest", "retrieve"}
# /healthz, /readyz, /metrics: the internal port of each service (the workers have no other)
INTERNAL = {"ingest": 9080, "store": 8081, "notify": 8082, "retrieve": 9443}
WORKERS = {"store", "notify"}
JOBS = {"secmsg-migrate"}  # the upgrade Job (python -m secmsg.ops.migrate)
DNS, NATS, MONGO, S3 = 53, 4222, 27017, 9000
SMTP_PORTS = {25, 465, 587, 2525}
OTLP = (4317, 4318)
NODELOCAL_DNS = "169.254.20.10/32"


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Doc]) -> list[tuple[str, Doc, dict[str, str]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"],
             d["spec"]["template"]["metadata"].get("labels", {})) for d in workloads(docs)]


def secmsg_deployment(docs: list[Doc], svc: str) -> Doc:
    return named(docs, "Deployment", f"secmsg-{svc}")


def test_every_manifest_file_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        assert docs, f"{f} is empty"
        for d in docs:
            if f.name != "kustomization.yaml":
                assert {"apiVersion", "kind", "metadata"} <= d.keys(), f


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_probed_limited_and_locked_down(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    specs = pod_specs(rendered[overlay])
    assert len(specs) >= 4
    for name, spec, _ in specs:
        pod_sc = spec.get("securityContext", {})
        assert spec.get("terminationGracePeriodSeconds") == 30, name
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("enableServiceLinks") is False, name
        mounts_tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{overlay}:{name}/{c['name']}"
            sc = c.get("securityContext", {})
            if name not in JOBS:  # a run-to-completion Job has nothing to probe
                assert c.get("livenessProbe") and c.get("readinessProbe"), f"{where}: probes"
            for kind in ("requests", "limits"):
                res = c.get("resources", {}).get(kind, {})
                assert {"cpu", "memory"} <= res.keys(), f"{where}: {kind}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert uid is not None and uid != 0, f"{where}: numeric non-root uid"
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in mounts_tmp_volumes, f"{where}: emptyDir /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_its_module_on_its_port_with_health_probes(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    config_maps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    for svc, port in SERVICES.items():
        dep = secmsg_deployment(docs, svc)
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["python", "-m", f"secmsg.{svc}"]
        assert c["image"].startswith("ghcr.io/secmsg/secmsg:")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        env = {e["name"]: e for e in c.get("env", [])}
        if svc in PUBLIC:
            assert ports == {"http": port, "internal": INTERNAL[svc]}
            assert env[f"SECMSG_{svc.upper()}_PORT"]["value"] == str(port)
        else:
            assert ports == {"internal": INTERNAL[svc]}
        assert env[f"SECMSG_{svc.upper()}_INTERNAL_PORT"]["value"] == str(INTERNAL[svc])
        assert env[f"SECMSG_{svc.upper()}_INTERNAL_HOST"]["value"] == "0.0.0.0"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            # probes and metrics only on the internal port, plain HTTP
            assert c[probe]["httpGet"]["scheme"] == "HTTP", f"{svc} {probe}"
            assert c[probe]["httpGet"]["port"] in ("internal", INTERNAL[svc]), f"{svc} {probe}"
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(INTERNAL[svc])
        assert annotations["prometheus.io/scheme"] == "http"
        # The generated ConfigMap's hashed name was substituted into the reference.
        refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
        assert refs and all(r in config_maps for r in refs), (svc, refs, config_maps)

        service = named(docs, "Service", f"secmsg-{svc}")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selects({"matchLabels": service["spec"]["selector"]}, labels)
        if svc in PUBLIC:
            # the Service (and so the Ingress) reaches only the public port
            assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
                (port, "http")]
        else:
            assert service["spec"]["ports"][0]["port"] == INTERNAL[svc]
            assert service["spec"]["ports"][0]["targetPort"] in ("internal", INTERNAL[svc])
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"

        pdbs = [p for p in of_kind(docs, "PodDisruptionBudget")
                if selects(p["spec"]["selector"], labels)]
        assert len(pdbs) == 1, f"{svc}: one PodDisruptionBudget"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_are_committed(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    for secret in of_kind(docs, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]
    sensitive = ("KEYRING", "SECRET", "PASSWORD", "PEPPER", "MONGO_URL", "ACCESS_KEY")
    for cm in of_kind(docs, "ConfigMap"):
        leaked = [k for k in cm.get("data", {}) if any(s in k for s in sensitive)
                  and k != "SECMSG_KEYRING_ACTIVE"]
        assert not leaked, f"secret-looking keys in ConfigMap: {leaked}"
    for svc in SERVICES:
        (c,) = secmsg_deployment(docs, svc)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c.get("env", [])}
        for key in ("SECMSG_S3_SECRET_KEY", "SECMSG_MONGO_URL"):
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "secmsg-secrets" and ref["key"] == key, (svc, key)
            assert not ref.get("optional"), f"{svc}: {key} must not be optional"
        # The keyring is a file from the same Secret (never in the environment).
        assert "SECMSG_KEYRING" not in env, svc
        path = env["SECMSG_KEYRING_FILE"]["value"]
        pod = secmsg_deployment(docs, svc)["spec"]["template"]["spec"]
        (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        assert mount.get("readOnly") is True, svc
        (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert vol["secret"]["secretName"] == "secmsg-secrets", svc
        assert vol["secret"]["items"] == [{"key": "SECMSG_KEYRING",
                                           "path": path.rsplit("/", 1)[1]}], svc
        assert not vol["secret"].get("optional") and vol["secret"]["defaultMode"] & 0o007 == 0
        assert all("value" not in e for k, e in env.items()
                   if any(s in k for s in sensitive) and k != "SECMSG_KEYRING_FILE")


def _policies_for(docs: list[Doc], labels: dict[str, str], kind: str) -> list[Doc]:
    return [p for p in of_kind(docs, "NetworkPolicy")
            if kind in p["spec"].get("policyTypes", []) and selects(p["spec"]["podSelector"],
                                                                       labels)]


def _ports(rules: list[Doc]) -> set[int | str]:
    return {p["port"] for r in rules for p in r.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_what_each_service_needs(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    deny = named(docs, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")

    for svc in SERVICES:
        labels = secmsg_deployment(docs, svc)["spec"]["template"]["metadata"]["labels"]
        ingress = [r for p in _policies_for(docs, labels, "Ingress")
                   for r in p["spec"].get("ingress", [])]
        egress = [r for p in _policies_for(docs, labels, "Egress")
                  for r in p["spec"].get("egress", [])]
        assert all(r.get("from") for r in ingress), f"{svc}: an ingress rule open to all"
        assert all(r.get("to") for r in egress), f"{svc}: an egress rule open to all"
        sources = {ns for r in ingress for f in r["from"]
                   for ns in [f.get("namespaceSelector", {}).get("matchLabels", {})
                              .get("kubernetes.io/metadata.name")]}
        if svc in PUBLIC:
            assert "ingress-nginx" in sources, f"{svc} must be reachable from the ingress"
        else:
            assert "ingress-nginx" not in sources, f"{svc} is a worker: no ingress traffic"
            assert sources <= {"monitoring"}, (svc, sources)
        # Prometheus reaches only the internal port; nothing else reaches the internal port.
        for r in ingress:
            peers = {f.get("namespaceSelector", {}).get("matchLabels", {})
                     .get("kubernetes.io/metadata.name") for f in r["from"]}
            if peers == {"monitoring"}:
                assert _ports([r]) == {"internal"}, (svc, r)
            else:
                assert not _ports([r]) & {"internal", INTERNAL[svc]}, (svc, r)
        ports = _ports(egress)
        assert {DNS, NATS, MONGO, S3} <= ports, (svc, ports)
        allowed = {DNS, NATS, MONGO, S3, *OTLP}
        if svc in ("notify", "retrieve", "ingest"):
            # notify: notifications; retrieve: sign-in codes; ingest: the SMTP test action
            assert SMTP_PORTS & ports, f"{svc} sends email"
            allowed |= SMTP_PORTS | ({1025} if overlay == "dev" else set())
        if svc == "retrieve":
            allowed |= {SERVICES["ingest"]}  # the webmail's secure replies go through ingest
        assert ports <= allowed, f"{svc}: unexpected egress ports {ports - allowed}"
        # Wide egress (any address) is only for SMTP, and never to link-local/metadata.
        for r in egress:
            for peer in r["to"]:
                block = peer.get("ipBlock")
                if block is None:
                    continue
                if block["cidr"] == NODELOCAL_DNS:  # one link-local address, DNS only
                    assert _ports([r]) == {DNS}, (svc, r)
                    continue
                assert _ports([r]) <= SMTP_PORTS, f"{svc}: ipBlock egress beyond SMTP"
                assert any(ipaddress.ip_network("169.254.169.254/32").subnet_of(
                    ipaddress.ip_network(e)) for e in block.get("except", [])), svc


def test_notify_autoscales_with_one_controller_per_overlay(
        rendered: dict[str, list[Doc]]) -> None:
    def hpas_for_notify(docs: list[Doc]) -> list[Doc]:
        return [h for h in of_kind(docs, "HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"]["name"] == "secmsg-notify"]

    def scaled_objects(docs: list[Doc]) -> list[Doc]:
        return [s for s in of_kind(docs, "ScaledObject")
                if s["spec"]["scaleTargetRef"]["name"] == "secmsg-notify"]

    base = rendered["base"]
    (hpa,) = hpas_for_notify(base)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert len(hpas_for_notify(rendered["dev"])) == 1 and not scaled_objects(rendered["dev"])

    prod = rendered["production"]
    assert not hpas_for_notify(prod), "KEDA and an HPA would fight over the replica count"
    (so,) = scaled_objects(prod)
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert so["spec"]["maxReplicaCount"] > so["spec"]["minReplicaCount"] >= 1
    (js,) = [t for t in so["spec"]["triggers"] if t["type"] == "nats-jetstream"]
    meta = js["metadata"]
    # The scaler watches the stream and durable consumer that notify really uses.
    assert meta["stream"] == subjects.STREAM
    assert meta["consumer"] == subjects.NOTIFY_STORED
    assert int(meta["lagThreshold"]) > 0
    assert meta["natsServerMonitoringEndpoint"].endswith(":8222")
    # No other resource kind than ours scales notify.
    assert secmsg_deployment(prod, "notify")["spec"]["replicas"] == so["spec"]["minReplicaCount"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_ingest_and_retrieve_are_exposed_and_always_with_tls(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    backends = set()
    for ing in of_kind(docs, "Ingress"):
        tls_hosts = {h for t in ing["spec"].get("tls", []) for h in t.get("hosts", [])}
        assert all(t.get("secretName") for t in ing["spec"]["tls"])
        for rule in ing["spec"]["rules"]:
            assert rule["host"] in tls_hosts, f"{rule['host']} served without TLS"
            backends |= {p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert backends == {"secmsg-ingest", "secmsg-retrieve"}
    retrieve = named(docs, "Ingress", "secmsg-retrieve")
    assert retrieve["metadata"]["annotations"][
        "nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    for svc in of_kind(docs, "Service"):
        if svc["metadata"]["name"] == "secmsg-bounces":
            # inbound SMTP for bounce reports (production only): port 25 to the receiver
            assert overlay == "production"
            assert svc["spec"]["type"] == "LoadBalancer"
            assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(25, "smtp")]
            assert svc["spec"]["selector"] == {
                "app.kubernetes.io/name": "secmsg-notify-deliverability"}
            continue
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deliverability_process_is_a_probed_singleton(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    dep = named(rendered[overlay], "Deployment", "secmsg-notify-deliverability")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "secmsg.notify.deliverability"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"internal": 8083,
                                                                    "smtp": 2525}
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["SECMSG_NOTIFY_DELIVERABILITY_INTERNAL_PORT"]["value"] == "8083"
    assert c["readinessProbe"]["httpGet"]["port"] == "internal"
    assert env["SECMSG_MONGO_URL"]["valueFrom"]["secretKeyRef"]["name"] == "secmsg-secrets"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_overlays_set_their_namespace_and_production_pins_the_image(
        rendered: dict[str, list[Doc]]) -> None:
    expected = {"dev": "secmsg-dev", "production": "secmsg"}
    for overlay, ns in expected.items():
        docs = rendered[overlay]
        (namespace,) = of_kind(docs, "Namespace")
        assert namespace["metadata"]["name"] == ns
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == ns, (overlay, d["kind"])
    for svc in SERVICES:
        (c,) = secmsg_deployment(rendered["production"], svc)["spec"]["template"]["spec"][
            "containers"]
        tag = c["image"].rsplit(":", 1)[1]
        assert tag not in ("latest", "dev"), f"production must pin the image, got {tag}"
    prod_cm = of_kind(rendered["production"], "ConfigMap")[0]["data"]
    assert prod_cm["SECMSG_ENVIRONMENT"] == "production"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_forwarded_headers_are_trusted_only_from_the_ingress_range(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    (base_cm,) = of_kind(rendered["base"], "ConfigMap")
    assert not any(k.endswith("FORWARDED_ALLOW_IPS") for k in base_cm["data"]), \
        "the base trusts no proxy; overlays name the ingress controller's range"
    (cm,) = [c for c in of_kind(rendered[overlay], "ConfigMap")
             if c["metadata"]["name"].startswith("secmsg-config")]
    for svc in PUBLIC:
        value = cm["data"][f"SECMSG_{svc.upper()}_FORWARDED_ALLOW_IPS"]
        nets = [ipaddress.ip_network(v.strip()) for v in value.split(",")]  # no "*"
        assert nets and all(n.is_private for n in nets), (svc, value)


def test_kustomization_files_reference_existing_paths() -> None:
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        for res in k.get("resources", []):
            assert (kfile.parent / res).exists(), f"{kfile}: {res}"
        for gen in k.get("configMapGenerator", []):
            for env in gen.get("envs", []):
                assert (kfile.parent / env).exists(), f"{kfile}: {env}"


def test_secret_keys_are_documented() -> None:
    ops = (Path(K8S).parents[1] / "docs" / "operations.md").read_text()
    for key in ("SECMSG_MONGO_URL", "SECMSG_S3_ACCESS_KEY", "SECMSG_S3_SECRET_KEY",
                "SECMSG_KEYRING", "SECMSG_RETRIEVE_CODE_PEPPER", "secmsg-retrieve-tls",
                "secmsg-dkim"):
        assert key in ops, f"docs/operations.md does not document {key}"


def test_production_alerts_on_dead_letters_with_metrics_the_services_export(
        rendered: dict[str, list[Doc]]) -> None:
    from prometheus_client import REGISTRY

    import secmsg.shared.worker
    import secmsg.store.deadletters  # noqa: F401  (registers the gauge)

    rule = named(rendered["production"], "PrometheusRule", "secmsg-dead-letters")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"SecmsgDeadLetters", "SecmsgDeadLettersGrowing"}
    exported = {m.name for m in REGISTRY.collect()}
    for name, used in (("SecmsgDeadLetters", "secmsg_dead_letters"),
                       ("SecmsgDeadLettersGrowing", "secmsg_dead_lettered")):
        assert used in alerts[name]["expr"] and used in exported, name
        assert alerts[name]["labels"]["severity"] in ("warning", "critical")
        assert "deadletters" in alerts[name]["annotations"]["description"]


def test_production_wires_deliverability_settings_the_services_accept(
        rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Sender, bounce address and DKIM: set in the production ConfigMap, accepted by the
    settings classes as they are (a typo would stop notify), the private key from a Secret."""
    from secmsg.notify.deliverability.settings import DeliverabilitySettings
    from secmsg.notify.settings import NotifySettings
    from secmsg.shared.dkim import PlatformMailSettings
    from secmsg.shared.settings import CommonSettings

    docs = rendered["production"]
    (cm,) = [c for c in of_kind(docs, "ConfigMap")
             if c["metadata"]["name"].startswith("secmsg-config")]
    config = cm["data"]
    for key in ("SECMSG_SMTP_FROM", "SECMSG_NOTIFY_BOUNCE_ADDRESS", "SECMSG_NOTIFY_DKIM_DOMAIN",
                "SECMSG_NOTIFY_DKIM_SELECTOR", "SECMSG_NOTIFY_DKIM_PRIVATE_KEY_FILE"):
        assert config.get(key), key
    for k in list(os.environ):
        if k.startswith("SECMSG_"):
            monkeypatch.delenv(k)
    for k, v in config.items():
        monkeypatch.setenv(k, v)
    # the Secret-backed values, as the pods get them
    monkeypatch.setenv("SECMSG_S3_SECRET_KEY", "from-the-secret")
    monkeypatch.setenv("SECMSG_NATS_USER", "notify")
    monkeypatch.setenv("SECMSG_NATS_PASSWORD", "from-the-secret")
    common, notify, deliverability = CommonSettings(), NotifySettings(), DeliverabilitySettings()
    assert common.smtp_from.endswith("@" + notify.dkim_domain)  # the signature aligns with From
    assert notify.bounce_address == deliverability.bounce_address
    key_path = notify.dkim_private_key_file
    assert key_path is not None
    # retrieve's code mails and ingest's SMTP test read the same identity (PlatformMailSettings)
    mail = PlatformMailSettings()
    assert (mail.dkim_domain, mail.dkim_selector, mail.dkim_private_key_file,
            mail.bounce_address, mail.ehlo_name) == (
        notify.dkim_domain, notify.dkim_selector, key_path, notify.bounce_address,
        notify.ehlo_name)
    # those that send mail under the platform's name (notifications, codes, the SMTP test)
    for svc in ("notify", "retrieve", "ingest"):
        (c,) = secmsg_deployment(docs, svc)["spec"]["template"]["spec"]["containers"]
        pod = secmsg_deployment(docs, svc)["spec"]["template"]["spec"]
        (mount,) = [m for m in c["volumeMounts"]
                    if str(key_path).startswith(m["mountPath"] + "/")]
        assert mount["readOnly"] is True, svc
        (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert vol["secret"]["secretName"] == "secmsg-dkim", svc
        assert vol["secret"]["items"] == [{"key": "private.pem", "path": Path(key_path).name}]
    # no other workload holds the DKIM key
    for other in ("store", "notify-deliverability"):
        pod = secmsg_deployment(docs, other)["spec"]["template"]["spec"]
        assert all(v.get("secret", {}).get("secretName") != "secmsg-dkim"
                   for v in pod.get("volumes", [])), other
