"""The NATS side of the deployments: the users and permissions of ``bus_users`` in the compose
and Helm configurations (generated, current, accepted by the real nats-server), each service
connecting as its own user, and in production TLS and 3 replicas."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import nats_auth
from devstack.servers import ensure_binaries
from secmsg.shared.bus_users import BY_SERVICE
from tests.deploy.conftest import OVERLAYS, ROOT

Doc = dict[str, Any]
MODULES = ("ingest", "store", "notify", "notify.deliverability", "retrieve")


def test_generated_nats_configuration_is_current() -> None:
    assert nats_auth.check() == [], "run `uv run python -m devstack.nats_auth`"


def _nats_accepts(conf: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "nats.conf").write_text(conf)
    return subprocess.run([str(ensure_binaries()["nats"]), "-c", str(tmp_path / "nats.conf"),
                           "-t"], cwd=tmp_path, env={**os.environ, **env}, capture_output=True,
                          text=True, check=False, timeout=30)


def test_the_real_nats_server_accepts_the_compose_and_helm_configuration(
        tmp_path: Path) -> None:
    passwords = {nats_auth.password_env(u): "x" for u in nats_auth.user_names()}
    shutil.copy(ROOT / "deploy" / "compose" / "nats-auth.conf", tmp_path / "nats-auth.conf")
    compose_conf = (ROOT / "deploy" / "compose" / "nats.conf").read_text().replace(
        '"/data"', f'"{tmp_path / "data"}"')
    ok = _nats_accepts(compose_conf, tmp_path, passwords)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    # A password missing from the environment stops the server instead of leaving a user open.
    missing = _nats_accepts(compose_conf, tmp_path,
                            {k: v for k, v in passwords.items() if "STORE" not in k})
    assert missing.returncode != 0 and "NATS_STORE_PASSWORD" in missing.stderr + missing.stdout

    values = yaml.safe_load((ROOT / "deploy" / "helm" / "nats-values.yaml").read_text())
    block = values["configMap"]["merge"]["data"][nats_auth.HELM_KEY]
    ok = _nats_accepts(f"port: -1\n{block}", tmp_path, passwords)
    assert ok.returncode == 0, ok.stderr + ok.stdout


def test_helm_values_run_a_tls_cluster_with_every_password_from_the_secret() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "nats-values.yaml").read_text())
    cfg = values["config"]
    assert cfg["cluster"]["enabled"] and cfg["cluster"]["replicas"] == 3
    assert cfg["cluster"]["tls"]["enabled"] and cfg["nats"]["tls"]["enabled"]
    assert cfg["jetstream"]["enabled"]
    assert any(k.endswith("$include") and v.endswith(nats_auth.HELM_KEY)
               for k, v in cfg["merge"].items())
    env = values["container"]["env"]
    for user in nats_auth.user_names():
        ref = env[nats_auth.password_env(user)]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "secmsg-nats-users", "key": user}


def test_compose_services_connect_as_their_own_nats_user(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    for user in nats_auth.user_names():
        var = nats_auth.password_env(user)
        assert nats["environment"][var].startswith(f"${{{var}:?")
    for module in MODULES:
        svc = compose["services"][module.replace(".", "-")]
        user = BY_SERVICE[module].name
        env = svc["environment"]
        assert env["SECMSG_NATS_USER"] == user, module
        assert env["SECMSG_NATS_PASSWORD"].startswith(
            f"${{{nats_auth.password_env(user)}:?"), module


def _container(docs: list[Doc], name: str) -> Doc:
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep | {"container": c}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_services_connect_as_their_own_nats_user(rendered: dict[str, list[Doc]],
                                                     overlay: str) -> None:
    docs = rendered[overlay]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"
             and d["metadata"]["name"].startswith("secmsg-config")]
    for module in MODULES:
        dep = _container(docs, f"secmsg-{module.replace('.', '-')}")
        env = {e["name"]: e for e in dep["container"]["env"]}
        user = BY_SERVICE[module].name
        assert env["SECMSG_NATS_USER"]["value"] == user
        assert env["SECMSG_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "secmsg-nats-users", "key": user}
        if overlay == "production":
            mounts = {m["name"]: m["mountPath"] for m in dep["container"]["volumeMounts"]}
            vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
            assert vols["nats-ca"]["secret"]["secretName"] == "secmsg-nats-ca"
            assert cm["data"]["SECMSG_NATS_TLS_CA_FILE"].startswith(mounts["nats-ca"] + "/")
    if overlay == "production":
        assert cm["data"]["SECMSG_NATS_URL"].startswith("tls://")
        assert cm["data"]["SECMSG_NATS_STREAM_REPLICAS"] == "3"
        assert cm["data"]["SECMSG_NATS_KV_REPLICAS"] == "3"


def test_operations_guide_lists_every_nats_user_and_its_subjects() -> None:
    from secmsg.shared.bus_users import USERS

    text = (ROOT / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines()
            if line.startswith("| `")}
    for u in USERS:
        row = rows[u.name]
        for suffix in (*u.publishes, *u.consumers):
            assert f"`{suffix}`" in row, (u.name, suffix)
