"""Dockerfile and .dockerignore read as text (test_image_build.py builds and runs the image), the
entry points the image runs, and the container health check script."""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import os
import re
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.servers import free_port
from devstack.tls import ensure_cert
from tests.deploy.conftest import ROOT

SERVICES = ("ingest", "store", "notify", "retrieve")
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """The Dockerfile as [(stage name, [(INSTRUCTION, arguments)])], continuations joined."""
    lines: list[str] = []
    buf = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not buf:
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for line in filter(str.strip, lines):
        instr, _, args = line.strip().partition(" ")
        if instr.upper() == "FROM":
            parts = args.split()
            name = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else parts[0]
            out.append((name, []))
        if out:
            out[-1][1].append((instr.upper(), args.strip()))
    return out


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        globs = [pat, pat.replace("**/", "")] if pat.startswith("**/") else [pat]
        for cand in candidates:
            names = [cand] + ([cand.rsplit("/", 1)[-1]] if pat.startswith("**/") else [])
            if any(fnmatch.fnmatchcase(n, g) for n in names for g in globs):
                excluded = not negate
                break
    return excluded


def test_multi_stage_build_with_a_lean_non_root_runtime() -> None:
    st = stages()
    names = [n for n, _ in st]
    assert names[-1] == "runtime" and "builder" in names
    builder = dict(st)["builder"]
    runtime = dict(st)["runtime"]
    from_runtime = runtime[0][1]
    from_builder = builder[0][1]
    assert from_runtime.split()[0] == from_builder.split()[0] == "${PYTHON_IMAGE}"
    # Global ARGs (before the first FROM) pick the base image for both stages.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", (ROOT / "Dockerfile").read_text(),
                     re.MULTILINE)
    syncs = [a for i, a in builder if i == "RUN" and "uv sync" in a]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert any("--no-editable" in s for s in syncs)
    # Nothing from the build toolchain reaches the final stage: only the venv and the check.
    copies = [a for i, a in runtime if i == "COPY"]
    assert all("--from=builder" in c for c in copies if "--from" in c)
    assert not any("--from=uv" in c for c in copies)
    assert not any(i == "RUN" and ("apt-get install" in a or "pip install" in a or "uv " in a)
                   for i, a in runtime)
    assert ("USER", "10001:10001") in runtime
    hc = [a for i, a in runtime if i == "HEALTHCHECK"]
    assert hc and "/app/healthcheck.py" in hc[0]
    user_at = runtime.index(("USER", "10001:10001"))
    assert not any(i == "RUN" for i, _ in runtime[user_at:]), "RUN after USER needs root"


def test_the_build_installs_every_workspace_member() -> None:
    builder = dict(stages())["builder"]
    copied = " ".join(a for i, a in builder if i == "COPY")
    # Every member the root pyproject declares: `uv sync --frozen` fails on a missing one.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"][
        "members"]
    members = sorted({p.parent.relative_to(ROOT).as_posix()
                      for pat in patterns for p in ROOT.glob(f"{pat}/pyproject.toml")})
    assert set(members) >= {f"services/{s}" for s in SERVICES} | {"shared"}
    for m in members:
        assert f"{m}/pyproject.toml" in copied, f"Dockerfile does not copy {m}/pyproject.toml"
    check = next(a for i, a in builder if i == "RUN" and "--no-editable" in a)
    for svc in SERVICES:
        assert f"secmsg.{svc}" in check


def test_dockerignore_keeps_the_sources_and_drops_the_rest() -> None:
    for _, instrs in stages():
        for instr, args in instrs:
            if instr != "COPY" or "--from" in args:
                continue
            for src in [a for a in args.split() if not a.startswith("--")][:-1]:
                assert (ROOT / src).exists(), f"COPY source {src} missing"
                assert not dockerignored(src), f"COPY source {src} is excluded by .dockerignore"
    for kept in ("shared/secmsg/shared/crypto.py", "services/ingest/pyproject.toml", "uv.lock"):
        assert not dockerignored(kept), kept
    for dropped in (".env", ".venv/bin/python", ".git/HEAD", "tests/conftest.py",
                    "services/ingest/secmsg/ingest/__pycache__/x.pyc", "deploy/compose/tls/tls.key",
                    "docs/operations.md"):
        assert dockerignored(dropped), dropped


def test_lock_file_is_current_so_the_frozen_build_works() -> None:
    proc = subprocess.run(["uv", "lock", "--check", "--offline"], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("svc", SERVICES)
def test_service_entry_point_exists(svc: str) -> None:
    assert (ROOT / "services" / svc / "secmsg" / svc / "__init__.py").exists()
    assert importlib.util.find_spec(f"secmsg.{svc}") is not None
    assert importlib.util.find_spec(f"secmsg.{svc}.__main__") is not None, (
        f"`python -m secmsg.{svc}` (the image's command) needs secmsg/{svc}/__main__.py")


# --- the container health check --------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    status, tls = request.param
    handler = type("H", (_Handler,), {"status": status})
    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if tls:
        cert, key = ensure_cert(tmp_path / "tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield port
    srv.shutdown()
    srv.server_close()


def _run_check(env: dict[str, str]) -> int:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SECMSG_")}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env={**base, **env},
                          capture_output=True, timeout=30, check=False).returncode


@pytest.mark.parametrize(("health_server", "svc", "expected"), [
    ((200, False), "store", 0),
    ((503, False), "notify", 1),
    ((200, False), "retrieve", 0),  # the internal port is plain HTTP, even for retrieve
], indirect=["health_server"])
def test_healthcheck_reports_the_services_healthz(health_server: int, svc: str,
                                                 expected: int) -> None:
    env = {"SECMSG_SERVICE": svc, f"SECMSG_{svc.upper()}_INTERNAL_PORT": str(health_server),
           f"SECMSG_{svc.upper()}_PORT": str(free_port())}  # the public port is not asked
    if svc == "retrieve":
        env["SECMSG_RETRIEVE_TLS_CERT"] = "/run/secmsg/tls/tls.crt"
    assert _run_check(env) == expected


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert _run_check({"SECMSG_SERVICE": "ingest",
                       "SECMSG_INGEST_INTERNAL_PORT": str(free_port())}) == 1


def test_healthcheck_finds_the_service_from_the_process_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("secmsg_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    hc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hc)
    monkeypatch.delenv("SECMSG_SERVICE", raising=False)
    proc = tmp_path / "proc"
    for pid, argv in ((1, [b"/sbin/docker-init", b"--", b"python"]),
                      (7, [b"python", b"-m", b"secmsg.notify"])):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (proc / "self").mkdir()
    assert hc.find_service(proc) == "notify"
    (proc / "7" / "cmdline").write_bytes(b"python\0-m\0secmsg.other\0")
    assert hc.find_service(proc) is None
    assert hc.health_url("retrieve", {"SECMSG_RETRIEVE_TLS_CERT": "x"}) == (
        "http://127.0.0.1:9443/healthz")
    assert hc.health_url("store", {"SECMSG_STORE_INTERNAL_PORT": "9"}) == (
        "http://127.0.0.1:9/healthz")
