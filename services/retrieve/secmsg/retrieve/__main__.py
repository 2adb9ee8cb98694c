"""``python -m secmsg.retrieve``: HTTPS on SECMSG_RETRIEVE_PORT (plain HTTP only if allowed),
its probes (/healthz, /readyz, /metrics) as plain HTTP on SECMSG_RETRIEVE_INTERNAL_PORT (see
shared/httpserver.py)."""

from __future__ import annotations

import sys

from secmsg.retrieve.app import create_app
from secmsg.retrieve.settings import RetrieveSettings
from secmsg.shared import cli, httpserver, logs
from secmsg.shared.settings import CommonSettings


def main() -> int:
    cli.parse_args("secmsg.retrieve", __doc__, CommonSettings, RetrieveSettings)
    common = CommonSettings()
    settings = RetrieveSettings()
    logs.setup("retrieve", common.log_level)
    tls = settings.tls_cert is not None and settings.tls_key is not None
    if not tls and not settings.allow_plain_http:
        print("retrieve: SECMSG_RETRIEVE_TLS_CERT and SECMSG_RETRIEVE_TLS_KEY are required "
              "(or SECMSG_RETRIEVE_ALLOW_PLAIN_HTTP=true behind a TLS-terminating ingress)",
              file=sys.stderr)
        return 2
    app = create_app(common, settings)
    public = httpserver.public_config(
        app, settings, host=settings.host, port=settings.port,
        ssl_certfile=str(settings.tls_cert) if tls else None,
        ssl_keyfile=str(settings.tls_key) if tls else None,
        timeout_graceful_shutdown=settings.shutdown_grace_s, access_log=False)
    internal = httpserver.internal_config(app.state.probes, host=settings.internal_host,
                                          port=settings.internal_port)
    return 0 if httpserver.run(httpserver.serve(internal, public)) else 3


if __name__ == "__main__":
    sys.exit(main())
