"""The one-time-code email body: the tenant's ``code_email_text``/``code_email_html``
templates (``tenants.templates``, sandboxed by ``shared/templating.py`` exactly as notify
renders notifications), falling back to the shipped defaults. A tenant's template renders in
the shared ``templating.RenderPool`` (off the event loop, one render per tenant at a time), so
a slow one delays no other tenant's sign-in."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from secmsg.shared import templating

log = logging.getLogger(__name__)

TEXT, HTML = "code_email_text", "code_email_html"


async def render(*, tenant_id: str, code: str, purpose: str, valid_minutes: int,
                 tenant_name: str, footer: str | None, disclaimers: list[str],
                 sources: Mapping[str, str], logo_url: str | None = None,
                 pool: templating.RenderPool | None = None) -> tuple[str, str]:
    """(text, html) of the code email; the variables are ``templating.KINDS``'s."""
    context: dict[str, Any] = {"code": code, "purpose": purpose,
                               "valid_minutes": valid_minutes, "tenant_name": tenant_name,
                               "logo_url": logo_url, "footer": footer,
                               "disclaimers": list(disclaimers)}
    renderer = pool or templating.default_pool()
    text = await renderer.render_or_default(tenant_id, TEXT, sources.get(TEXT), context, log=log)
    html = await renderer.render_or_default(tenant_id, HTML, sources.get(HTML), context, log=log)
    return text, html
