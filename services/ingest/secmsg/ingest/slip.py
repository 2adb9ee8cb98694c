"""The delivery slip: what happened for each recipient, told from facts store recorded.

Two sources, both written by store from events (store owns them; ingest only reads):

* ``delivery_status`` -- notify's outcome per recipient (``notification.sent`` / ``deferred``
  with its ``retry_at`` / ``failed`` / ``bounced``), the state that stands;
* ``audit_events`` -- what the recipient did: ``message.opened`` and
  ``attachment.downloaded`` (retrieve's content events), ``message.fetched`` and
  ``message.acknowledged`` (the toolbar API's audit actions).

Every recipient gets a ``status`` word and a ``summary`` sentence, never a blank: before notify
has tried, the notification is ``queued`` (since the message was received); for a message the
sender's own mail server delivers (RFC 5322 submissions, ``notify`` false) it is ``not_sent``.
A fact that has not happened is left out, not ``null``. Downloads are named by the file name
the sender gave (range requests of one file count as one file, with how many requests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from secmsg.shared.documents import AuditDoc, DeliveryStatusDoc

NotificationState = Literal["queued", "not_sent", "sent", "deferred", "failed", "bounced"]
Status = Literal["queued", "not_notified", "notified", "deferred", "failed", "bounced",
                 "opened", "downloaded", "fetched_by_toolbar", "acknowledged_by_toolbar"]
# What the slip reads from the audit trail (kinds as store records them).
READER_KINDS = ("message.opened", "attachment.downloaded", "message.fetched",
                "message.acknowledged")
SENDER_DELIVERS = "sender_mail_server"  # reason of ``not_sent``
_NOTIFIED: dict[NotificationState, Status] = {
    "queued": "queued", "not_sent": "not_notified", "sent": "notified",
    "deferred": "deferred", "failed": "failed", "bounced": "bounced"}


@dataclass(frozen=True)
class Notification:
    state: NotificationState
    at: datetime
    attempts: int = 0
    reason: str | None = None
    next_attempt_at: datetime | None = None
    bounce_status: str | None = None


@dataclass
class Download:
    object_id: str
    file_name: str
    first_at: datetime
    last_at: datetime
    times: int = 1


@dataclass
class Reader:
    """What one recipient did, from the audit trail."""

    opened: list[datetime] = field(default_factory=list)
    downloads: dict[str, Download] = field(default_factory=dict)
    fetched: list[datetime] = field(default_factory=list)
    acknowledged: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class Line:
    address: str
    kind: str
    access: str  # "open" | "revoked" | "recalled"
    status: Status
    summary: str
    notification: Notification
    reader: Reader


def notification(d: DeliveryStatusDoc | None, *, notify: bool,
                 received_at: datetime) -> Notification:
    if d is None:
        if not notify:
            return Notification("not_sent", received_at, reason=SENDER_DELIVERS)
        return Notification("queued", received_at)
    at = d.occurred_at or d.updated_at or received_at
    if d.state == "deferred":
        return Notification("deferred", at, attempts=d.attempt or 1, reason=d.reason or
                            "temporary_failure", next_attempt_at=d.retry_at)
    if d.state == "bounced":
        return Notification("bounced", at, attempts=d.attempt or 1,
                            reason=d.reason or "bounced", bounce_status=d.bounce_status)
    if d.state == "failed":
        return Notification("failed", at, attempts=d.attempt or 1, reason=d.reason or "failed")
    return Notification("sent", at, attempts=d.attempt or 1)


def readers(events: Iterable[AuditDoc], file_names: dict[str, str]) -> dict[str, Reader]:
    """Per lower-cased address, in time order (``events`` come sorted by ``at``)."""
    out: dict[str, Reader] = {}
    for ev in events:
        who = (ev.recipient or ev.subject_address or ev.actor or "").lower()
        r = out.setdefault(who, Reader())
        if ev.kind == "message.opened":
            r.opened.append(ev.at)
        elif ev.kind == "attachment.downloaded":
            object_id = ev.object_id or ""
            seen = r.downloads.get(object_id)
            if seen is None:
                r.downloads[object_id] = Download(
                    object_id=object_id, first_at=ev.at, last_at=ev.at,
                    file_name=file_names.get(object_id) or "a file no longer listed")
            else:
                seen.times += 1
                seen.last_at = ev.at
        elif ev.kind == "message.fetched":
            r.fetched.append(ev.at)
        elif ev.kind == "message.acknowledged":
            r.acknowledged.append(ev.at)
    return out


def status(n: Notification, r: Reader) -> Status:
    """The furthest step reached: what the reader did wins over how they were told."""
    if r.acknowledged:
        return "acknowledged_by_toolbar"
    if r.fetched:
        return "fetched_by_toolbar"
    if r.downloads:
        return "downloaded"
    if r.opened:
        return "opened"
    return _NOTIFIED[n.state]


def _t(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _words(reason: str) -> str:
    return reason.replace("_", " ")


def summary(n: Notification, r: Reader) -> str:
    parts: list[str] = []
    if n.state == "queued":
        parts.append("Notification not sent yet (queued)")
    elif n.state == "not_sent":
        parts.append("No notification from the platform: the sender's own mail server "
                     "delivered the placeholder")
    elif n.state == "sent":
        parts.append(f"Notified {_t(n.at)}")
    elif n.state == "deferred":
        nxt = f"; next try {_t(n.next_attempt_at)}" if n.next_attempt_at else ""
        parts.append(f"Notification deferred ({_words(n.reason or '')}, attempt "
                     f"{n.attempts}){nxt}")
    elif n.state == "bounced":
        code = f" {n.bounce_status}" if n.bounce_status else ""
        parts.append(f"Notification bounced{code} ({_words(n.reason or '')}) {_t(n.at)}")
    else:
        parts.append(f"Notification failed ({_words(n.reason or '')}) {_t(n.at)}")
    if r.opened:
        times = "once" if len(r.opened) == 1 else f"{len(r.opened)} times"
        parts.append(f"opened {times}, first {_t(r.opened[0])}")
    if r.downloads:
        names = ", ".join(d.file_name for d in r.downloads.values())
        parts.append(f"downloaded {names}")
    if r.fetched:
        parts.append(f"fetched by toolbar {_t(r.fetched[-1])}")
    if r.acknowledged:
        parts.append(f"acknowledged by toolbar {_t(r.acknowledged[-1])}")
    return "; ".join(parts) + "."


def lines(*, recipients: Sequence[tuple[str, str]], delivery: Iterable[DeliveryStatusDoc],
          events: Iterable[AuditDoc], revoked: dict[str, str], file_names: dict[str, str],
          notify: bool, received_at: datetime, show_bcc: bool) -> list[Line]:
    """One line per recipient, in the order the sender wrote them (Bcc only for the sender:
    an admin may be a to/cc recipient too)."""
    states = {d.recipient.lower(): d for d in delivery}
    done = readers(events, file_names)
    out: list[Line] = []
    for address, kind in recipients:
        if kind == "bcc" and not show_bcc:
            continue
        low = address.lower()
        n = notification(states.get(low), notify=notify, received_at=received_at)
        r = done.get(low, Reader())
        out.append(Line(address=address, kind=kind,
                        access=revoked.get("*") or revoked.get(low) or "open",
                        status=status(n, r), summary=summary(n, r), notification=n, reader=r))
    return out
