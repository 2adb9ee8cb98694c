"""The one-time-code email body: the tenant's ``code_email_text``/``code_email_html``
templates (``tenants.templates``, sandboxed by ``shared/templating.py`` exactly as notify
renders notifications), falling back to the shipped defaults."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from secmsg.shared import templating

log = logging.getLogger(__name__)

TEXT, HTML = "code_email_text", "code_email_html"


def _render(kind: str, sources: Mapping[str, str], context: dict[str, Any]) -> str:
    return templating.render_or_default(kind, sources.get(kind), context, log=log)


def render(*, code: str, purpose: str, valid_minutes: int, tenant_name: str,
           footer: str | None, disclaimers: list[str],
           sources: Mapping[str, str], logo_url: str | None = None) -> tuple[str, str]:
    """(text, html) of the code email; the variables are ``templating.KINDS``'s."""
    context: dict[str, Any] = {"code": code, "purpose": purpose,
                               "valid_minutes": valid_minutes, "tenant_name": tenant_name,
                               "logo_url": logo_url, "footer": footer,
                               "disclaimers": list(disclaimers)}
    return _render(TEXT, sources, context), _render(HTML, sources, context)
