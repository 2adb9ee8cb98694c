"""The tenant's DKIM key: generated here (RSA-2048), the private key sealed with the platform
keyring (``DKIM_KEY_PURPOSE``) in ``tenants.dkim`` for notify to sign with, never returned.
The answer is the DNS TXT record to publish at ``<selector>._domainkey.<domain>``."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from secmsg.ingest import audit
from secmsg.ingest.admin_access import check_email
from secmsg.ingest.ports import AccessRepo, Credentials, EventSink, Origin
from secmsg.shared.crypto import DKIM_KEY_PURPOSE, KeyRing
from secmsg.shared.errors import InvalidInput, NotFound


def _generate() -> tuple[str, str]:
    """(private key PEM, public key base64 DER) -- a CPU-heavy moment, run in a thread."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def view(dkim: dict[str, Any]) -> dict[str, Any]:
    return {"domain": dkim["domain"], "selector": dkim["selector"],
            "from_address": dkim["from_address"], "created_at": dkim.get("created_at"),
            "dns_name": f"{dkim['selector']}._domainkey.{dkim['domain']}",
            "dns_value": f"v=DKIM1; k=rsa; p={dkim['public_key']}"}


async def put(*, creds: Credentials, domain: str, selector: str, from_address: str,
              access: AccessRepo, key_ring: KeyRing, events: EventSink, origin: Origin,
              now: datetime) -> dict[str, Any]:
    """``domain`` and ``selector`` come checked and normalised (``secmsg.shared.dnsnames``:
    the request model's ``Fqdn`` and ``DnsName``)."""
    from_address = check_email(from_address, "from_address")
    if from_address.rsplit("@", 1)[1].lower() != domain:
        raise InvalidInput(f"from_address must be at {domain} (DKIM alignment)")
    pem, public = await asyncio.to_thread(_generate)
    tenant_id = creds.tenant.tenant_id
    dkim = {"domain": domain, "selector": selector, "from_address": from_address,
            "private_key_sealed": key_ring.seal_secret(tenant_id, DKIM_KEY_PURPOSE, pem),
            "public_key": public, "created_at": now, "created_by": creds.actor}
    await access.set_fields(tenant_id, {"dkim": dkim})
    await audit.record(events=events, creds=creds, action="dkim.changed", origin=origin,
                       detail={"change": "key_generated", "domain": domain,
                               "selector": selector})
    return view(dkim)


async def get(*, creds: Credentials, access: AccessRepo) -> dict[str, Any]:
    dkim = (await access.tenant(creds.tenant.tenant_id)).get("dkim")
    if not isinstance(dkim, dict) or "public_key" not in dkim:
        raise NotFound("no DKIM key set up; notifications are signed with the platform's key")
    return view(dkim)


async def delete(*, creds: Credentials, access: AccessRepo, events: EventSink,
                 origin: Origin) -> None:
    await get(creds=creds, access=access)
    await access.set_fields(creds.tenant.tenant_id, {}, unset=("dkim",))
    await audit.record(events=events, creds=creds, action="dkim.changed", origin=origin,
                       detail={"change": "removed"})
