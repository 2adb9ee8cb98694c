"""HTTP header values built from untrusted stored data (filenames, content types)."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

_MEDIA_TYPE_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(\"[^\"\\\x00-\x1f\x7f]*\"|[A-Za-z0-9!#$&^_.+-]+))*$")
FALLBACK_NAME = "download"


def safe_filename(name: str | None) -> str:
    """The last path component, without control or format characters; never empty or dots."""
    raw = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in raw if unicodedata.category(c)[0] != "C").strip().strip(".")
    return cleaned[:200] or FALLBACK_NAME


def content_disposition(name: str | None) -> str:
    """``attachment`` with an ASCII fallback and the exact name in RFC 5987 form."""
    clean = safe_filename(name)
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;%' else "_"
                         for c in unicodedata.normalize("NFKD", clean)
                         if not unicodedata.combining(c)).strip() or FALLBACK_NAME
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(clean, safe='')}"


def safe_content_type(value: str | None) -> str:
    if value and _MEDIA_TYPE_RE.match(value.strip()):
        return value.strip()
    return "application/octet-stream"
