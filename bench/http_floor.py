"""The HTTP part of a submission with nothing of secmsg in it: ``bench.cost``'s floor.

A bare ASGI app that reads the whole request body and answers ``202`` with a message id,
served the way the services serve (uvicorn, httptools, uvloop, no access log). What a
server must spend to accept a small ``multipart/form-data`` POST at all; ``bench.cost``
reads this process's CPU time while it posts the same requests it posts to ingest.

    python -m bench.http_floor --port 8099
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import uvicorn
import uvloop


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"message_id":"' + os.urandom(16).hex().encode() + b'"}'
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, http="httptools",
                            lifespan="off", access_log=False, log_config=None,
                            server_header=False)
    uvloop.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
