"""schemathesis hooks for the API conformance runs (loaded by ``schemathesis run`` through
``SCHEMATHESIS_HOOKS``; configured by the environment tests/api_conformance.py sets).

* credentials: every request carries ``SECMSG_CONFORMANCE_TOKEN`` as a bearer token, except
  the operations named in ``SECMSG_CONFORMANCE_SPARE_OPS`` (``METHOD /path`` separated by
  ``;``), which get ``SECMSG_CONFORMANCE_SPARE_TOKEN`` -- so signing out (retrieve) ends a
  second session, not the one the rest of the run needs;
* ``SECMSG_CONFORMANCE_KEEP_KEY_ID``: the run never revokes the API key it authenticates with
  (ingest lists its keys, and schemathesis feeds listed ids into ``DELETE``: that id is
  swapped for an unknown one, which still exercises the 404);
* ``message/rfc822`` bodies go on the wire as the bytes generated (schemathesis has no
  serializer of its own for that media type).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

TOKEN = os.environ.get("SECMSG_CONFORMANCE_TOKEN", "")
SPARE_TOKEN = os.environ.get("SECMSG_CONFORMANCE_SPARE_TOKEN", "")
SPARE_OPS = {op.strip() for op in os.environ.get("SECMSG_CONFORMANCE_SPARE_OPS", "").split(";")
             if op.strip()}
KEEP_KEY_ID = os.environ.get("SECMSG_CONFORMANCE_KEEP_KEY_ID", "")

schemathesis.serializer.alias("message/rfc822", "application/octet-stream")


@schemathesis.auth(refresh_interval=None, retry_on=[])
class Bearer:
    def get(self, case: Any, ctx: Any) -> str:
        label = f"{case.method.upper()} {case.operation.path}"
        return SPARE_TOKEN if label in SPARE_OPS else TOKEN

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
        # Applied to every call of every phase (generated, explicit or taken from a link).
        if (KEEP_KEY_ID and case.operation.path == "/v1/admin/api-keys/{key_id}"
                and (case.path_parameters or {}).get("key_id") == KEEP_KEY_ID):
            case.path_parameters = {**case.path_parameters, "key_id": "0" * len(KEEP_KEY_ID)}
