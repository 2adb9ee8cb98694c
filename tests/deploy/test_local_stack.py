"""What a newcomer meets first: ``./scripts/run``'s platform (``python -m devstack.run``) as a
real process tree (the ``local_stack`` fixture of tests/conftest.py), then the README's
walk-through against the addresses it wrote.

It listens on loopback only (every listening socket of the tree), writes the ports it really
uses to ``.run/urls.env`` (and removes the file when it stops), and both APIs serve ``/docs``.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.request

import psutil
import pytest

from tests.local_stack import ROOT, LocalStack

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
