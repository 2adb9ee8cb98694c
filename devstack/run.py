"""The whole platform on this machine: real servers, the four services, a demo tenant.

    ./scripts/run            (installs what is missing, then runs this)

State lives in ``.run/`` (server data, captured mail, logs, the dev keyring and the demo API
key), so a second start reuses it and is up in seconds. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from devstack import dkim
from devstack.servers import free_port, say, start_stack
from devstack.services import ServiceProc
from devstack.smtp_sink import Sink
from devstack.tls import ensure_cert

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = {"nats": 4222, "mongo": 27017, "s3": 9000, "smtp": 2525, "ingest": 8080,
                 "store": 8081, "notify": 8082, "retrieve": 8443,
                 "notify.deliverability": 8083, "bounces": 2526,
                 # the internal ports (/healthz, /readyz, /metrics) of the two public services
                 "ingest.internal": 9080, "retrieve.internal": 9443}


# Where the running stack really listens (a taken default port is replaced by a free one), as
# shell assignments: `. .run/urls.env` (README walk-through); removed when the stack stops.
URLS_FILE = "urls.env"


def _write_urls(path: Path, urls: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in urls.items()))
    tmp.replace(path)  # a reader never sees half a file


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _secrets(run_dir: Path) -> dict[str, str]:
    """Development secrets, made once and kept so old messages stay readable."""
    from secmsg.shared.crypto import KeyRing

    path = run_dir / "secrets.env"
    if not path.exists():
        import secrets

        path.write_text(f"SECMSG_KEYRING={KeyRing.generate_spec(1)}\n"
                        f"SECMSG_RETRIEVE_CODE_PEPPER={secrets.token_urlsafe(32)}\n")
        path.chmod(0o600)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


async def _demo_tenant(env: dict[str, str], run_dir: Path) -> str:
    from secmsg.ingest.admin import create_api_key, create_tenant
    from secmsg.shared.mongo import make_client
    from secmsg.shared.settings import CommonSettings

    key_file = run_dir / "demo-api-key"
    # Field values as strings: pydantic-settings parses them as it would the environment.
    fields: dict[str, Any] = {k[len("SECMSG_"):].lower(): v for k, v in env.items()
                              if k.startswith("SECMSG_") and k[7:].lower()
                              in CommonSettings.model_fields}
    settings = CommonSettings(**fields)
    client = make_client(settings)
    try:
        db = client[settings.mongo_db]
        await create_tenant(db, tenant_id="demo", name="Demo Organisation",
                            footer="Sent by Demo Organisation of 1 Example Street, "
                                   "Springfield, Call: (555) 555-0100",
                            disclaimers=["This message is confidential."])
        if key_file.exists():
            key = key_file.read_text().strip()
            if await db["api_keys"].find_one({"tenant_id": "demo", "revoked_at": None}):
                return key
        key = await create_api_key(db, tenant_id="demo", label="demo")
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        return key
    finally:
        await client.close()


def main() -> None:
    # Ctrl-C must stop everything even when started from a shell that ignores SIGINT for
    # background jobs (Python then inherits SIG_IGN and never raises KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ap = argparse.ArgumentParser(description="Run secmsg locally on loopback")
    ap.add_argument("--dir", type=Path, default=ROOT / ".run")
    args = ap.parse_args()
    run_dir: Path = args.dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    t0 = time.monotonic()

    ports = {k: _port(v) for k, v in DEFAULT_PORTS.items()}
    say("starting NATS (JetStream), FerretDB (MongoDB wire) and versitygw (S3)...")
    stack = start_stack(run_dir / "servers", ports={k: ports[k] for k in ("nats", "mongo", "s3")})
    mail_dir = run_dir / "mail"
    sink = Sink(ports["smtp"], mail_dir)
    sink.start()
    cert, key = ensure_cert(run_dir / "tls")
    retrieve_url = f"https://127.0.0.1:{ports['retrieve']}"
    env = {**stack.env(), **_secrets(run_dir),
           "SECMSG_ENVIRONMENT": "development",
           "SECMSG_SMTP_HOST": "127.0.0.1", "SECMSG_SMTP_PORT": str(ports["smtp"]),
           "SECMSG_SMTP_TLS": "none",
           "SECMSG_RETRIEVE_PUBLIC_URL": retrieve_url,
           "SECMSG_RETRIEVE_TLS_CERT": str(cert), "SECMSG_RETRIEVE_TLS_KEY": str(key),
           # signed with a platform DKIM key made once in .run/dkim/, From, Message-ID and
           # envelope sender aligned (devstack/dkim.py); bounce reports (RFC 3464) for
           # notifications come back to the local receiver
           **dkim.env(run_dir),
           "SECMSG_NOTIFY_BOUNCE_HOST": "127.0.0.1",
           "SECMSG_NOTIFY_BOUNCE_PORT": str(ports["bounces"]),
           # the webmail sends secure replies through ingest
           "SECMSG_RETRIEVE_INGEST_URL": f"http://127.0.0.1:{ports['ingest']}"}
    # ingest before retrieve (the webmail's replies); the deliverability process (bounce
    # receiver + DNSBL monitor) is the notify package's singleton.
    # Each service connects to NATS as its own user, with only its permissions.
    procs = [ServiceProc(name, {**env, **stack.nats.service_env(name)},
                         run_dir / "logs" / f"{name}.log", ports[name],
                         tls=(name == "retrieve"),
                         internal_port=ports.get(f"{name}.internal", ports[name]))
             for name in ("store", "notify", "notify.deliverability", "ingest", "retrieve")]
    by_name = {p.name: p for p in procs}
    stopping = False

    def shutdown(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        say("stopping services and servers...")
        for p in reversed(procs):
            p.stop()
        sink.stop()
        stack.stop()
        (run_dir / URLS_FILE).unlink(missing_ok=True)  # nothing listens there any more
        say("stopped.")

    try:
        for p in procs:
            say(f"starting {p.name} on {p.base_url} ...")
            p.start(timeout=60)
        api_key = asyncio.run(_demo_tenant(env, run_dir))
        urls = {"INGEST_URL": by_name["ingest"].base_url, "RETRIEVE_URL": retrieve_url,
                **{f"{p.name.upper().replace('.', '_')}_INTERNAL_URL": p.internal_url
                   for p in procs},
                "NATS_URL": f"nats://127.0.0.1:{ports['nats']}",
                "MONGO_URL": f"mongodb://127.0.0.1:{ports['mongo']}",
                "S3_URL": f"http://127.0.0.1:{ports['s3']}",
                "SMTP_SINK": f"127.0.0.1:{ports['smtp']}",
                "BOUNCES_SMTP": f"127.0.0.1:{ports['bounces']}",
                "MAIL_DIR": str(mail_dir)}
        _write_urls(run_dir / URLS_FILE, urls)
    except BaseException:
        shutdown()
        raise

    print(f"""
secmsg is running (up in {time.monotonic() - t0:.1f}s). Ctrl-C stops everything.

  ingest    {by_name['ingest'].base_url}    (OpenAPI: {by_name['ingest'].base_url}/docs)
  retrieve  {retrieve_url}   (OpenAPI: {retrieve_url}/docs; self-signed certificate: {cert})
            Secure Message Center: open the link in a notification in {mail_dir}
  probes    /healthz /readyz /metrics of each service (loopback only):
            ingest {by_name['ingest'].internal_url}   retrieve {by_name['retrieve'].internal_url}
            store {by_name['store'].internal_url}   notify {by_name['notify'].internal_url}
            deliverability {by_name['notify.deliverability'].internal_url}
  bounces   smtp://127.0.0.1:{ports['bounces']} (bounce receiver)
  NATS      nats://127.0.0.1:{ports['nats']}   (a user per service; admin's password and the \
others in {stack.base / 'nats' / 'nats.passwords.json'})
  MongoDB-wire mongodb://127.0.0.1:{ports['mongo']}
  S3        http://127.0.0.1:{ports['s3']}   (bucket secmsg)
  SMTP sink 127.0.0.1:{ports['smtp']} -> captured mail as .eml files in {mail_dir}
  logs      {run_dir / 'logs'}

  demo tenant: demo     API key: {api_key}
  these addresses as shell variables: . {run_dir / URLS_FILE}

Send a secure message:
  curl -sS {by_name['ingest'].base_url}/v1/messages -H "Authorization: Bearer {api_key}" \\
    -F 'envelope={{"from":"alice@demo.example","to":["bob@example.org"],'\\
'"subject":"Hello","text":"Secret"}};type=application/json' \\
    -F attachment=@README.md
""", flush=True)

    def on_sigterm(*_: object) -> None:
        shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while True:
            time.sleep(1)
            for p in procs:
                if not p.running and not stopping:
                    say(f"{p.name} exited; restarting (log: {p.log_path})")
                    p.start(timeout=60)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
