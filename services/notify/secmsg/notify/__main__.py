"""``python -m secmsg.notify``: the worker plus its probes (/healthz, /readyz, /metrics) on
``SECMSG_NOTIFY_INTERNAL_PORT``.

SIGTERM (or SIGINT) stops the HTTP server, then the worker stops fetching and gives in-flight
events up to ``SECMSG_NOTIFY_GRACEFUL_TIMEOUT_S`` to finish (unfinished ones are redelivered),
and the process exits 0.
"""

from __future__ import annotations

from secmsg.notify import observability
from secmsg.notify.app import NotifyWorker, make_http_app
from secmsg.notify.probes import serve
from secmsg.notify.settings import NotifySettings
from secmsg.shared import cli, httpserver, logs
from secmsg.shared.settings import CommonSettings


async def main() -> None:
    common, settings = CommonSettings(), NotifySettings()
    logs.setup("notify", common.log_level)
    worker = NotifyWorker(common, settings)
    obs = observability.attach(worker)

    async def start() -> None:
        await worker.start()
        await obs.start()

    async def stop() -> None:
        await obs.stop()
        await worker.stop()

    await serve(make_http_app(worker), host=settings.internal_host,
                port=settings.internal_port,
                start=start, stop=stop)


if __name__ == "__main__":
    cli.parse_args("secmsg.notify", __doc__, CommonSettings, NotifySettings)
    httpserver.run(main())
