"""``python -m secmsg.toolbar``: the reference toolbar agent (see docs/toolbar.md).

    python -m secmsg.toolbar authorize --link <a notification's link> [IMAP options]
    python -m secmsg.toolbar status [--check]
    python -m secmsg.toolbar [run] [--once | --watch] [options]

``authorize`` gets a token through the device flow and keeps it, with the options given, in
the config directory (``config.py``); ``run`` (the default) replaces notifications; ``status``
says what a run would do. Every option can also come from ``SECMSG_TOOLBAR_<OPTION>`` (e.g.
``SECMSG_TOOLBAR_IMAP_HOST``): the command line wins, then the environment, then config.json.
Exit codes: 0 done, 1 some messages failed, 2 usage, 3 IMAP login refused, 4 IMAP server or
retrieve unreachable, 5 token refused (or, for authorize, denied or expired).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from secmsg.toolbar import agent
from secmsg.toolbar import authorize as device
from secmsg.toolbar.client import Retrieve
from secmsg.toolbar.config import ConfigDir, StoredToken, default_dir
from secmsg.toolbar.errors import (
    AgentError,
    ImapUnavailable,
    RetrieveUnavailable,
    TokenRefused,
    UsageError,
)
from secmsg.toolbar.mailbox import Mailbox

log = logging.getLogger("secmsg.toolbar")
ENV = "SECMSG_TOOLBAR_"
DEFAULT_PORTS = {"implicit": 993, "starttls": 143, "none": 143}
COMMANDS = ("run", "authorize", "status")
DEFAULTS: dict[str, Any] = {"imap_tls": "implicit", "mailbox": "INBOX", "poll_interval": 60.0}
EXIT_CODES = ("Exit codes: 0 done, 1 some messages failed (a later run retries), 2 usage, "
              "3 IMAP login refused, 4 IMAP server or retrieve unreachable, 5 token refused "
              "(authorize: denied or expired).")


def _env(name: str) -> str | None:
    return os.environ.get(ENV + name.upper().replace("-", "_"))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-dir", help="where authorize keeps the token and options "
                   "(default $XDG_CONFIG_HOME/secmsg-toolbar, else ~/.config/secmsg-toolbar)")
    p.add_argument("--retrieve-url", help="https://...")
    p.add_argument("--ca-file",
                   help="CA bundle for retrieve and the IMAP server (default: system CAs)")
    p.add_argument("--imap-host")
    p.add_argument("--imap-port", type=int)
    p.add_argument("--imap-tls", choices=("implicit", "starttls", "none"),
                   help="default implicit; none sends the password in clear: only for a local "
                        "test server")
    p.add_argument("--user", help="the IMAP login")
    p.add_argument("--password-file", help="a file holding the IMAP password")
    p.add_argument("--mailbox", help="default INBOX")
    p.add_argument("--verbose", action="store_true")


def parser(command: str = "run") -> argparse.ArgumentParser:
    if command == "authorize":
        p = argparse.ArgumentParser(
            prog="secmsg-toolbar authorize", epilog=EXIT_CODES,
            description="Connect this agent to your secure messages: prints a link and a code, "
                        "waits until you allow it in the browser, then keeps the token (0600) "
                        "and the options given here in the config directory.")
        _common(p)
        p.add_argument("--link", help="the link of any secure-message notification you "
                       "received (gives the server and your organisation)")
        p.add_argument("--tenant", dest="tenant_id", help="your organisation's id on the "
                       "server (with --retrieve-url, instead of --link)")
        p.add_argument("--client-name", help="how the connection is listed in the webmail")
        return p
    if command == "status":
        p = argparse.ArgumentParser(
            prog="secmsg-toolbar status",
            description="What a run would do: server, mailbox, token (never the secret), "
                        "last run.")
        _common(p)
        p.add_argument("--token-file")
        p.add_argument("--check", action="store_true",
                       help="also ask retrieve whether the token is still accepted")
        return p
    p = argparse.ArgumentParser(
        prog="secmsg-toolbar",
        description="Replace secure-message notifications in an IMAP mailbox with the real "
                    "messages fetched from retrieve. Commands: run (default), authorize, "
                    "status (see COMMAND --help).",
        epilog=EXIT_CODES)
    _common(p)
    p.add_argument("--token-file", help="a file holding an smt_... token with scope read "
                   "(default: the one authorize stored)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (default)")
    mode.add_argument("--watch", action="store_true",
                      help="keep going: IMAP IDLE if offered, else poll")
    p.add_argument("--poll-interval", type=float,
                   help="seconds between passes when watching (IDLE wakes up sooner; "
                        "default 60)")
    return p


def _resolve(args: argparse.Namespace, saved: dict[str, Any]) -> None:
    """Fill every unset option from the environment, then config.json, then the default."""
    for name, value in vars(args).items():
        if value is not None and value is not False:
            continue
        env = _env(name)
        if env is not None and name not in ("verbose", "once", "watch", "check"):
            setattr(args, name, env)
        elif name in saved:
            setattr(args, name, saved[name])
        elif name in DEFAULTS:
            setattr(args, name, DEFAULTS[name])
    if getattr(args, "imap_port", None) is not None:
        args.imap_port = int(args.imap_port)
    if getattr(args, "poll_interval", None) is not None:
        args.poll_interval = float(args.poll_interval)


def _secret(path: str | None, what: str) -> str:
    if not path:
        raise UsageError(f"--{what}-file is required")
    try:
        value = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} file: {exc.strerror}") from None
    if not value:
        raise UsageError(f"the {what} file is empty")
    return value


def _stored_token(cfg: ConfigDir, retrieve_url: str | None) -> StoredToken:
    stored = cfg.token()
    if stored is None:
        raise UsageError(f"no token in {cfg.path}: run `python -m secmsg.toolbar authorize` "
                         "first (or give --token-file)")
    if retrieve_url and stored.retrieve_url.rstrip("/") != retrieve_url.rstrip("/"):
        raise UsageError(f"the stored token is for {stored.retrieve_url}, not {retrieve_url}: "
                         "run authorize for this server")
    if stored.expired(datetime.now(UTC)):
        raise TokenRefused(f"the stored token expired on {stored.expires_at:%Y-%m-%d}: run "
                           "`python -m secmsg.toolbar authorize` again")
    return stored


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="secmsg-toolbar: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    args = parser(command).parse_args(argv)
    _logging(args.verbose)
    try:
        cfg = ConfigDir(Path(args.config_dir).expanduser() if args.config_dir
                        else default_dir())
        _resolve(args, cfg.options())
        if command == "authorize":
            return _authorize(args, cfg)
        if command == "status":
            return _status(args, cfg)
        return _run(args, cfg)
    except AgentError as exc:
        log.error("%s", exc.detail)
        return exc.exit_code


def _authorize(args: argparse.Namespace, cfg: ConfigDir) -> int:
    if args.link:
        target = device.target_from_link(args.link)
    elif args.retrieve_url and args.tenant_id:
        target = device.Target(retrieve_url=str(args.retrieve_url).rstrip("/"),
                               tenant_id=str(args.tenant_id))
    else:
        raise UsageError("give --link (the link of a notification you received), or "
                         "--retrieve-url and --tenant")
    try:
        token = device.run_flow(target=target, ca_file=args.ca_file,
                                client_name=args.client_name or device.default_client_name(),
                                scopes=["read"], out=sys.stdout)
    except KeyboardInterrupt:
        log.info("stopped; nothing was stored")
        return 2
    cfg.save_token(token)
    paths = {k: str(Path(v).expanduser().resolve()) for k in ("password_file", "ca_file")
             if (v := getattr(args, k))}
    cfg.save_options({**vars(args), **paths, "retrieve_url": target.retrieve_url,
                      "tenant_id": target.tenant_id})
    until = f"until {token.expires_at:%Y-%m-%d}" if token.expires_at else "with no expiry"
    print(f"Connected. Token {token.token_id} (scopes {', '.join(token.scopes)}) stored in "
          f"{cfg.file('token.json')}, valid {until}.\n"
          "Next: python -m secmsg.toolbar status, then python -m secmsg.toolbar run",
          flush=True)
    return agent.EXIT_OK


def _status(args: argparse.Namespace, cfg: ConfigDir) -> int:
    now = datetime.now(UTC)
    lines = [f"config:    {cfg.path}"]
    server = args.retrieve_url or "(not set: run authorize)"
    tenant = cfg.options().get("tenant_id")
    lines.append(f"server:    {server}" + (f" (organisation {tenant})" if tenant else ""))
    if args.imap_host and args.user:
        port = args.imap_port or DEFAULT_PORTS[args.imap_tls]
        tls = {"implicit": "TLS", "starttls": "STARTTLS", "none": "no TLS: test only"}
        lines.append(f"mailbox:   {args.mailbox} of {args.user} on {args.imap_host}:{port} "
                     f"({tls[args.imap_tls]}); password from "
                     f"{args.password_file or '(not set)'}")
    else:
        lines.append("mailbox:   (not set: give --imap-host and --user to authorize or run)")
    ok = bool(args.imap_host and args.user and args.password_file and args.retrieve_url)
    token_line, token = _token_status(args, cfg, now)
    lines.append(f"token:     {token_line}")
    ok = ok and token is not None
    if token is not None and args.check and args.retrieve_url:
        api = Retrieve(base_url=args.retrieve_url, token=token, ca_file=args.ca_file)
        try:
            api.check_token()
            lines.append("check:     retrieve accepts the token")
        except AgentError as exc:
            lines.append(f"check:     {exc.detail}")
            ok = False
        finally:
            api.close()
    state = cfg.state()
    if state:
        lines.append(f"last run:  {state.get('last_run_at')}: {state.get('summary')} "
                     f"(exit {state.get('exit_code')})")
    else:
        lines.append("last run:  never")
    if ok:
        lines.append(f"A run will look in {args.mailbox} for secure-message notifications, "
                     f"fetch each message from {args.retrieve_url} and put it in the "
                     "mailbox in place of its notification.")
    else:
        lines.append("A run cannot start yet: see the lines above.")
    print("\n".join(lines), flush=True)
    return agent.EXIT_OK if ok else 2


def _token_status(args: argparse.Namespace, cfg: ConfigDir,
                  now: datetime) -> tuple[str, str | None]:
    """One line about the token (never its secret) and the token itself if usable."""
    if args.token_file:
        try:
            return f"from {args.token_file}", _secret(args.token_file, "token")
        except UsageError as exc:
            return exc.detail, None
    try:
        stored = cfg.token()
    except UsageError as exc:
        return exc.detail, None
    if stored is None:
        return "missing: run `python -m secmsg.toolbar authorize`", None
    facts = (f"id {stored.token_id}, scopes {', '.join(stored.scopes)}, obtained "
             f"{stored.obtained_at:%Y-%m-%d %H:%M} UTC")
    if stored.expires_at is None:
        return f"present ({facts}, no expiry)", stored.access_token
    if stored.expired(now):
        return (f"EXPIRED on {stored.expires_at:%Y-%m-%d %H:%M} UTC ({facts}): run authorize "
                "again"), None
    days = (stored.expires_at - now).days
    return (f"present ({facts}, expires {stored.expires_at:%Y-%m-%d %H:%M} UTC, in {days} "
            "days)"), stored.access_token


def _run(args: argparse.Namespace, cfg: ConfigDir) -> int:
    for name in ("imap_host", "user", "retrieve_url"):
        if not getattr(args, name):
            raise UsageError(f"--{name.replace('_', '-')} is required (or run authorize with "
                             "it once)")
    password = _secret(args.password_file, "password")
    token = (_secret(args.token_file, "token") if args.token_file
             else _stored_token(cfg, args.retrieve_url).access_token)
    api = Retrieve(base_url=args.retrieve_url, token=token, ca_file=args.ca_file)
    port = args.imap_port or DEFAULT_PORTS[args.imap_tls]
    signal.signal(signal.SIGTERM, _on_term)
    box = Mailbox(host=args.imap_host, port=port, tls=args.imap_tls, ca_file=args.ca_file)
    try:
        api.check_token()  # a dead token stops us before the mailbox is touched
        box.connect(args.user, password)
        if not args.watch:
            summary = agent.run_once(box=box, api=api, mailbox=args.mailbox)
            _remember(cfg, summary)
            return summary.exit_code
        return _watch(box, api, args, password, cfg)
    except (_Stop, KeyboardInterrupt):
        log.info("stopped")
        return agent.EXIT_OK
    finally:
        box.close()
        api.close()


def _remember(cfg: ConfigDir, summary: agent.Summary) -> None:
    """For ``status``; only when the config directory is in use (never fails a run)."""
    if not cfg.path.is_dir():
        return
    try:
        cfg.save_state(at=datetime.now(UTC), exit_code=summary.exit_code,
                       summary=summary.line().removeprefix("run done: "))
    except OSError as exc:
        log.warning("cannot record the run in %s: %s", cfg.path, exc.strerror)


class _Stop(Exception):
    pass


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _watch(box: Mailbox, api: Retrieve, args: argparse.Namespace, password: str,
           cfg: ConfigDir) -> int:
    backoff = 1.0
    while True:
        try:
            if box.imap is None:
                box.connect(args.user, password)
            _remember(cfg, agent.run_once(box=box, api=api, mailbox=args.mailbox))
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
