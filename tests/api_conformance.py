"""Run schemathesis against a service started as a real process, for the API conformance tests
of ingest and retrieve (tests/ingest/test_api_conformance.py,
tests/retrieve/test_api_conformance.py).

Schemathesis runs as its own process (``schemathesis run``), the way CI would run it by hand:
it reads the OpenAPI document the running service serves, generates requests from it -- valid
ones and deliberately invalid ones -- in four phases (the schema's examples, boundary coverage,
random fuzzing, and stateful sequences that feed one answer's ids into the next request), and
checks every answer against the document:

* ``not_a_server_error``: no 5xx
* ``status_code_conformance``: the status code is one the operation documents
* ``content_type_conformance``: the Content-Type is the one documented for that status
* ``response_schema_conformance``: the body matches the documented schema

The budget is bounded (examples per operation, one worker, no shrinking) and the seed fixed
with deterministic generation, so a run is repeatable and takes about a minute per service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
SEED = 20261205


HOOKS = Path(__file__).with_name("api_conformance_hooks.py")


def run_schemathesis(base_url: str, *, token: str, report_dir: Path, max_examples: int,
                     spare_token: str = "", spare_ops: tuple[str, ...] = (),
                     keep_key_id: str = "", phases: tuple[str, ...] = PHASES,
                     timeout_s: float = 240, tls_verify: bool = True
                     ) -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` against ``base_url``'s own /openapi.json; the finished process.

    ``token`` authenticates every request; ``spare_ops`` (``"POST /v1/auth/logout"``) use
    ``spare_token`` instead; ``keep_key_id`` is an API key id the run must not revoke (see
    tests/api_conformance_hooks.py)."""
    args = [sys.executable, "-m", "schemathesis.cli", "run", f"{base_url}/openapi.json",
            "--checks", ",".join(CHECKS), "--phases", ",".join(phases),
            "--max-examples", str(max_examples), "--seed", str(SEED),
            "--generation-deterministic", "--no-shrink",
            "--workers", "1", "--request-timeout", "20", "--no-color",
            "--max-failures", "20", "--suppress-health-check", "all",
            "--report", "junit", "--report-dir", str(report_dir)]
    if not tls_verify:
        args += ["--tls-verify", "false"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS),
           "SECMSG_CONFORMANCE_TOKEN": token, "SECMSG_CONFORMANCE_SPARE_TOKEN": spare_token,
           "SECMSG_CONFORMANCE_SPARE_OPS": ";".join(spare_ops),
           "SECMSG_CONFORMANCE_KEEP_KEY_ID": keep_key_id}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env,
                          cwd=report_dir.parent, check=False, stdin=subprocess.DEVNULL)
