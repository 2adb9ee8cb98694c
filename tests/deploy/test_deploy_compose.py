"""docker-compose.yml: valid against the compose-spec JSON schema, health-gated start order,
the SECMSG_* names the code really reads, and no secret committed."""

from __future__ import annotations

import importlib
import importlib.resources
import json
import re
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from devstack import image
from secmsg.shared.settings import CommonSettings
from tests.deploy.conftest import K8S, ROOT

SERVICES = {"ingest": 8080, "store": 8081, "notify": 8082, "retrieve": 8443}
PUBLIC = {"ingest", "retrieve"}
INTERNAL = {"ingest": 9080, "store": 8081, "notify": 8082, "retrieve": 9443}
BACKENDS = ("nats", "mongo", "minio", "mailpit")
SENSITIVE = re.compile(r"KEYRING$|SECRET|PASSWORD|PEPPER|MONGO_URL")
REQUIRED_REF = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def known_setting_names() -> set[str]:
    """Every SECMSG_* variable some settings class reads (plus the health check's own)."""
    names = {f"SECMSG_{f.upper()}" for f in CommonSettings.model_fields}
    names.add("SECMSG_SERVICE")  # deploy/docker/healthcheck.py
    names |= set(image.BUILD_VARIABLES)  # the image build's own (devstack/image.py)
    # docker-compose.yml's own ${...} variables (e.g. SECMSG_IMAGE: which image to run)
    names |= set(re.findall(r"\$\{(SECMSG_[A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    for svc in (*SERVICES, "notify.deliverability"):
        module = importlib.import_module(f"secmsg.{svc}.settings")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings
                    and obj.__module__ == module.__name__):
                prefix = obj.model_config.get("env_prefix", "")
                for fname, field in obj.model_fields.items():
                    alias = field.validation_alias
                    if alias is not None and hasattr(alias, "choices"):
                        names |= {str(c) for c in alias.choices}
                    else:
                        names.add(f"{prefix}{fname}".upper())
    return names


def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)
    # The validator really rejects a broken file (guards against a schema that accepts all).
    broken = {**compose, "services": {"x": {"image": "y", "depends_on": {"z": {"condition": 1}}}}}
    assert list(validator.iter_errors(broken))


def test_every_long_running_service_has_a_healthcheck_and_waits_for_healthy_deps(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(SERVICES) | set(BACKENDS) | {"minio-init"} <= services.keys()
    for name, svc in services.items():
        if svc.get("restart") == "no":
            continue  # one-shot init job
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            if services[dep].get("restart") == "no":
                assert condition == "service_completed_successfully", (name, dep)
            else:
                assert condition == "service_healthy", (name, dep)
                assert services[dep].get("healthcheck"), f"{dep} has no healthcheck"
    for svc in SERVICES:
        deps = compose["services"][svc]["depends_on"]
        assert {"nats", "mongo", "minio-init"} <= deps.keys(), svc
    for svc in ("notify", "retrieve"):
        assert "mailpit" in compose["services"][svc]["depends_on"], f"{svc} sends email"


def test_secmsg_services_run_their_module_locked_down(compose: dict[str, Any]) -> None:
    for svc, port in SERVICES.items():
        s = compose["services"][svc]
        assert s["command"] == ["python", "-m", f"secmsg.{svc}"]
        assert s["build"]["dockerfile"] == "Dockerfile"
        env = s["environment"]
        if svc in PUBLIC:
            assert env[f"SECMSG_{svc.upper()}_PORT"] == str(port)
        assert env[f"SECMSG_{svc.upper()}_INTERNAL_PORT"] == str(INTERNAL[svc])
        # the probes stay inside the container (loopback): never a published port
        assert f"SECMSG_{svc.upper()}_INTERNAL_HOST" not in env
        assert not any(p.endswith(f":{INTERNAL[svc]}") for p in s.get("ports", []))
        assert s["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py"]
        assert s["read_only"] is True and s["cap_drop"] == ["ALL"]
        assert any(t.startswith("/tmp") for t in s["tmpfs"])
        assert "no-new-privileges:true" in s["security_opt"]
        assert s["stop_grace_period"] == "30s"
    retrieve = compose["services"]["retrieve"]
    cert_dir = retrieve["environment"]["SECMSG_RETRIEVE_TLS_CERT"].rsplit("/", 1)[0]
    assert any(v.split(":")[1] == cert_dir for v in retrieve["volumes"])
    assert (ROOT / "deploy/compose/minio-init.sh").exists()
    assert retrieve["ports"] == ["8443:8443"] and compose["services"]["ingest"]["ports"] == [
        "8080:8080"]
    for name in ("store", "notify"):
        assert "ports" not in compose["services"][name], f"{name} is internal"


def test_environment_names_are_settings_the_code_reads(compose: dict[str, Any]) -> None:
    known = known_setting_names()
    used: set[str] = set()
    for svc in (*SERVICES, "notify-deliverability"):
        used |= {k for k in compose["services"][svc]["environment"] if k.startswith("SECMSG_")}
    for cfg in (K8S / "base" / "config.env",):
        used |= {line.split("=", 1)[0] for line in cfg.read_text().splitlines()
                 if line.strip() and not line.startswith("#")}
    for manifest in (K8S / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if doc and doc["kind"] == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    used |= {e["name"] for e in c.get("env", [])}
    unknown = used - known
    assert not unknown, f"no settings class reads {sorted(unknown)}"
    assert {"SECMSG_NATS_URL", "SECMSG_MONGO_URL", "SECMSG_S3_ENDPOINT",
            "SECMSG_KEYRING"} <= used


def test_secrets_come_from_the_uncommitted_env_file(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if SENSITIVE.search(key):
                assert REQUIRED_REF.search(str(value)), f"{name}.{key} must be ${{VAR:?...}}"
    example = (ROOT / ".env.example").read_text()
    example_keys = {line.split("=", 1)[0].lstrip("# ") for line in example.splitlines()
                    if "=" in line}
    missing = set(REQUIRED_REF.findall(text)) - example_keys
    assert not missing, f".env.example lacks {sorted(missing)}"
    tracked = subprocess.run(["git", "ls-files", "--", ".env", "deploy/compose/tls"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert not tracked, f"secrets tracked in git: {tracked}"


@pytest.mark.parametrize("var", ["MONGO_ROOT_PASSWORD", "MINIO_ROOT_PASSWORD", "SECMSG_KEYRING",
                                 "SECMSG_S3_SECRET_KEY", "SECMSG_RETRIEVE_CODE_PEPPER"])
def test_required_secrets_have_no_default(var: str) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    refs = [m.group(0) for m in re.finditer(r"\$\{" + var + r"[^}]*\}", text)]
    assert refs, f"{var} is not used"
    assert all(":?" in r for r in refs), f"{var} must fail when unset: {refs}"


def test_operations_guide_names_only_real_settings() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    mentioned = set(re.findall(r"\bSECMSG_[A-Z0-9_]*[A-Z0-9]\b", text))
    # Families written with a placeholder (SECMSG_<SVC>_...) are not single names.
    unknown = mentioned - known_setting_names()
    assert not unknown, f"docs/operations.md names settings nothing reads: {sorted(unknown)}"
    assert len(mentioned) > 30
