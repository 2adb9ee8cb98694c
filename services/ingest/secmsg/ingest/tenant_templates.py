"""Tenant-editable notification templates: list, preview, save, reset.

Every source is validated with ``secmsg.shared.templating.validate`` (the same sandbox and
limits notify renders with) against a sample carrying the tenant's own name, footer and
disclaimers before it is stored; an invalid source is refused and the stored one -- the last
good version -- stays. The render runs in a worker thread: the cooperative time limit bounds it
and the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from secmsg.ingest.ports import StoredTemplate, TemplateStore, TenantProfile
from secmsg.shared import templating
from secmsg.shared.errors import NotFound


@dataclass(frozen=True)
class TemplateView:
    kind: str
    source: str
    is_default: bool
    version: int | None
    updated_at: datetime | None


def _view(kind: str, stored: StoredTemplate | None) -> TemplateView:
    if stored is None:
        return TemplateView(kind, templating.KINDS[kind].default, True, None, None)
    return TemplateView(kind, stored.source, False, stored.version, stored.updated_at)


def _kind(kind: str) -> None:
    if kind not in templating.KINDS:
        raise NotFound(f"there is no template kind {kind!r}; kinds: "
                       f"{', '.join(templating.KINDS)}")


async def _validate(profile: TenantProfile, kind: str, source: str) -> str:
    context = templating.sample_context(kind, tenant_name=profile.display_name,
                                        footer=profile.footer, disclaimers=profile.disclaimers)
    return await asyncio.to_thread(templating.validate, kind, source, context)


async def list_templates(*, tenant_id: str, store: TemplateStore) -> list[TemplateView]:
    profile = await store.profile(tenant_id)
    return [_view(kind, profile.templates.get(kind)) for kind in templating.KINDS]


async def preview(*, tenant_id: str, kind: str, source: str, store: TemplateStore) -> str:
    _kind(kind)
    return await _validate(await store.profile(tenant_id), kind, source)


async def save(*, tenant_id: str, kind: str, source: str, key_id: str, store: TemplateStore,
               now: datetime) -> TemplateView:
    _kind(kind)
    await _validate(await store.profile(tenant_id), kind, source)
    return _view(kind, await store.save(tenant_id, kind=kind, source=source, key_id=key_id,
                                        now=now))


async def reset(*, tenant_id: str, kind: str, store: TemplateStore) -> TemplateView:
    _kind(kind)
    await store.delete(tenant_id, kind=kind)
    return _view(kind, None)
