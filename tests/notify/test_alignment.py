"""What lines a notification up with its From domain, through the real worker and SMTP: the
EHLO name, the Message-ID's domain, a tenant's aligned envelope sender
(SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN), and List-Unsubscribe only for a tenant that asked."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from pydantic import ValidationError

from devstack.smtp_sink import Sink
from secmsg.notify.alignment import is_bounce_domain
from secmsg.notify.bounce_address import address_hash, parse_bounce_address
from secmsg.notify.settings import NotifySettings
from secmsg.shared import mongo
from secmsg.shared.crypto import DKIM_KEY_PURPOSE
from secmsg.shared.dkim import default_ehlo_name
from secmsg.shared.settings import CommonSettings
from tests.notify.conftest import Bus, eventually, stored_event
from tests.notify.test_dkim import PLATFORM_PEM, TENANT_PEM, dnsfunc

pytestmark = pytest.mark.timeout(60)


def _dkim_doc(tenant_id: str) -> dict[str, Any]:
    ring = CommonSettings().key_ring
    return {"domain": "acme.example", "selector": "acme2026",
            "private_key_sealed": ring.seal_secret(tenant_id, DKIM_KEY_PURPOSE,
                                                   TENANT_PEM.decode()),
            "from_address": "notices@acme.example", "created_at": datetime.now(UTC)}


async def test_tenant_mail_is_aligned_and_ehlo_is_the_configured_name(
        tenant: str, mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any,
        tmp_path: Path) -> None:
    key = tmp_path / "platform.pem"
    key.write_bytes(PLATFORM_PEM)
    await mongo_db[mongo.TENANTS].insert_many([
        {"_id": "acme2", "name": "acme2", "display_name": "Acme Two", "dkim": _dkim_doc("acme2")},
        {"_id": "acme3", "name": "acme3", "display_name": "Acme Three",
         "list_unsubscribe": {"url": "https://acme.example/unsubscribe?u=1",
                              "mailto": "mailto:unsubscribe@acme.example"}}])
    await start_notify(SECMSG_SMTP_FROM="notify@platform.example",
                       SECMSG_NOTIFY_DKIM_DOMAIN="platform.example",
                       SECMSG_NOTIFY_DKIM_SELECTOR="notify",
                       SECMSG_NOTIFY_DKIM_PRIVATE_KEY_FILE=str(key),
                       SECMSG_NOTIFY_BOUNCE_ADDRESS="bounces@bounces.platform.example",
                       SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN="bounces",
                       SECMSG_NOTIFY_EHLO_NAME="Mail1.Platform.Example.")
    plain = stored_event(to=["bob@example.org"], tenant=tenant)
    own = stored_event(to=["carol@example.org"], tenant="acme2")
    listy = stored_event(to=["dave@example.org"], tenant="acme3")
    for ev in (plain, own, listy):
        await nbus.publish(ev)
    [p] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"), what="1")
    [o] = await eventually(lambda: sink.handler.for_recipient("carol@example.org"), what="2")
    [u] = await eventually(lambda: sink.handler.for_recipient("dave@example.org"), what="3")

    assert {p.helo, o.helo, u.helo} == {"mail1.platform.example"}
    # The platform's notifications: everything at the platform's domain.
    assert p.message["Message-ID"].endswith("@platform.example>")
    assert p.mail_from.endswith("@bounces.platform.example")
    # A tenant signing with its own key: From, d=, Message-ID and envelope sender at its
    # domain; the bounce tag still names exactly this notification.
    assert o.message["From"].addresses[0].addr_spec == "notices@acme.example"
    assert b"d=acme.example" in o.data.split(b"\r\n\r\n")[0] and dkim.verify(o.data,
                                                                              dnsfunc=dnsfunc)
    assert o.message["Message-ID"].endswith("@acme.example>")
    assert o.mail_from.startswith("bounces+") and o.mail_from.endswith("@bounces.acme.example")
    assert parse_bounce_address(o.mail_from) == ("acme2", own.message_id,
                                                 address_hash("carol@example.org"))
    # No List-Unsubscribe on one-to-one notifications, unless the tenant asked for it.
    for cap in (p, o):
        assert cap.message["List-Unsubscribe"] is None
        assert cap.message["List-Unsubscribe-Post"] is None
    assert u.message["List-Unsubscribe"] == ("<https://acme.example/unsubscribe?u=1>, "
                                             "<mailto:unsubscribe@acme.example>")
    assert u.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # ... and signed, so nobody can add or change them on the way (RFC 8058 requires it).
    signature = u.data.split(b"\r\n\r\n")[0].split(b"DKIM-Signature:")[1].split(b"\r\nFrom:")[0]
    assert b"list-unsubscribe:list-unsubscribe-post" in re.sub(rb"\s+", b"", signature)
    assert dkim.verify(u.data, dnsfunc=dnsfunc)


async def test_without_the_subdomain_setting_tenants_keep_the_platform_bounce_address(
        mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any) -> None:
    # Opt-in: a tenant must publish MX and SPF for its bounce name before mail may use it.
    await mongo_db[mongo.TENANTS].insert_one(
        {"_id": "acme2", "name": "acme2", "display_name": "Acme Two", "dkim": _dkim_doc("acme2"),
         "list_unsubscribe": {"url": "http://not-https.example/u"}})
    await start_notify(SECMSG_NOTIFY_BOUNCE_ADDRESS="bounces@platform.example")
    own = stored_event(to=["carol@example.org"], tenant="acme2")
    await nbus.publish(own)
    [o] = await eventually(lambda: sink.handler.for_recipient("carol@example.org"), what="it")
    assert o.mail_from.endswith("@platform.example")
    assert o.message["Message-ID"].endswith("@acme.example>")
    assert o.message["List-Unsubscribe"] is None  # not an https URL: ignored (logged)


def test_ehlo_name_default_and_refused_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_ehlo_name("n@platform.example", fqdn="node-1.dc1.platform.example") \
        == "node-1.dc1.platform.example"
    for local in ("localhost", "notify-7d9c", "pod.cluster.local", "host.localdomain", ""):
        assert default_ehlo_name("n@Platform.Example", fqdn=local) == "platform.example"
    # From the environment, as the process reads them (secmsg.shared.dnsnames checks both).
    monkeypatch.setenv("SECMSG_NOTIFY_EHLO_NAME", "MX1.example.org.")
    monkeypatch.setenv("SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN", " ")
    got = NotifySettings()
    assert (got.ehlo_name, got.tenant_bounce_subdomain) == ("mx1.example.org", None)
    for bad in ("notify", "bad name.example", "-x.example", "a..b.example"):
        monkeypatch.setenv("SECMSG_NOTIFY_EHLO_NAME", bad)
        with pytest.raises(ValidationError, match=r"ehlo_name\n.*is not a fully qualified "
                                                  r"domain name: "):
            NotifySettings()
    monkeypatch.delenv("SECMSG_NOTIFY_EHLO_NAME")
    monkeypatch.setenv("SECMSG_NOTIFY_TENANT_BOUNCE_SUBDOMAIN", "bounces@x")
    with pytest.raises(ValidationError, match=r"tenant_bounce_subdomain\n.*'bounces@x' is not "
                                              r"a DNS name: '@' in the label"):
        NotifySettings()


def test_bounce_domains_the_receiver_accepts() -> None:
    ours = {"base_domain": "notify.example", "subdomain": "bounces"}
    assert is_bounce_domain("Notify.Example", **ours)
    assert is_bounce_domain("bounces.acme.example", **ours)
    assert not is_bounce_domain("acme.example", **ours)
    assert not is_bounce_domain("bounces.", **ours)
    assert not is_bounce_domain("bounces.acme.example", base_domain="notify.example",
                                subdomain=None)
