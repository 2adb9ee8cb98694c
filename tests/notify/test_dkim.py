"""DKIM signatures, verified by ``dkim.verify`` against the public key record, for the
platform's key and a tenant's key (aligned From), through the real worker; the VERP envelope
sender; a tampered body fails verification."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.smtp_sink import Sink
from secmsg.notify.bounce_address import address_hash, parse_bounce_address
from secmsg.notify.compose import build_notification
from secmsg.notify.ports import DkimKey, TenantBranding
from secmsg.shared import mongo
from secmsg.shared.crypto import DKIM_KEY_PURPOSE
from secmsg.shared.dkim import DkimSigner
from secmsg.shared.settings import CommonSettings
from tests.notify.conftest import Bus, eventually, stored_event


def _keypair() -> tuple[bytes, bytes]:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    der = k.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


PLATFORM_PEM, PLATFORM_TXT = _keypair()
TENANT_PEM, TENANT_TXT = _keypair()
DNS = {b"notify._domainkey.platform.example.": PLATFORM_TXT,
       b"acme2026._domainkey.acme.example.": TENANT_TXT}


def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
    return DNS.get(name if name.endswith(b".") else name + b".")


def test_signature_verifies_and_tampering_breaks_it() -> None:
    note = build_notification(
        event=stored_event(to=["bob@example.org"]), recipient="bob@example.org",
        branding=TenantBranding(tenant_id="acme", display_name="Acme"),
        platform_from="notify@platform.example", public_url="https://m.example",
        now=datetime.now(UTC))
    signed = DkimSigner().sign(note.as_bytes(), DkimKey("platform.example", "notify",
                                                        PLATFORM_PEM))
    assert signed.startswith(b"DKIM-Signature:") and b"d=platform.example" in signed
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    head, _, body = signed.partition(b"\r\n\r\n")
    assert not dkim.verify(head + b"\r\n\r\n" + body.replace(b"m.example", b"x.example", 1),
                           dnsfunc=dnsfunc)
    # A signed header changed (the link marker) breaks it too.
    assert not dkim.verify(signed.replace(b"X-Secure-Message-Id: ", b"X-Secure-Message-Id: 0"),
                           dnsfunc=dnsfunc)


@pytest.fixture
def platform_key(tmp_path: Path) -> str:
    p = tmp_path / "dkim.pem"
    p.write_bytes(PLATFORM_PEM)
    return str(p)


async def test_worker_signs_with_platform_and_tenant_keys(
        tenant: str, mongo_db: Any, sink: Sink, nbus: Bus, start_notify: Any,
        platform_key: str) -> None:
    ring = CommonSettings().key_ring
    await mongo_db[mongo.TENANTS].insert_one({
        "_id": "acme2", "name": "acme2", "display_name": "Acme Two",
        "dkim": {"domain": "acme.example", "selector": "acme2026",
                 "private_key_sealed": ring.seal_secret("acme2", DKIM_KEY_PURPOSE,
                                                        TENANT_PEM.decode()),
                 "from_address": "notices@acme.example", "created_at": datetime.now(UTC)}})
    await start_notify(SECMSG_SMTP_FROM="notify@platform.example",
                       SECMSG_NOTIFY_DKIM_DOMAIN="platform.example",
                       SECMSG_NOTIFY_DKIM_SELECTOR="notify",
                       SECMSG_NOTIFY_DKIM_PRIVATE_KEY_FILE=platform_key,
                       SECMSG_NOTIFY_BOUNCE_ADDRESS="bounces@platform.example")
    plain = stored_event(to=["bob@example.org"], tenant=tenant)
    own = stored_event(to=["Carol@Example.org"], tenant="acme2")
    await nbus.publish(plain)
    await nbus.publish(own)
    [p] = await eventually(lambda: sink.handler.for_recipient("bob@example.org"), what="mail 1")
    [o] = await eventually(lambda: sink.handler.for_recipient("Carol@Example.org"),
                           what="mail 2")

    assert dkim.verify(p.data, dnsfunc=dnsfunc) and dkim.verify(o.data, dnsfunc=dnsfunc)
    assert b"d=platform.example" in p.data.split(b"\r\n\r\n")[0]
    assert p.message["From"].addresses[0].addr_spec == "notify@platform.example"
    # The tenant's key: From is its aligned address, the display name as always.
    assert b"d=acme.example" in o.data.split(b"\r\n\r\n")[0]
    sender = o.message["From"].addresses[0]
    assert sender.addr_spec == "notices@acme.example"
    assert sender.display_name == "alice@acme.example via Acme Two"
    # The envelope sender carries the bounce tag of exactly this notification.
    assert parse_bounce_address(o.mail_from, base="bounces@platform.example") == (
        "acme2", own.message_id, address_hash("carol@example.org"))
    assert parse_bounce_address(p.mail_from) == (tenant, plain.message_id,
                                                 address_hash("bob@example.org"))
