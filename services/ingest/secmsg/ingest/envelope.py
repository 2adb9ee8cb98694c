"""The envelope part of a submission: its JSON shape and every check on header-ish values.

Values that end up in email headers (sender, recipients, subject, disclaimer, display names)
must never carry a control character: CR, LF and NUL would split a notification into extra
headers, and VT, FF, FS, GS, RS, NEL and the Unicode line and paragraph separators are line
breaks to Python's ``str.splitlines`` (which the email package folds with) and to some mail
clients. They are refused (400), TAB alone is allowed (it is folding white space). The same
rule holds for a whole message (``rfc822``). Attachment filenames are the exception: CR, LF
and NUL are refused, any other control character is dropped. Addresses are checked for
syntax only (no DNS: that leaks and is slow).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from secmsg.ingest.ports import Tenant
from secmsg.shared.errors import InvalidInput, PayloadTooLarge
from secmsg.shared.events import Recipient
from secmsg.shared.headers import check_header_value

_LINE_BREAKERS = re.compile(r"[\r\n\x00]")
_CONTENT_TYPE_RE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(;[\x20-\x7e]*)?$")
MAX_SUBJECT_CHARS = 998  # RFC 5322 line limit
MAX_DISCLAIMER_CHARS = 10_000
MAX_FILENAME_BYTES = 255
MAX_EXPIRY_DAYS = 3650


class Envelope(BaseModel):
    """What a sender submits besides attachments (JSON in the first multipart part)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    sender: StrictStr = Field(alias="from", description="Sender's email address")
    to: list[StrictStr] = Field(default_factory=list)
    cc: list[StrictStr] = Field(default_factory=list)
    bcc: list[StrictStr] = Field(
        default_factory=list,
        description="notified like the others, never shown to another recipient")
    in_reply_to: StrictStr | None = Field(
        default=None, description="the message id this one answers (audited as a reply)",
        examples=["3f2b9c1e8d7a4b6f9e0d1c2b3a495867"])
    subject: StrictStr = Field(default="", max_length=MAX_SUBJECT_CHARS)
    text: StrictStr | None = None
    html: StrictStr | None = None
    expires_at: datetime | None = None
    expires_in_days: StrictInt | None = Field(default=None, ge=1, le=MAX_EXPIRY_DAYS)
    disclaimer: StrictStr | None = Field(default=None, max_length=MAX_DISCLAIMER_CHARS)


ENVELOPE_EXAMPLE: dict[str, Any] = {
    "from": "alice@clinic.example",
    "to": ["bob@example.org"],
    "cc": ["carol@example.org"],
    "subject": "Your test results",
    "text": "Hello Bob, your results are attached.",
    "html": "<p>Hello Bob, your results are attached.</p>",
    "expires_in_days": 14,
    "disclaimer": "Confidential: for the named recipient only.",
}


def _check_line_breaks(field: str, value: str) -> None:
    if _LINE_BREAKERS.search(value):
        raise InvalidInput(f"{field} must not contain CR, LF or NUL characters")


def _address_problem(value: str) -> str | None:
    """Why ``value`` is not a valid address (None: it is)."""
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


# A pure function of the string, and a tenant's senders and recipients repeat: cached
# (email_validator cost ~5% of a small submission's CPU). Only strings that could be an
# address (RFC 5321: at most 254 characters) are kept, so the cache stays a few MiB at most.
_address_problem_cached = functools.lru_cache(maxsize=8192)(_address_problem)
_MAX_CACHED_ADDRESS = 320


def _check_address(field: str, value: str) -> str:
    check_header_value(field, value)
    problem = (_address_problem_cached(value) if len(value) <= _MAX_CACHED_ADDRESS
               else _address_problem(value))
    if problem is not None:
        raise InvalidInput(f"{field} is not a valid email address: {problem}")
    return value.strip()


def parse_envelope(raw: bytes) -> Envelope:
    try:
        return Envelope.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "envelope"
        if first.get("type") == "extra_forbidden":
            raise InvalidInput(f"envelope has an unknown field: {where}") from None
        if first.get("type", "").startswith("json"):
            raise InvalidInput("envelope is not valid JSON (UTF-8 JSON object expected)") from None
        raise InvalidInput(f"envelope field {where}: {first.get('msg')}") from None


def recipients_of(env: Envelope, tenant: Tenant) -> list[Recipient]:
    """Validated recipients, to before cc before bcc, each address once (case-insensitive)."""
    if not env.to and not env.cc and not env.bcc:
        raise InvalidInput("the message has no recipients (to, cc and bcc are empty)")
    seen: set[str] = set()
    out: list[Recipient] = []
    for kind, addrs in (("to", env.to), ("cc", env.cc), ("bcc", env.bcc)):
        for i, addr in enumerate(addrs):
            value = _check_address(f"{kind}[{i}]", addr)
            if value.lower() not in seen:
                seen.add(value.lower())
                out.append(Recipient(address=value, kind=kind))
    if len(out) > tenant.max_recipients:
        raise PayloadTooLarge(
            f"{len(out)} recipients, the tenant allows at most {tenant.max_recipients}")
    return out


def validate_envelope(env: Envelope, tenant: Tenant, now: datetime
                      ) -> tuple[str, list[Recipient], datetime | None]:
    """Check everything about the envelope; returns (sender, recipients, expires_at)."""
    sender = _check_address("from", env.sender)
    check_header_value("subject", env.subject)
    if env.disclaimer is not None:
        check_header_value("disclaimer", env.disclaimer)
    if env.text is None and env.html is None:
        raise InvalidInput("the envelope needs a text or an html body (or both)")
    recipients = recipients_of(env, tenant)
    return sender, recipients, expiry(env, tenant, now)


def expiry(env: Envelope, tenant: Tenant, now: datetime) -> datetime | None:
    if env.expires_at is not None and env.expires_in_days is not None:
        raise InvalidInput("give either expires_at or expires_in_days, not both")
    if env.expires_at is not None:
        at = env.expires_at if env.expires_at.tzinfo else env.expires_at.replace(tzinfo=UTC)
        if at <= now:
            raise InvalidInput("expires_at is in the past")
        if at > now + timedelta(days=MAX_EXPIRY_DAYS):
            raise InvalidInput(f"expires_at is more than {MAX_EXPIRY_DAYS} days away")
        return at.astimezone(UTC)
    days = env.expires_in_days if env.expires_in_days is not None else tenant.default_expiry_days
    return None if days is None else now + timedelta(days=days)


def sanitize_filename(raw: str | None) -> str:
    """Basename only, no control characters, at most 255 UTF-8 bytes, never empty.

    CR, LF and NUL are refused (a hostile client), other control characters dropped.
    """
    if raw is None:
        return "attachment"
    _check_line_breaks("attachment filename", raw)
    name = re.split(r"[/\\]", raw)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf"))
    name = name.strip().strip(".") if name.strip() in (".", "..") else name.strip()
    encoded = name.encode()
    if len(encoded) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        keep_ext = dot and 0 < len(ext.encode()) <= 16 and stem
        suffix = ("." + ext) if keep_ext else ""
        budget = MAX_FILENAME_BYTES - len(suffix.encode())
        base = (stem if keep_ext else name).encode()[:budget].decode("utf-8", "ignore")
        name = base + suffix
    return name or "attachment"


def attachment_content_type(raw: str | None) -> str:
    if raw is None:
        return "application/octet-stream"
    _check_line_breaks("attachment Content-Type", raw)
    value = raw.strip()
    if len(value) > 255 or not _CONTENT_TYPE_RE.match(value):
        return "application/octet-stream"
    return value
