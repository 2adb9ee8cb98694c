"""``python -m secmsg.notify``: the worker plus its health/metrics HTTP server.

SIGTERM (or SIGINT) stops the HTTP server, then the worker stops fetching and gives in-flight
events up to ``SECMSG_NOTIFY_GRACEFUL_TIMEOUT_S`` to finish; unfinished ones are redelivered.
"""

from __future__ import annotations

import asyncio

import uvicorn

from secmsg.notify.app import NotifyWorker, make_http_app
from secmsg.notify.settings import NotifySettings
from secmsg.shared import logs
from secmsg.shared.settings import CommonSettings


async def main() -> None:
    common, settings = CommonSettings(), NotifySettings()
    logs.setup("notify", common.log_level)
    worker = NotifyWorker(common, settings)
    server = uvicorn.Server(uvicorn.Config(
        make_http_app(worker), host=settings.host, port=settings.port, lifespan="off",
        access_log=False, log_config=None, log_level="warning"))
    await worker.start()
    try:
        await server.serve()
    finally:
        await worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
