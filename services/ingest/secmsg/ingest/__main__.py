"""``python -m secmsg.ingest``: serve the ingest API with uvicorn on ``SECMSG_INGEST_PORT``.

SIGTERM: uvicorn stops accepting, lets in-flight submissions finish for up to
``SECMSG_INGEST_SHUTDOWN_GRACE_S`` (inside Kubernetes' default 30 s grace), then shuts down.
"""

from __future__ import annotations

import uvicorn

from secmsg.ingest.app import create_app
from secmsg.ingest.settings import IngestSettings
from secmsg.shared import logs
from secmsg.shared.settings import CommonSettings


def main() -> None:
    common = CommonSettings()
    cfg = IngestSettings()
    logs.setup("ingest", common.log_level)
    uvicorn.run(create_app(common, cfg), host=cfg.host, port=cfg.port, log_config=None,
                timeout_graceful_shutdown=int(cfg.shutdown_grace_s) or None,
                proxy_headers=True, server_header=False)


if __name__ == "__main__":
    main()
