"""The template kinds a tenant may edit: what each one may show (its variables), what it must
show (its required variables), its shipped default (a file in ``defaults/``, shipped in the
wheel as package data) and the sample a preview and the save-time check render.

The defaults are whole templates, each one self-contained (a tenant template may not include
another), so each is exactly what a tenant copies to edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from secmsg.shared.errors import InvalidInput

__all__ = ["KINDS", "SAMPLE_LINK", "SAMPLE_LOGO", "Kind", "get_kind", "notification_context",
           "sample_context"]

# What every kind may show of the tenant (``tenants.display_name``, ``branding.logo_url``,
# ``footer``, ``disclaimers``).
_TENANT_VARIABLES: dict[str, str] = {
    "tenant_name": "the tenant's display name",
    "logo_url": "the tenant's logo (an https: or data:image URL), or none",
    "footer": "the tenant's footer, or none",
    "disclaimers": "the tenant's legal disclaimers (list of strings)",
}

_NOTIFICATION_VARIABLES: dict[str, str] = {
    "sender": "the sender's email address",
    "subject": "the message subject as the sender wrote it",
    "attachment_count": "number of attachments (int)",
    "expires_at": "UTC datetime after which the message is gone, or none "
                  "(e.g. expires_at.strftime('%Y-%m-%d'))",
    "link": "the URL of the message (required: a notification without it is useless)",
    "link_host": "the host name the link leads to (for the 'is this email genuine?' line)",
    **_TENANT_VARIABLES,
    "disclaimer": "the message's own disclaimer, or none",
    "message_id": "the message id (notify adds the toolbar markers itself)",
}

_CODE_VARIABLES: dict[str, str] = {
    "code": "the one-time code (required)",
    "purpose": "what the code is for: 'signin', 'register' or 'reset'",
    "valid_minutes": "how long the code is valid (int)",
    **_TENANT_VARIABLES,
}

def _default(filename: str) -> str:
    files = resources.files("secmsg.shared.templating")
    return (files / "defaults" / filename).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Kind:
    """One editable template: its variables, and the ones whose value must show in the output
    (a notification without its link, or a code mail without its code, is useless)."""

    name: str
    html: bool
    default: str
    variables: Mapping[str, str]
    required: tuple[str, ...] = ()




KINDS: dict[str, Kind] = {
    "notification_text": Kind("notification_text", False, _default("notification.txt"),
                              _NOTIFICATION_VARIABLES, ("link",)),
    "notification_html": Kind("notification_html", True, _default("notification.html"),
                              _NOTIFICATION_VARIABLES, ("link",)),
    # The one-time-code mail retrieve sends (sign-in, registration, password reset).
    "code_email_text": Kind("code_email_text", False, _default("code_email.txt"),
                            _CODE_VARIABLES, ("code",)),
    "code_email_html": Kind("code_email_html", True, _default("code_email.html"),
                            _CODE_VARIABLES, ("code",)),
}

SAMPLE_LINK = "https://secure.example/m/sample/0123456789abcdef0123456789abcdef"
SAMPLE_LOGO = "https://secure.example/logo.png"


def sample_context(kind: str, *, tenant_name: str = "Example Clinic",
                   footer: str | None = "Example Clinic, 1 Example Street",
                   disclaimers: Iterable[str] = ("Confidential: for the named recipients.",),
                   ) -> dict[str, Any]:
    """What a preview renders; also the save-time check. The subject holds markup on purpose
    (it must come out escaped in HTML)."""
    if get_kind(kind).name.startswith("code_email"):
        return {"code": "12345678", "purpose": "signin", "valid_minutes": 10,
                "tenant_name": tenant_name, "logo_url": SAMPLE_LOGO, "footer": footer,
                "disclaimers": list(disclaimers)}
    return notification_context(
        sender="alice@example.com", subject="Lab results <b>& more</b>", attachment_count=2,
        expires_at=datetime(2030, 1, 31, 12, 0, tzinfo=UTC), link=SAMPLE_LINK,
        tenant_name=tenant_name, logo_url=SAMPLE_LOGO, footer=footer, disclaimers=disclaimers,
        disclaimer="Please do not forward.", message_id="0123456789abcdef0123456789abcdef")


def notification_context(*, sender: str, subject: str, attachment_count: int,
                         expires_at: datetime | None, link: str, tenant_name: str,
                         logo_url: str | None, footer: str | None, disclaimers: Iterable[str],
                         disclaimer: str | None, message_id: str) -> dict[str, Any]:
    """The variables of a notification kind (``_NOTIFICATION_VARIABLES``), the derived ones
    included -- what notify's notifications and ingest's placeholders render."""
    return {
        "sender": sender, "subject": subject, "attachment_count": attachment_count,
        "expires_at": expires_at, "link": link,
        "link_host": urlsplit(link).hostname or link,
        "tenant_name": tenant_name, "logo_url": logo_url, "footer": footer,
        "disclaimers": list(disclaimers), "disclaimer": disclaimer, "message_id": message_id,
    }


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidInput(f"unknown template kind {name!r}; kinds: "
                           f"{', '.join(sorted(KINDS))}") from None
