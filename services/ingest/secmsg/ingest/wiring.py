"""The objects a request needs, built once at start-up and reached through ``get_deps``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from secmsg.ingest.ports import (
    AccessRepo,
    BlobStore,
    EventSink,
    IdempotencyStore,
    MessageRepo,
    Reports,
    SmtpProber,
    TemplateStore,
    TenantDirectory,
)
from secmsg.ingest.slots import UploadSlots
from secmsg.ingest.smtp_check import PlatformSmtp, RateLimiter
from secmsg.ingest.tenant_smtp import SmtpConfigStore
from secmsg.ingest.upload import Options
from secmsg.shared.crypto import KeyRing


@dataclass
class Deps:
    tenants: TenantDirectory
    idempotency: IdempotencyStore
    blobs: BlobStore
    events: EventSink
    key_ring: KeyRing
    options: Options
    uploads: UploadSlots
    templates: TemplateStore
    smtp: SmtpConfigStore
    public_url: str  # the link notify writes (SECMSG_RETRIEVE_PUBLIC_URL)
    smtp_allowed_targets: str  # operator allow-list for tenant SMTP hosts
    messages: MessageRepo
    access: AccessRepo
    reports: Reports
    prober: SmtpProber
    platform_smtp: PlatformSmtp
    smtp_test_limiter: RateLimiter


async def get_deps(request: Request) -> Deps:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool -- a thread hand-off
    # (and a GIL switch under load) on every request for an attribute read.
    deps: Deps = request.app.state.deps
    return deps
