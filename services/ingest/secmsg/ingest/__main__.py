"""``python -m secmsg.ingest``: the ingest API on ``SECMSG_INGEST_PORT`` and its probes
(/healthz, /readyz, /metrics) on ``SECMSG_INGEST_INTERNAL_PORT`` (see shared/httpserver.py).

SIGTERM: uvicorn stops accepting, lets in-flight submissions finish for up to
``SECMSG_INGEST_SHUTDOWN_GRACE_S`` (inside Kubernetes' default 30 s grace), then shuts down;
the probes answer until then.
"""

from __future__ import annotations

import sys

from secmsg.ingest.app import create_app
from secmsg.ingest.settings import IngestSettings
from secmsg.shared import cli, httpserver, logs
from secmsg.shared.settings import CommonSettings


def main() -> int:
    cli.parse_args("secmsg.ingest", __doc__, CommonSettings, IngestSettings)
    common = CommonSettings()
    cfg = IngestSettings()
    logs.setup("ingest", common.log_level)
    app = create_app(common, cfg)
    public = httpserver.public_config(
        app, cfg, host=cfg.host, port=cfg.port,
        timeout_graceful_shutdown=int(cfg.shutdown_grace_s) or None)
    internal = httpserver.internal_config(app.state.probes, host=cfg.internal_host,
                                          port=cfg.internal_port)
    return 0 if httpserver.run(httpserver.serve(internal, public)) else 3


if __name__ == "__main__":
    sys.exit(main())
