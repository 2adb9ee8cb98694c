"""Admin routes for how notifications leave: the SMTP selection (platform or own server), its
test, the tenant's DKIM key, and its List-Unsubscribe setting (off by default)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from secmsg.ingest import audit, dkim, list_unsubscribe, smtp_check, tenant_smtp
from secmsg.ingest.routes.common import AUTH_ERRORS, Admin, DepsDep, err, origin
from secmsg.shared.dnsnames import DnsName, Fqdn

router = APIRouter(prefix="/v1/admin", tags=["admin: sending"])


class SmtpIn(BaseModel):
    mode: Literal["platform", "own"] = Field(
        description="platform: the platform's default SMTP service; own: the tenant's server")
    host: str | None = Field(default=None, max_length=253, examples=["smtp.example.com"])
    port: int | None = Field(default=None, ge=1, le=65535, examples=[587])
    tls: Literal["starttls", "tls"] | None = Field(
        default=None, description="starttls (required, refused if not offered) or tls "
                                  "(implicit); plaintext is not an option")
    username: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=1024, description=(
        "stored encrypted, never returned; omit to keep the stored one (same username)"))


class SmtpOut(BaseModel):
    mode: Literal["platform", "own"]
    host: str | None
    port: int | None
    tls: Literal["starttls", "tls"] | None
    username: str | None
    password_set: bool
    updated_at: datetime | None


def _smtp_out(config: tenant_smtp.SmtpConfig) -> SmtpOut:
    return SmtpOut(mode=config.mode, host=config.host, port=config.port, tls=config.tls,
                   username=config.username, password_set=config.password_set,
                   updated_at=config.updated_at)


@router.get("/smtp", response_model=SmtpOut, responses=AUTH_ERRORS,
            summary="The tenant's SMTP selection (the password is never returned)")
async def get_smtp(creds: Admin, deps: DepsDep) -> SmtpOut:
    return _smtp_out(await tenant_smtp.get(tenant_id=creds.tenant.tenant_id,
                                           store=deps.smtp))


@router.put("/smtp", response_model=SmtpOut,
            responses={**AUTH_ERRORS, 400: err(
                "missing host/port/tls for 'own', a host refused by the SSRF guard (private, "
                "loopback, link-local, metadata, ambiguous IP form) or not resolving")},
            summary="Choose the platform SMTP service or the tenant's own server")
async def put_smtp(body: SmtpIn, request: Request, creds: Admin,
                   deps: DepsDep) -> SmtpOut:
    config = await tenant_smtp.save(
        tenant_id=creds.tenant.tenant_id, mode=body.mode, host=body.host, port=body.port,
        tls=body.tls, username=body.username, password=body.password, key_id=creds.actor,
        store=deps.smtp, key_ring=deps.key_ring,
        allowed_targets=deps.smtp_allowed_targets, now=datetime.now(UTC))
    # fixed words only: never the host's reply, the username or the password
    await audit.record(events=deps.events, creds=creds, action="smtp.changed",
                       origin=origin(request),
                       detail={"mode": body.mode,
                               "password": "changed" if body.password else "kept"})
    return _smtp_out(config)


Reason = Literal["connection_refused", "connection_lost", "timeout", "tls_unavailable",
                 "tls_failed", "auth_failed", "temporary_rejection", "permanent_rejection",
                 "blocked_target", "invalid_message"]


class SmtpTestIn(BaseModel):
    to: str = Field(max_length=320, examples=["it@clinic.example"])


class SmtpTestOut(BaseModel):
    ok: bool
    mode: Literal["platform", "own"] = Field(description="which SMTP service was tested")
    reason: Reason | None = Field(
        default=None, description="why it failed, a fixed category (never the server's text)")


@router.post("/smtp/test", response_model=SmtpTestOut,
             responses={**AUTH_ERRORS, 400: err("not a valid address"),
                        429: err("too many SMTP tests this minute")},
             summary="Send a short test message through the tenant's SMTP selection",
             description="No content and no link: a sentence naming the tenant. A tenant's own "
                         "server passes the SSRF guard first (`blocked_target`). Limited to "
                         "`SECMSG_INGEST_SMTP_TEST_PER_MINUTE` tests per tenant per minute on "
                         "each ingest instance.")
async def test_smtp(body: SmtpTestIn, creds: Admin, deps: DepsDep) -> SmtpTestOut:
    mode, reason = await smtp_check.run(
        creds=creds, to=body.to, store=deps.smtp, key_ring=deps.key_ring,
        platform=deps.platform_smtp, prober=deps.prober, limiter=deps.smtp_test_limiter,
        access=deps.access)
    return SmtpTestOut(ok=reason is None, mode=mode, reason=reason)


def _millis(at: datetime) -> datetime:
    """What MongoDB keeps, so a later GET shows the same time as the PUT answered."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class DkimIn(BaseModel):
    domain: Fqdn = Field(examples=["clinic.example"],
                         description="the signing domain (d=), a fully qualified domain name")
    selector: DnsName = Field(examples=["secmsg1"], description="DNS labels (s=)")
    from_address: str = Field(max_length=320, examples=["notifications@clinic.example"],
                              description="the notifications' From; must be at `domain`")


class DkimOut(BaseModel):
    domain: str
    selector: str
    from_address: str
    created_at: datetime | None
    dns_name: str = Field(examples=["secmsg1._domainkey.clinic.example"])
    dns_value: str = Field(description="the TXT record to publish",
                           examples=["v=DKIM1; k=rsa; p=MIIBIjANBgkqh..."])


@router.put("/dkim", response_model=DkimOut,
            responses={**AUTH_ERRORS, 400: err("a from_address that is not an address or "
                                               "not at the domain")},
            summary="Generate the tenant's DKIM key (RSA-2048); answers the DNS record",
            description="Replaces any previous key. The private key is stored encrypted and "
                        "never returned. Publish the TXT record before relying on it: from "
                        "now on notifications are signed with this key and sent From "
                        "`from_address`.")
async def put_dkim(body: DkimIn, creds: Admin, deps: DepsDep, request: Request) -> DkimOut:
    return DkimOut(**await dkim.put(
        creds=creds, domain=body.domain, selector=body.selector,
        from_address=body.from_address, access=deps.access, key_ring=deps.key_ring,
        events=deps.events, origin=origin(request),
        now=_millis(datetime.now(UTC))))


@router.get("/dkim", response_model=DkimOut,
            responses={**AUTH_ERRORS, 404: err("no DKIM key set up")},
            summary="The tenant's DKIM setup and DNS record (never the private key)")
async def get_dkim(creds: Admin, deps: DepsDep) -> DkimOut:
    return DkimOut(**await dkim.get(creds=creds, access=deps.access))


@router.delete("/dkim", status_code=204,
               responses={**AUTH_ERRORS, 404: err("no DKIM key set up")},
               summary="Remove the tenant's DKIM key (the platform's key signs again)")
async def delete_dkim(creds: Admin, deps: DepsDep, request: Request) -> None:
    await dkim.delete(creds=creds, access=deps.access, events=deps.events,
                      origin=origin(request))


class ListUnsubscribeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(
        default=None, max_length=508, examples=["https://clinic.example/unsubscribe"],
        description="the tenant's one-click unsubscribe endpoint (https; RFC 8058: it "
                    "receives a POST with List-Unsubscribe=One-Click)")
    mailto: str | None = Field(default=None, max_length=307,
                               examples=["mailto:unsubscribe@clinic.example"])


class ListUnsubscribeOut(BaseModel):
    enabled: bool = Field(description="false (the default): notifications carry no "
                                      "List-Unsubscribe header")
    url: str | None
    mailto: str | None
    one_click: bool = Field(description="List-Unsubscribe-Post is added (there is an https "
                                        "url)")
    updated_at: datetime | None


_LIST_UNSUBSCRIBE_WHY = (
    "Off by default: a notification is one-to-one transactional mail, not a mailing list, so "
    "there is nothing to unsubscribe from and an unsubscribe button invites recipients to "
    "switch off mail they need; mailbox providers require these headers only of bulk and "
    "marketing mail. Turn it on when the tenant's notifications are more than that.")


@router.get("/list-unsubscribe", response_model=ListUnsubscribeOut, responses=AUTH_ERRORS,
            summary="Whether notifications carry List-Unsubscribe (off by default)",
            description=_LIST_UNSUBSCRIBE_WHY)
async def get_list_unsubscribe(creds: Admin, deps: DepsDep) -> ListUnsubscribeOut:
    return ListUnsubscribeOut(**list_unsubscribe.view(
        await deps.access.tenant(creds.tenant.tenant_id)))


@router.put("/list-unsubscribe", response_model=ListUnsubscribeOut,
            responses={**AUTH_ERRORS, 400: err(
                "neither url nor mailto, a url that is not https:, a mailto that is not "
                "mailto:, or a space, comma or angle bracket in either")},
            summary="Add List-Unsubscribe (and one-click List-Unsubscribe-Post) to the "
                    "tenant's notifications",
            description=_LIST_UNSUBSCRIBE_WHY + " Both headers are DKIM-signed. Replaces "
                        "the previous setting.")
async def put_list_unsubscribe(body: ListUnsubscribeIn, creds: Admin, deps: DepsDep,
                               request: Request) -> ListUnsubscribeOut:
    return ListUnsubscribeOut(**await list_unsubscribe.put(
        creds=creds, url=body.url, mailto=body.mailto, repo=deps.access, events=deps.events,
        origin=origin(request), now=_millis(datetime.now(UTC))))


@router.delete("/list-unsubscribe", status_code=204, responses=AUTH_ERRORS,
               summary="Back to the default: no List-Unsubscribe on notifications")
async def delete_list_unsubscribe(creds: Admin, deps: DepsDep, request: Request) -> None:
    await list_unsubscribe.delete(creds=creds, repo=deps.access, events=deps.events,
                                  origin=origin(request))
