"""The toolbar markers of a notification (and of an RFC 5322 submission's placeholder).

A toolbar recognises a notification by these, writes nothing else from it, and fetches the
message they name. They are written in two forms, both here with their parsers:

* headers ``X-Secure-Message-Id`` / ``X-Secure-Message-Url`` (notify and ingest set them);
* the same data in the body, for clients that strip unknown headers: the text lines
  ``Secure-Message-Id: <id>`` / ``Secure-Message-Url: <url>``, and in HTML the
  ``secure-message-id`` / ``-url`` meta tags, ``data-secure-message-*`` attributes and a hidden
  span (``secmsg.shared.templating``'s frames write them around every rendered body).

The link ``<public url>/m/<tenant>/<message id>`` grants nothing by itself (sign-in does);
``message_url`` writes it and ``parse_message_url`` finds it in any text.

The reference toolbar (``toolbar/``) is shipped on its own without ``secmsg.shared``; its copy
of the body pattern is checked against this module by tests/shared/test_ids.py.
"""

from __future__ import annotations

import re

from secmsg.shared.ids import HEX_ID_PATTERN

HEADER_ID = "X-Secure-Message-Id"
HEADER_URL = "X-Secure-Message-Url"
# Set by a toolbar on the copy it appended with the real content (never a notification).
HEADER_RETRIEVED = "X-Secure-Message-Retrieved"
# Headers only the platform writes: a sender's own copy of them is never passed on.
PLATFORM_HEADERS = frozenset({HEADER_ID.lower(), HEADER_URL.lower(), HEADER_RETRIEVED.lower()})

BODY_ID_LABEL = "Secure-Message-Id"
BODY_URL_LABEL = "Secure-Message-Url"

_TENANT = r"[a-z0-9][a-z0-9-]{0,39}"
_URL_PATH = re.compile(rf"/m/({_TENANT})/({HEX_ID_PATTERN})(?![0-9a-f])")
_BODY_ID = re.compile(rf"(?:{BODY_ID_LABEL}:\s*|data-secure-message-id=\"|"
                      rf"name=\"secure-message-id\" content=\")({HEX_ID_PATTERN})\b")
_BODY_URL = re.compile(rf"(?:{BODY_URL_LABEL}:\s*|data-secure-message-url=\")"
                       r"(https?://[^\s\"<>]+)")


def message_url(public_url: str, tenant_id: str, message_id: str) -> str:
    """The link in every notification and placeholder."""
    return f"{public_url.rstrip('/')}/m/{tenant_id}/{message_id}"


def parse_message_url(text: str) -> tuple[str, str] | None:
    """(tenant id, message id) of the first message link in ``text``."""
    m = _URL_PATH.search(text)
    return (m.group(1), m.group(2)) if m else None


def body_message_ids(text: str) -> list[str]:
    """Every message id the body markers name, in order (duplicates kept)."""
    return _BODY_ID.findall(text)


def body_message_urls(text: str) -> list[str]:
    """Every message link the body markers carry, in order."""
    return _BODY_URL.findall(text)
