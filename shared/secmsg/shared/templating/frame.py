"""The frame notify puts around a rendered notification body and ingest around an RFC 5322
submission's placeholder: the toolbar markers live here, outside the tenant's reach, so a
toolbar finds the same markers in both.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from secmsg.shared import markers

__all__ = ["message_url", "render_frames"]

_FRAME_TEXT = """{{ body }}
Secure-Message-Id: {{ message_id }}
Secure-Message-Url: {{ url }}
"""
_FRAME_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="x-apple-disable-message-reformatting">
<meta name="color-scheme" content="light dark">
<meta name="supported-color-schemes" content="light dark">
<meta name="secure-message-id" content="{{ message_id }}">
<meta name="secure-message-url" content="{{ url }}">
<title>{{ subject }}</title>
<style>
{{ css }}
</style>
</head>
<body data-secure-message-id="{{ message_id }}" data-secure-message-url="{{ url }}">
<div role="main">
{{ body }}
</div>
<span style="display:none" class="secure-message-marker">Secure-Message-Id: {{ message_id }}</span>
</body>
</html>
"""


def message_url(public_url: str, tenant_id: str, message_id: str) -> str:
    """The link in every notification and placeholder (it grants nothing by itself)."""
    return markers.message_url(public_url, tenant_id, message_id)


@functools.cache
def _css() -> str:
    # Ours, not the tenant's: a fixed sheet beside this module (package data).
    return (resources.files("secmsg.shared.templating") / "email.css").read_text(
        encoding="utf-8").strip()


@functools.cache
def _frame_templates() -> tuple[Any, Any]:
    from jinja2 import Environment, StrictUndefined

    text_env = Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                           keep_trailing_newline=True, autoescape=False)  # noqa: S701 -- plain text
    html_env = Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                           keep_trailing_newline=True, autoescape=True)
    return text_env.from_string(_FRAME_TEXT), html_env.from_string(_FRAME_HTML)


def render_frames(*, text_body: str, html_body: str, message_id: str, url: str,
                  subject: str) -> tuple[str, str]:
    """(text, html) of a notification: the rendered bodies inside the marker frames -- the one
    place the toolbar markers are written (notify's emails and ingest's placeholders).

    ``html_body`` must already be safe HTML (a sandbox render autoescapes every value)."""
    from markupsafe import Markup

    text_frame, html_frame = _frame_templates()
    css = Markup(_css())  # noqa: S704 -- our own stylesheet file, no outside input
    frame = {"message_id": message_id, "url": url, "subject": subject, "css": css}
    text = text_frame.render(frame, body=text_body)
    html = html_frame.render(frame, body=Markup(html_body))  # noqa: S704
    return text, html
