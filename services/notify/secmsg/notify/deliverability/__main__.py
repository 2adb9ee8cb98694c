"""``python -m secmsg.notify.deliverability``: bounce receiver + DNSBL monitor + health/metrics.

SIGTERM (or SIGINT) stops the HTTP server, closes the SMTP listener, lets reports being
recorded finish (``SECMSG_NOTIFY_DELIVERABILITY_GRACEFUL_S``), cancels a DNSBL check in progress,
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator

import uvicorn

from secmsg.notify.deliverability.app import Deliverability, make_http_app
from secmsg.notify.deliverability.settings import DeliverabilitySettings
from secmsg.shared import logs
from secmsg.shared.settings import CommonSettings


class _Server(uvicorn.Server):
    # uvicorn re-raises a captured SIGTERM once it has shut down; handled in main() instead.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def main() -> None:
    common, settings = CommonSettings(), DeliverabilitySettings()
    logs.setup("notify-deliverability", common.log_level)
    process = Deliverability(common, settings)
    server = _Server(uvicorn.Config(
        make_http_app(process), host=settings.deliverability_host,
        port=settings.deliverability_port, lifespan="off", access_log=False, log_config=None,
        log_level="warning"))

    def request_exit() -> None:
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_exit)
    await process.start()
    try:
        await server.serve()
    finally:
        await process.stop()


if __name__ == "__main__":
    asyncio.run(main())
