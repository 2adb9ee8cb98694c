"""Whom a sign-in code mail is from (retrieve's ``SmtpCodeMailer.identity``), the same choice
notify makes for a notification: the tenant's own From and key when its ``tenants.dkim`` is
usable, else the platform's -- including when the sealed key does not open or the From is not
at the key's domain. Pure logic with a stub tenant store; the real path (real processes, real
SMTP, DKIM/DMARC checked over DNS) is test_local_stack_alignment.py."""

from __future__ import annotations

from typing import Any

import dkim
import pytest

from secmsg.retrieve.adapters.smtp import SmtpCodeMailer
from secmsg.shared.crypto import DKIM_KEY_PURPOSE, KeyRing
from secmsg.shared.dkim import MailIdentity, PlatformKey
from secmsg.shared.settings import CommonSettings
from tests.notify.test_dkim import PLATFORM_PEM, TENANT_PEM, dnsfunc

RING = KeyRing.parse(KeyRing.generate_spec(1))


class Tenants:
    def __init__(self, dkim_docs: dict[str, dict[str, Any]]) -> None:
        self.docs = dkim_docs

    async def policy(self, tenant_id: str) -> dict[str, Any]:
        return {}

    async def dkim(self, tenant_id: str) -> dict[str, Any] | None:
        return self.docs.get(tenant_id)


def _doc(tenant_id: str, *, sealed_for: str | None = None,
         from_address: str = "notices@acme.example") -> dict[str, Any]:
    return {"domain": "acme.example", "selector": "acme2026", "from_address": from_address,
            "private_key_sealed": RING.seal_secret(sealed_for or tenant_id, DKIM_KEY_PURPOSE,
                                                   TENANT_PEM.decode())}


@pytest.fixture
def mailer() -> SmtpCodeMailer:
    common = CommonSettings(smtp_from="notify@platform.example")
    identity = MailIdentity(platform_from=common.smtp_from,
                            key=PlatformKey("platform.example", "notify", PLATFORM_PEM),
                            bounce_address="bounces@bounces.platform.example",
                            tenant_bounce_subdomain="bounces", ehlo_name="mta.platform.example")
    tenants = Tenants({"acme": _doc("acme"), "stolen": _doc("stolen", sealed_for="acme"),
                       "misfit": _doc("misfit", from_address="notices@other.example")})
    return SmtpCodeMailer(common, tenants, identity, RING)


async def test_a_keyed_tenant_signs_its_code_mails_with_its_own_key(
        mailer: SmtpCodeMailer) -> None:
    who = await mailer.identity("acme")
    assert who.from_address == "notices@acme.example"
    assert who.key is not None and (who.key.domain, who.key.selector) == ("acme.example",
                                                                          "acme2026")
    assert who.envelope_from == "bounces@bounces.acme.example"  # SPF-aligned with the From
    msg = mailer.build(to="bob@example.org", text="12345678", html="<p>12345678</p>",
                       from_address=who.from_address)
    assert str(msg["Message-ID"]).endswith("@acme.example>")
    signed = MailIdentity(platform_from="x@y.example").signer.sign(msg.as_bytes(), who.key)
    assert dkim.verify(signed, dnsfunc=dnsfunc)


@pytest.mark.parametrize("tenant", ["plain", "stolen", "misfit"])
async def test_otherwise_the_platform_signs(mailer: SmtpCodeMailer, tenant: str) -> None:
    # no key; a key sealed for another tenant (does not open); a From not at the key's domain
    who = await mailer.identity(tenant)
    assert who.from_address == "notify@platform.example"
    assert who.key is not None and who.key.domain == "platform.example"
    assert who.envelope_from == "bounces@bounces.platform.example"
