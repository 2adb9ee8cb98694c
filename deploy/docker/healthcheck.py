"""Container HEALTHCHECK: GET /healthz of the secmsg service running in this container.

One image runs any of the four services, so the check finds which one from the process list
(``python -m secmsg.<svc>``, PID 1 or a child of an init) unless ``SECMSG_SERVICE`` names it,
then asks its internal port (``SECMSG_<SVC>_INTERNAL_PORT``, plain HTTP on loopback: the
probes are never on the public port). Standard library only; exit 0 = healthy.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.request
from pathlib import Path

# The internal ports' defaults (the settings' internal_port).
DEFAULT_PORTS = {"ingest": 9080, "store": 8081, "notify": 8082, "retrieve": 9443,
                 "notify.deliverability": 8083}
_MODULE_RE = re.compile(
    r"^secmsg\.(ingest|store|notify\.deliverability|notify|retrieve)(\.__main__)?$")


def find_service(proc: Path = Path("/proc")) -> str | None:
    named = os.environ.get("SECMSG_SERVICE", "").strip().lower()
    if named in DEFAULT_PORTS:
        return named
    try:
        entries = sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    except OSError:
        return None
    for entry in entries:
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg == b"-m":
                m = _MODULE_RE.match(argv[i + 1].decode(errors="replace"))
                if m:
                    return m.group(1)
    return None


def health_url(service: str, env: dict[str, str]) -> str:
    name = service.upper().replace(".", "_")
    port = env.get(f"SECMSG_{name}_INTERNAL_PORT") or str(DEFAULT_PORTS[service])
    return f"http://127.0.0.1:{port}/healthz"


def check(url: str, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - fixed local URL
            return bool(r.status == 200)
    except Exception:  # any failure means "not healthy"
        return False


def main() -> int:
    service = find_service()
    if service is None:
        print("healthcheck: no secmsg service process found", file=sys.stderr)
        return 1
    url = health_url(service, dict(os.environ))
    if check(url):
        return 0
    print(f"healthcheck: {service} not healthy at {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
