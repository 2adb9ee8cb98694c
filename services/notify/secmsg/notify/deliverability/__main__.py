"""``python -m secmsg.notify.deliverability``: bounce receiver + DNSBL monitor + health/metrics.

SIGTERM (or SIGINT) stops the HTTP server, closes the SMTP listener, lets reports being
recorded finish (``SECMSG_NOTIFY_DELIVERABILITY_GRACEFUL_S``), cancels a DNSBL check in progress,
and the process exits 0.
"""

from __future__ import annotations

import asyncio

from secmsg.notify.deliverability.app import Deliverability, make_http_app
from secmsg.notify.deliverability.settings import DeliverabilitySettings
from secmsg.notify.probes import serve
from secmsg.shared import cli, logs
from secmsg.shared.settings import CommonSettings


async def main() -> None:
    common, settings = CommonSettings(), DeliverabilitySettings()
    logs.setup("notify-deliverability", common.log_level)
    process = Deliverability(common, settings)
    await serve(make_http_app(process), host=settings.deliverability_internal_host,
                port=settings.deliverability_internal_port, start=process.start,
                stop=process.stop)


if __name__ == "__main__":
    cli.parse_args("secmsg.notify.deliverability", __doc__, CommonSettings, DeliverabilitySettings)
    asyncio.run(main())
