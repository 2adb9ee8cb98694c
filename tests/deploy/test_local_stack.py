"""What a newcomer meets first: ``./scripts/run``'s platform (``python -m devstack.run``) as a
real process tree (the ``local_stack`` fixture of tests/conftest.py), then the README's
walk-through against the addresses it wrote.

It listens on loopback only (every listening socket of the tree), writes the ports it really
uses to ``.run/urls.env`` (and removes the file when it stops), and both APIs serve ``/docs``.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request

import psutil
import pytest

from tests.local_stack import ROOT, LocalStack, read_env_file

pytestmark = pytest.mark.timeout(300)


def test_everything_listens_on_loopback_only(local_stack: LocalStack) -> None:
    urls, root = local_stack.urls, local_stack.process
    tree = [root, *root.children(recursive=True)]
    listening = [(p.name(), c.laddr) for p in tree for c in p.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    # the services, the sink and the three servers: well over a dozen sockets
    assert len(listening) >= 10, listening
    assert all(addr.ip in ("127.0.0.1", "::1") for _, addr in listening), listening
    ports = {addr.port for _, addr in listening}
    for key in ("INGEST_URL", "RETRIEVE_URL", "NATS_URL", "MONGO_URL", "S3_URL",
                "STORE_INTERNAL_URL", "RETRIEVE_INTERNAL_URL"):
        port = int(urls[key].rsplit(":", 1)[1])
        assert port in ports, f"{key}={urls[key]} is not where the stack listens"


def test_both_apis_serve_their_docs(local_stack: LocalStack) -> None:
    urls = local_stack.urls
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for base in (urls["INGEST_URL"], urls["RETRIEVE_URL"]):
        with urllib.request.urlopen(base + "/docs", context=ctx, timeout=20) as r:
            page = r.read().decode()
            csp = r.headers.get("content-security-policy", "")
        assert "SwaggerUIBundle" in page and "/openapi.json" in page
        with urllib.request.urlopen(base + "/openapi.json", context=ctx, timeout=20) as r:
            assert json.load(r)["paths"]
    # retrieve's strict CSP still holds there: its one inline script runs by hash only
    assert "'unsafe-inline'" not in csp and "'sha256-" in csp and "connect-src 'self'" in csp


def test_the_readme_walk_through_runs_as_written(local_stack: LocalStack) -> None:
    run_dir = local_stack.run_dir
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Walk a message through by hand", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert not re.search(r"127\.0\.0\.1:(8080|8443)", block), "hard-coded ports"
    # The submission, exactly as written (first command up to its "# ->" answer), run from
    # the checkout with .run/ pointing at this test's stack.
    submit = block.split("# -> 202", 1)[0].replace(".run/", f"{run_dir}/")
    proc = subprocess.run(["bash", "-euc", submit.rstrip() + ' -o /dev/null -w "%{http_code}"'],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("202"), proc.stdout


def test_the_compose_walk_through_makes_a_working_api_key(local_stack: LocalStack) -> None:
    """docs/operations.md's laptop steps cannot run here (no Docker daemon), but its tenant
    and API-key program can: exactly as written, against the local stack's MongoDB, then the
    key sends a message through ingest."""
    ops = (ROOT / "docs" / "operations.md").read_text()
    section = ops.split("### On a laptop, step by step", 1)[1].split("\n## ", 1)[0]
    program = section.split('docker compose exec -T ingest python -c "', 1)[1].split('")', 1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECMSG_")}
    env |= read_env_file(local_stack.run_dir / "secrets.env")
    env["SECMSG_MONGO_URL"] = local_stack.urls["MONGO_URL"]
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    assert key and "\n" not in key, proc.stdout
    envelope = json.dumps({"from": "alice@demo.example", "to": ["bob@example.org"],
                           "subject": "Hello", "text": "Secret"})
    boundary = "----opsdoc"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n"
            f"Content-Type: application/json\r\n\r\n{envelope}\r\n--{boundary}--\r\n").encode()
    req = urllib.request.Request(local_stack.urls["INGEST_URL"] + "/v1/messages", data=body,
                                 method="POST", headers={
                                     "Authorization": f"Bearer {key}",
                                     "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 202 and json.load(r)["message_id"]
