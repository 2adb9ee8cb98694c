"""``python -m secmsg.toolbar``: the reference toolbar agent (see docs/toolbar.md).

Every option can also come from ``SECMSG_TOOLBAR_<OPTION>`` (e.g. ``SECMSG_TOOLBAR_IMAP_HOST``);
the command line wins. Exit codes: 0 done, 1 some messages failed, 2 usage, 3 IMAP login
refused, 4 IMAP server or retrieve unreachable, 5 token refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from secmsg.toolbar import agent
from secmsg.toolbar.client import Retrieve
from secmsg.toolbar.errors import AgentError, ImapUnavailable, RetrieveUnavailable, UsageError
from secmsg.toolbar.mailbox import Mailbox

log = logging.getLogger("secmsg.toolbar")
ENV = "SECMSG_TOOLBAR_"
DEFAULT_PORTS = {"implicit": 993, "starttls": 143, "none": 143}


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV + name.upper().replace("-", "_"), default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="secmsg-toolbar",
        description="Replace secure-message notifications in an IMAP mailbox with the real "
                    "messages fetched from retrieve.",
        epilog="Exit codes: 0 done, 1 some messages failed (a later run retries), 2 usage, "
               "3 IMAP login refused, 4 IMAP server or retrieve unreachable, 5 token refused.")
    p.add_argument("--imap-host", default=_env("imap_host"))
    p.add_argument("--imap-port", type=int, default=_env("imap_port"))
    p.add_argument("--imap-tls", choices=("implicit", "starttls", "none"),
                   default=_env("imap_tls", "implicit"),
                   help="none sends the password in clear: only for a local test server")
    p.add_argument("--user", default=_env("user"))
    p.add_argument("--password-file", default=_env("password_file"))
    p.add_argument("--retrieve-url", default=_env("retrieve_url"), help="https://...")
    p.add_argument("--token-file", default=_env("token_file"),
                   help="a file holding an smt_... token with scope read")
    p.add_argument("--mailbox", default=_env("mailbox", "INBOX"))
    p.add_argument("--ca-file", default=_env("ca_file"),
                   help="CA bundle for retrieve and the IMAP server (default: system CAs)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (default)")
    mode.add_argument("--watch", action="store_true",
                      help="keep going: IMAP IDLE if offered, else poll")
    p.add_argument("--poll-interval", type=float,
                   default=float(_env("poll_interval", "60") or 60),
                   help="seconds between passes when watching (IDLE wakes up sooner)")
    p.add_argument("--verbose", action="store_true")
    return p


def _secret(path: str | None, what: str) -> str:
    if not path:
        raise UsageError(f"--{what}-file is required")
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} file: {exc.strerror}") from None
    if not value:
        raise UsageError(f"the {what} file is empty")
    return value


class _Stop(Exception):
    pass


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def run(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="secmsg-toolbar: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        for name in ("imap_host", "user", "retrieve_url"):
            if not getattr(args, name):
                raise UsageError(f"--{name.replace('_', '-')} is required")
        password = _secret(args.password_file, "password")
        token = _secret(args.token_file, "token")
        api = Retrieve(base_url=args.retrieve_url, token=token, ca_file=args.ca_file)
    except AgentError as exc:
        log.error("%s", exc.detail)
        return exc.exit_code
    port = args.imap_port or DEFAULT_PORTS[args.imap_tls]
    signal.signal(signal.SIGTERM, _on_term)
    box = Mailbox(host=args.imap_host, port=port, tls=args.imap_tls, ca_file=args.ca_file)
    try:
        api.check_token()  # a dead token stops us before the mailbox is touched
        box.connect(args.user, password)
        if not args.watch:
            return agent.run_once(box=box, api=api, mailbox=args.mailbox).exit_code
        return _watch(box, api, args, password)
    except AgentError as exc:
        log.error("%s", exc.detail)
        return exc.exit_code
    except (_Stop, KeyboardInterrupt):
        log.info("stopped")
        return agent.EXIT_OK
    finally:
        box.close()
        api.close()


def _watch(box: Mailbox, api: Retrieve, args: argparse.Namespace, password: str) -> int:
    backoff = 1.0
    while True:
        try:
            if box.imap is None:
                box.connect(args.user, password)
            agent.run_once(box=box, api=api, mailbox=args.mailbox)
            backoff = 1.0
            if not box.idle(min(args.poll_interval, 25 * 60)):  # IDLE: re-issue < 29 min
                time.sleep(args.poll_interval)
        except (ImapUnavailable, RetrieveUnavailable) as exc:
            # Watching outlives outages: reconnect with back-off instead of exiting.
            log.warning("%s; retrying in %.0f s", exc.detail, backoff)
            box.close()
            time.sleep(backoff)
            backoff = min(backoff * 2, 300.0)


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
