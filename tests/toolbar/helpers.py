"""Helpers for the agent tests: a read token per the ``tokens`` contract, the agent as a real
process, and a look into the IMAP mailbox."""

from __future__ import annotations

import asyncio
import hashlib
import imaplib
import os
import re
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.imap import Dovecot
from secmsg.shared import mongo
from tests.toolbar.conftest import IMAP_PASSWORD, IMAP_USER


async def insert_token(db: Any, *, tenant_id: str, email: str,
                       scopes: tuple[str, ...] = ("read",)) -> tuple[str, str]:
    """(token, token_id), stored as retrieve stores them: only the sha256 of the token."""
    token_id = uuid.uuid4().hex
    token = f"smt_{token_id}_{secrets.token_urlsafe(32)}"
    await db[mongo.TOKENS].insert_one({
        "_id": hashlib.sha256(token.encode()).hexdigest(), "token_id": token_id,
        "tenant_id": tenant_id, "email": email.lower(), "scopes": list(scopes),
        "client": "toolbar", "label": "test", "created_at": datetime.now(UTC),
        "expires_at": None, "last_used_at": None, "revoked_at": None})
    return token, token_id


@dataclass
class Agent:
    dovecot: Dovecot
    retrieve_url: str
    ca_file: Path
    workdir: Path
    token: str
    password: str = IMAP_PASSWORD

    def argv(self, *extra: str) -> list[str]:
        (self.workdir / "password").write_text(self.password + "\n")
        (self.workdir / "token").write_text(self.token + "\n")
        return [sys.executable, "-m", "secmsg.toolbar",
                "--imap-host", "127.0.0.1", "--imap-port", str(self.dovecot.port),
                "--imap-tls", "none", "--user", IMAP_USER,
                "--password-file", str(self.workdir / "password"),
                "--retrieve-url", self.retrieve_url, "--token-file", str(self.workdir / "token"),
                "--ca-file", str(self.ca_file), *extra]

    async def run(self, *extra: str, env: dict[str, str] | None = None,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, self.argv(*extra), capture_output=True, text=True,
            timeout=timeout, env={**os.environ, **(env or {})}, check=False)

    def start(self, *extra: str) -> subprocess.Popen[str]:
        """The agent as a long-running process (``--watch``); stderr merged into stdout."""
        return subprocess.Popen(self.argv(*extra), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)


class Box:
    """A test's own IMAP session on the mailbox the agent works on."""

    def __init__(self, dovecot: Dovecot):
        self.imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
        self.imap.login(IMAP_USER, IMAP_PASSWORD)
        self.imap.select("INBOX")

    def append(self, raw: bytes, flags: str = "(\\Seen $Important)",
               date: str = '"15-Mar-2021 10:00:00 +0000"') -> None:
        typ, _ = self.imap.append("INBOX", flags, date, raw)
        assert typ == "OK"

    def search(self, *criteria: str) -> list[str]:
        self.imap.noop()  # see what other sessions changed
        typ, data = self.imap.uid("SEARCH", *criteria)
        assert typ == "OK"
        return data[0].decode().split() if data and data[0] else []

    def all(self) -> list[str]:
        return self.search("ALL")

    def meta(self, uid: str) -> tuple[set[str], str]:
        typ, data = self.imap.uid("FETCH", uid, "(FLAGS INTERNALDATE)")
        assert typ == "OK" and isinstance(data[0], bytes)
        flags = re.search(rb"FLAGS \(([^)]*)\)", data[0])
        date = re.search(rb'INTERNALDATE "([^"]+)"', data[0])
        assert flags and date
        return set(flags[1].decode().split()), date[1].decode()

    def raw(self, uid: str) -> bytes:
        typ, data = self.imap.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK"
        part = data[0]
        assert isinstance(part, tuple)
        return part[1]

    def close(self) -> None:
        self.imap.logout()
