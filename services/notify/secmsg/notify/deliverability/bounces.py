"""The bounce logic: match a delivery report to the notification it is about, and publish
``notification.bounced`` for each failed or delayed recipient that matches.

Matching, in order of trust:

* the VERP tag of the bounce address the report was sent to (``tenant.message.hash``): a
  reported recipient counts only if its address hashes to the tag's hash, so a report cannot
  be pointed at another recipient than the one the notification went to;
* without a tag (a relay rewrote the return path): the quoted original's
  ``X-Secure-Message-Id`` (or its notify ``Message-ID``), and the reported address must be a
  recipient of that message in the ``messages`` collection (and the quoted link's tenant, if
  quoted, must be the message's).

Anything else is dropped (logged and counted), never answered with an error: a bounce
receiver that rejects reports makes relays send bounces of bounces.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from secmsg.notify.bounce_address import address_hash
from secmsg.notify.deliverability import metrics
from secmsg.notify.deliverability.dsn import (
    DeliveryReport,
    MalformedReport,
    RecipientStatus,
    parse_report,
)
from secmsg.notify.deliverability.ports import EventPublisherPort, MessageDirectory
from secmsg.shared import logs, markers
from secmsg.shared.events import NotificationBounced, event_msg_id
from secmsg.shared.ids import is_message_id

log = logging.getLogger(__name__)

# notify's deterministic Message-ID: <sha256(message_id|address)[:32].<message_id>@domain>
_NOTIFY_MESSAGE_ID = re.compile(r"<?[0-9a-f]{32}\.([0-9a-f]{32})@[^>]+>?$")


@dataclass(frozen=True)
class Tag:
    tenant_id: str
    message_id: str
    address_hash: str


def severity(report: RecipientStatus) -> tuple[bool, str] | None:
    """``(hard, status)`` for a bounce, None for anything else (delivered, relayed, broken).

    ``failed`` with 5.x.x is hard; ``failed`` with 4.x.x and every ``delayed`` are soft (a
    delay report without a status code is recorded as 4.0.0)."""
    status = report.status
    if report.action == "failed" and status is not None:
        return status.startswith("5"), status
    if report.action == "delayed":
        return False, status if status and status.startswith("4") else "4.0.0"
    return None


def _quoted_message(report: DeliveryReport) -> tuple[str | None, str | None]:
    """``(message_id, tenant from the quoted link)`` of the quoted notification."""
    quoted = report.quoted
    message_id = (quoted.secure_message_id or "").strip().lower()
    if not is_message_id(message_id):
        m = _NOTIFY_MESSAGE_ID.match((quoted.message_id_header or "").strip().lower())
        message_id = m.group(1) if m else ""
    link = markers.parse_message_url(quoted.secure_message_url or "")
    if link and message_id and link[1] != message_id:
        return None, None  # the quoted markers contradict each other
    return (message_id or None), (link[0] if link else None)


async def _matches_without_tag(report: DeliveryReport, messages: MessageDirectory
                               ) -> tuple[str, str, frozenset[str]] | None:
    message_id, quoted_tenant = _quoted_message(report)
    if message_id is None:
        return None
    known = await messages.recipients_of(message_id)
    if known is None:
        return None
    tenant_id, addresses = known
    if quoted_tenant is not None and quoted_tenant != tenant_id:
        return None
    return tenant_id, message_id, addresses


def _drop(outcome: str, why: str) -> str:
    metrics.BOUNCES.labels(outcome).inc()
    log.info("bounce report dropped: %s", why, extra={"event": "bounce_dropped",
                                                       "status": outcome})
    return outcome


async def receive_report(*, raw: bytes, tags: Sequence[Tag], publisher: EventPublisherPort,
                         messages: MessageDirectory) -> list[str]:
    """Publish a ``NotificationBounced`` per matching bounce in ``raw``; returns the outcome
    of each reported recipient (or of the whole mail when it is not a usable report).

    Raises ``DependencyUnavailable`` when an event could not be published durably or the
    message directory was unreachable: the caller answers 451 and the relay retries (events
    already published are dropped as duplicates the second time: same ``Nats-Msg-Id``).
    """
    try:
        report = parse_report(raw)
    except MalformedReport:
        return [_drop("malformed", "delivery-status part without recipients")]
    except Exception as exc:  # the email package on hostile input: drop, never crash
        return [_drop("malformed", f"unparseable mail ({type(exc).__name__})")]
    if report is None:
        return [_drop("not_dsn", "not a delivery status notification")]

    untagged: tuple[str, str, frozenset[str]] | None = None
    if not tags:
        untagged = await _matches_without_tag(report, messages)

    outcomes: list[str] = []
    published: set[str] = set()
    for rcpt in report.recipients:
        bounce = severity(rcpt)
        if bounce is None:
            outcomes.append(_drop("not_bounce" if rcpt.action in
                                  ("delivered", "relayed", "expanded") else "malformed",
                                  f"action {rcpt.action[:20]!r} is not a bounce"))
            continue
        hard, status = bounce
        match: tuple[str, str, str, str] | None = None  # tenant, message, address, its hash
        for address in rcpt.addresses:
            h = address_hash(address)
            tag = next((t for t in tags if t.address_hash == h), None)
            if tag is not None:
                match = (tag.tenant_id, tag.message_id, address, h)
                break
            if untagged is not None and address in untagged[2]:
                match = (untagged[0], untagged[1], address, h)
                break
        if match is None:
            outcomes.append(_drop("unmatched", "no notification matches the reported "
                                               "recipient" + (" (tag hash differs)" if tags
                                                              else "")))
            continue
        tenant_id, message_id, address, h = match
        event = NotificationBounced(
            tenant_id=tenant_id, message_id=message_id, recipient=address, status=status,
            hard=hard, reason="bounced_hard" if hard else "bounced_soft")
        msg_id = event_msg_id(event, h, status)
        outcome = "hard" if hard else "soft"
        if msg_id not in published:
            await publisher.publish(event, msg_id)
            published.add(msg_id)
            metrics.BOUNCES.labels(outcome).inc()
            token_c, token_t = logs.correlation_id.set(message_id), logs.tenant_id.set(tenant_id)
            try:
                log.info("bounce recorded (%s)", outcome,
                         extra={"event": "notification.bounced", "recipient_hash": h,
                                "status": status})
            finally:
                logs.correlation_id.reset(token_c)
                logs.tenant_id.reset(token_t)
        outcomes.append(outcome)
    return outcomes
