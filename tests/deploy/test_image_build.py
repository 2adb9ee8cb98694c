"""The image, built for real: buildah on a debootstrap Debian base (``devstack.image``), then
each service started from it against this run's real NATS, FerretDB and versitygw.

Runs wherever root, buildah and debootstrap are present (``scripts/bootstrap`` installs them
when it runs as root, as CI does), unless ``SECMSG_IMAGE_TESTS=0``; elsewhere it is skipped
with the reason. Cold (no cached base, no layers): a few minutes; warm: well under a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import image
from devstack.servers import NatsServer, free_port
from devstack.services import host_env, internal_port_env, port_env
from tests.deploy.conftest import ROOT

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("SECMSG_IMAGE_TESTS", "1") == "0",
                       reason="SECMSG_IMAGE_TESTS=0"),
    pytest.mark.skipif(not image.tools_present(),
                       reason="needs root, buildah and debootstrap (scripts/bootstrap as root)"),
]

MODULES = ("ingest", "store", "notify", "retrieve", "notify.deliverability")


@pytest.fixture(scope="module")
def built() -> image.Built:
    return image.build(tag="test")


@pytest.fixture
def container(built: image.Built) -> Iterator[str]:
    ctr = subprocess.run(["buildah", "from", "--quiet", built.image], capture_output=True,
                         text=True, check=True, timeout=120).stdout.strip()
    yield ctr
    subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False, timeout=120)


def run_in(ctr: str, *cmd: str, env: dict[str, str] | None = None,
           mounts: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    args = ["buildah", "run", *image.ISOLATION]
    for k, v in (env or {}).items():
        args += ["--env", f"{k}={v}"]
    for m in mounts:
        args += ["--volume", m]
    return subprocess.run([*args, ctr, "--", *cmd], capture_output=True, text=True,
                          check=False, timeout=timeout)


def test_image_runs_non_root_without_a_toolchain(built: image.Built, container: str) -> None:
    info = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", built.image],
                                     capture_output=True, text=True, check=True,
                                     timeout=60).stdout)
    config = info["Docker"]["config"]
    assert config["User"] == "10001:10001"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == built.version
    assert labels["org.opencontainers.image.revision"] == built.revision != "unknown"
    assert config["Healthcheck"]["Test"][-1] == "/app/healthcheck.py"
    who = run_in(container, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert who.returncode == 0, who.stderr
    assert who.stdout.split() == ["10001", "10001"]
    # No compiler, no package installer, no uv in the final stage; the root fs is not ours.
    probe = run_in(container, "sh", "-c",
                   "for t in gcc cc c++ make uv pip pip3 apt-get; do "
                   "command -v $t && echo FOUND $t; done; touch /app/x 2>/dev/null && echo W")
    assert "FOUND" not in probe.stdout.replace("FOUND apt-get", ""), probe.stdout
    assert "W" not in probe.stdout.split()


@pytest.mark.parametrize("module", MODULES)
def test_each_service_answers_help_from_the_image(container: str, module: str) -> None:
    proc = run_in(container, "python", "-m", f"secmsg.{module}", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m secmsg.{module}")
    assert "SECMSG_" in proc.stdout


def test_the_sbom_lists_exactly_the_locked_packages_the_image_holds(
        built: image.Built, container: str) -> None:
    sbom = json.loads(built.sbom.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {(c["name"].lower().replace("_", "-"), c["version"]) for c in sbom["components"]}
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {(p["name"], p["version"]) for p in lock["package"] if "version" in p}
    assert listed <= locked, listed - locked
    dump = run_in(container, "python", "-c",
                  "import importlib.metadata as m, json; print(json.dumps(sorted("
                  "[d.metadata['Name'], d.version] for d in m.distributions())))")
    assert dump.returncode == 0, dump.stderr
    installed = {(n.lower().replace("_", "-"), v) for n, v in json.loads(dump.stdout)}
    third_party = {(n, v) for n, v in installed if not n.startswith("secmsg")}
    assert third_party, "nothing installed?"
    # Every third-party distribution in the image is in the SBOM with its exact version.
    assert third_party <= listed, third_party - listed
    assert len(listed) >= len(third_party) > 40


@pytest.mark.parametrize("module", MODULES)
def test_each_service_starts_healthy_from_the_image(
        container: str, module: str, env: dict[str, str], nats_server: NatsServer,
        tls_cert: tuple[Path, Path], tmp_path: Path) -> None:
    internal = free_port()
    svc_env = {**env, **nats_server.service_env(module), internal_port_env(module):
               str(internal)}
    if module in ("ingest", "retrieve"):
        svc_env[port_env(module)] = str(free_port())
        svc_env[host_env(module)] = "127.0.0.1"
    if module == "retrieve":
        svc_env["SECMSG_RETRIEVE_TLS_CERT"] = "/run/secmsg/tls/" + tls_cert[0].name
        svc_env["SECMSG_RETRIEVE_TLS_KEY"] = "/run/secmsg/tls/" + tls_cert[1].name
    if module == "notify.deliverability":
        svc_env["SECMSG_NOTIFY_BOUNCE_PORT"] = str(free_port())
        svc_env["SECMSG_NOTIFY_BOUNCE_HOST"] = "127.0.0.1"
    # As a Kubernetes Secret volume with fsGroup would: readable by the image's user only.
    tls = tmp_path / "tls"
    tls.mkdir()
    for f in tls_cert:
        shutil.copy(f, tls / f.name)
        os.chown(tls / f.name, 10001, 10001)
    mounts = (f"{tls}:/run/secmsg/tls:ro",)
    args = ["buildah", "run", *image.ISOLATION]
    for k, v in svc_env.items():
        args += ["--env", f"{k}={v}"]
    args += ["--volume", mounts[0], container, "--", "python", "-m", f"secmsg.{module}"]
    log = tmp_path / "svc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{internal}/healthz"
        ok = False
        for _ in range(600):
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    ok = r.status == 200
                    break
            except OSError:
                pass
            time.sleep(0.1)  # polling, not a timed assertion
        assert ok, f"{module} never answered {url}:\n{log.read_text(errors='replace')[-3000:]}"
        # The image's own HEALTHCHECK command, run inside the image, finds it healthy too.
        check = run_in(container, "python", "/app/healthcheck.py",
                       env={"SECMSG_SERVICE": module, internal_port_env(module): str(internal)})
        assert check.returncode == 0, check.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
