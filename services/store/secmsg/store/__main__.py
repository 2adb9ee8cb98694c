"""``python -m secmsg.store``: the worker plus its probes (/healthz, /readyz, /metrics) on
``SECMSG_STORE_INTERNAL_PORT`` (see shared/httpserver.py)."""

from __future__ import annotations

import sys

from secmsg.shared import cli, httpserver, logs
from secmsg.shared.settings import CommonSettings
from secmsg.store.app import create_app
from secmsg.store.settings import StoreSettings


def main() -> int:
    cli.parse_args("secmsg.store", __doc__, CommonSettings, StoreSettings)
    common = CommonSettings()
    cfg = StoreSettings()
    logs.setup("store", common.log_level)
    app = create_app(common, cfg)
    # The lifespan runs the broker: on SIGTERM it drains in-flight events, then exits 0.
    internal = httpserver.internal_config(
        app, host=cfg.internal_host, port=cfg.internal_port, lifespan="on",
        timeout_graceful_shutdown=int(cfg.graceful_timeout_s) + 2)
    return 0 if httpserver.run(httpserver.serve(internal)) else 3


if __name__ == "__main__":
    sys.exit(main())
