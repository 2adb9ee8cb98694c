"""The one-time-code email body: the tenant's ``code_email_text``/``code_email_html``
templates (``tenants.templates``, sandboxed by ``shared/templating.py`` exactly as notify
renders notifications), falling back to the shipped defaults."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from secmsg.shared import templating
from secmsg.shared.errors import InvalidInput

log = logging.getLogger(__name__)

TEXT, HTML = "code_email_text", "code_email_html"
# The shipped defaults are ours: their limits are only a safety net.
_DEFAULT_LIMITS = templating.Limits(max_source_bytes=1 << 20, max_output_bytes=1 << 20,
                                    render_timeout_s=5.0)


def _render(kind: str, sources: Mapping[str, str], context: dict[str, Any]) -> str:
    source = sources.get(kind)
    if source is not None:
        try:
            out = templating.render_limited(templating.compile_checked(kind, source), context)
            if str(context["code"]) in out:  # a code mail without its code is useless
                return out
            log.warning("tenant template %s lost the code; the default is used", kind)
        except InvalidInput as exc:
            # Only the error class: the message could quote template text.
            log.warning("tenant template %s failed at render (%s); the default is used",
                        kind, exc.code)
    default = templating.compile_checked(kind, templating.KINDS[kind].default,
                                         limits=_DEFAULT_LIMITS)
    return templating.render_limited(default, context, limits=_DEFAULT_LIMITS)


def render(*, code: str, purpose: str, valid_minutes: int, tenant_name: str,
           footer: str | None, disclaimers: list[str],
           sources: Mapping[str, str], logo_url: str | None = None) -> tuple[str, str]:
    """(text, html) of the code email; the variables are ``templating.KINDS``'s."""
    context: dict[str, Any] = {"code": code, "purpose": purpose,
                               "valid_minutes": valid_minutes, "tenant_name": tenant_name,
                               "logo_url": logo_url, "footer": footer,
                               "disclaimers": list(disclaimers)}
    return _render(TEXT, sources, context), _render(HTML, sources, context)
