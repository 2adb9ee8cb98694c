"""Bounces to a tenant's aligned envelope sender (``bounces+<tag>@bounces.<tenant domain>``,
SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN) reach the receiver and count like any other; without the
setting, or at another name, they are refused at RCPT."""

from __future__ import annotations

from typing import Any

import pytest

from secmsg.notify.bounce_address import bounce_address
from tests.deliverability.conftest import TENANT, bounced_events, new_message_id, postfix_dsn, send

pytestmark = pytest.mark.timeout(90)


def _tenant_tagged(message_id: str, address: str, domain: str) -> str:
    return bounce_address(f"bounces@{domain}", tenant_id=TENANT, message_id=message_id,
                          address=address)


async def test_a_report_to_a_tenant_bounce_subdomain_is_recorded(
        start_deliverability: Any, nc: Any) -> None:
    proc = start_deliverability(SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN="bounces")
    mid = new_message_id()
    to = _tenant_tagged(mid, "bob@example.org", "bounces.acme.example")
    assert await send(proc.bounce_port, [to], postfix_dsn(
        to=to, message_id=mid, recipients=[("bob@example.org", "failed", "5.1.1")])
    ) == ([250], 250)
    # The same local part at a name that is not a bounce subdomain: not ours.
    for other in ("acme.example", "mail.acme.example"):
        assert (await send(proc.bounce_port, [_tenant_tagged(mid, "bob@example.org", other)],
                           b"x"))[0] == [550]
    assert [(e.message_id, e.recipient, e.hard) for e in await bounced_events(nc)] == [
        (mid, "bob@example.org", True)]


async def test_without_the_setting_tenant_bounce_domains_are_refused(
        start_deliverability: Any) -> None:
    proc = start_deliverability()
    to = _tenant_tagged(new_message_id(), "bob@example.org", "bounces.acme.example")
    assert (await send(proc.bounce_port, [to], b"x"))[0] == [550]
