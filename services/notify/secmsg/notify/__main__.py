"""``python -m secmsg.notify``: the worker plus its health/metrics HTTP server.

SIGTERM (or SIGINT) stops the HTTP server, then the worker stops fetching and gives in-flight
events up to ``SECMSG_NOTIFY_GRACEFUL_TIMEOUT_S`` to finish (unfinished ones are redelivered),
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator

import uvicorn

from secmsg.notify import observability
from secmsg.notify.app import NotifyWorker, make_http_app
from secmsg.notify.settings import NotifySettings
from secmsg.shared import logs
from secmsg.shared.settings import CommonSettings


class _Server(uvicorn.Server):
    # uvicorn re-raises a captured SIGTERM once it has shut down, which would kill the
    # process before the worker drains; the signals are handled in main() instead.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def main() -> None:
    common, settings = CommonSettings(), NotifySettings()
    logs.setup("notify", common.log_level)
    worker = NotifyWorker(common, settings)
    obs = observability.attach(worker)
    server = _Server(uvicorn.Config(
        make_http_app(worker), host=settings.host, port=settings.port, lifespan="off",
        access_log=False, log_config=None, log_level="warning"))

    def request_exit() -> None:
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_exit)
    await worker.start()
    await obs.start()
    try:
        await server.serve()
    finally:
        await obs.stop()
        await worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
