"""The IMAP side of the agent, on the standard library's ``imaplib``: connect (implicit TLS,
STARTTLS or -- only when asked for -- plain), find notifications, append, delete, idle."""

from __future__ import annotations

import contextlib
import imaplib
import re
import select
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message

from secmsg.toolbar.errors import ImapLoginFailed, ImapUnavailable

ID_RE = re.compile(r"^[0-9a-f]{32}$")
_BODY_ID_RE = re.compile(r"(?:Secure-Message-Id:\s*|data-secure-message-id=\")([0-9a-f]{32})\b")
_FETCH_RE = re.compile(rb"FLAGS \(([^)]*)\)|INTERNALDATE (\"[^\"]+\")|RFC822\.SIZE (\d+)")
RETRIEVED = "X-Secure-Message-Retrieved"
MARKER = "X-Secure-Message-Id"
# A notification or placeholder is small; anything larger is not one we confirm.
MAX_NOTIFICATION_BYTES = 2 * 1024 * 1024


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Placeholder:
    uid: str
    message_id: str
    flags: tuple[str, ...]
    internaldate: str  # quoted, as the server gave it: handed back to APPEND unchanged

    @property
    def deleted(self) -> bool:
        return "\\Deleted" in self.flags


def confirmed_id(raw: bytes) -> str | None:
    """The message id if header and body markers agree (our own appended copies, which carry
    ``X-Secure-Message-Retrieved``, never count)."""
    msg: Message = message_from_bytes(raw, policy=email_policy.default)
    if msg.get(RETRIEVED) is not None:
        return None
    header = str(msg.get(MARKER) or "").strip().lower()
    if not ID_RE.match(header):
        return None
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        found = _BODY_ID_RE.search(payload.decode("utf-8", "replace"))
        if found:
            return header if found[1] == header else None
    return None


class Mailbox:
    def __init__(self, *, host: str, port: int, tls: str, ca_file: str | None,
                 timeout: float = 60.0):
        self.host, self.port, self.tls = host, port, tls
        self.ca_file = ca_file
        self.timeout = timeout
        self.imap: imaplib.IMAP4 | None = None
        self.capabilities: set[str] = set()
        self._idling = False

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def connect(self, user: str, password: str) -> None:
        try:
            if self.tls == "implicit":
                self.imap = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=self._context(),
                                              timeout=self.timeout)
            else:
                self.imap = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
                if self.tls == "starttls":
                    self.imap.starttls(ssl_context=self._context())
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapUnavailable(f"cannot reach the IMAP server {self.host}:{self.port} "
                                  f"({type(exc).__name__}: {exc})") from None
        try:
            self.imap.login(user, password)
        except imaplib.IMAP4.error:
            raise ImapLoginFailed(f"the IMAP server refused the login for {user!r} "
                                  "(wrong user or password?)") from None
        typ, data = self.imap.capability()
        if typ == "OK" and data and data[0]:
            self.capabilities = {c.upper() for c in data[0].decode().split()}

    def _ok(self, what: str, result: tuple[str, Sequence[object]]) -> Sequence[object]:
        typ, data = result
        if typ != "OK":
            raise ImapUnavailable(f"IMAP {what} failed: {data!r}")
        return data

    @property
    def _c(self) -> imaplib.IMAP4:
        assert self.imap is not None, "not connected"
        return self.imap

    def select(self, mailbox: str) -> None:
        self._ok(f"SELECT {mailbox}", self._c.select(quote(mailbox)))

    def search(self, *criteria: str) -> list[str]:
        data = self._ok("SEARCH", self._c.uid("SEARCH", *criteria))
        first = data[0] if data else b""
        return first.decode().split() if isinstance(first, bytes) else []

    def find_copies(self, message_id: str) -> list[str]:
        """UIDs of real messages this agent (or another toolbar) appended for ``message_id``."""
        return self.search("HEADER", RETRIEVED, quote(f"id={message_id}"))

    def placeholders(self) -> list[Placeholder]:
        out: list[Placeholder] = []
        for uid in self.search("HEADER", MARKER, '""'):
            meta = self._ok("FETCH", self._c.uid("FETCH", uid,
                                                 "(FLAGS INTERNALDATE RFC822.SIZE)"))
            line = b" ".join(m if isinstance(m, bytes) else b"" for m in meta)
            flags: tuple[str, ...] = ()
            date, size = "", 0
            for m in _FETCH_RE.finditer(line):
                if m[1] is not None:
                    flags = tuple(f.decode() for f in m[1].split())
                elif m[2] is not None:
                    date = m[2].decode()
                else:
                    size = int(m[3])
            if not date or size > MAX_NOTIFICATION_BYTES:
                continue
            body = self._ok("FETCH", self._c.uid("FETCH", uid, "(BODY.PEEK[])"))
            raw = next((part[1] for part in body if isinstance(part, tuple)), b"")
            message_id = confirmed_id(raw) if isinstance(raw, bytes) else None
            if message_id is not None:
                out.append(Placeholder(uid, message_id, flags, date))
        return out

    def append(self, mailbox: str, p: Placeholder, message: bytes) -> None:
        keep = [f for f in p.flags if f not in ("\\Recent", "\\Deleted")]
        flags = f"({' '.join(keep)})" if keep else None
        self._ok("APPEND", self._c.append(quote(mailbox), flags, p.internaldate, message))

    def delete(self, uid: str) -> None:
        self._ok("STORE", self._c.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)"))
        if "UIDPLUS" in self.capabilities:
            self._ok("UID EXPUNGE", self._c.uid("EXPUNGE", uid))
        else:
            # Without UIDPLUS this also removes other messages the user marked \Deleted.
            self._ok("EXPUNGE", self._c.expunge())

    def idle(self, seconds: float) -> bool:
        """Wait in IDLE until the server reports a change or ``seconds`` pass; False if the
        server does not offer IDLE (the caller polls instead)."""
        if "IDLE" not in self.capabilities:
            return False
        c = self._c
        tag = c._new_tag()
        c.send(tag + b" IDLE\r\n")
        if not c.readline().startswith(b"+"):
            raise ImapUnavailable("the IMAP server refused IDLE")
        self._idling = True
        readable, _, _ = select.select([c.sock], [], [], seconds)
        if readable or (isinstance(c.sock, ssl.SSLSocket) and c.sock.pending()):
            c.readline()  # "* n EXISTS" or similar: something changed
        c.send(b"DONE\r\n")
        self._idling = False
        while True:
            line = c.readline()
            if not line:
                raise ImapUnavailable("the IMAP server closed the connection during IDLE")
            if line.startswith(tag):
                break
        return True

    def close(self) -> None:
        if self.imap is None:
            return
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            if self._idling:
                # Stopped mid-IDLE: a LOGOUT would wait behind the IDLE; just hang up.
                self.imap.shutdown()
            else:
                self.imap.logout()
        self._idling = False
        self.imap = None
