"""``python -m secmsg.store``: the worker plus its health/metrics HTTP port."""

from __future__ import annotations

import signal

import uvicorn

from secmsg.shared import logs
from secmsg.shared.settings import CommonSettings
from secmsg.store.app import create_app
from secmsg.store.settings import StoreSettings


def main() -> None:
    common = CommonSettings()
    cfg = StoreSettings()
    logs.setup("store", common.log_level)
    app = create_app(common, cfg)
    # uvicorn re-raises the signal it handled once shutdown is over; with a no-op handler
    # underneath, a drained shutdown exits 0 and only a real kill shows as a signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    # uvicorn turns SIGTERM into a lifespan shutdown: the broker then drains in-flight events.
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False,
                lifespan="on", timeout_graceful_shutdown=int(cfg.graceful_timeout_s) + 2)


if __name__ == "__main__":
    main()
