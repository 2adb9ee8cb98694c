"""Sender HTML made safe to show inside a webmail page.

nh3 (ammonia) keeps a small set of formatting tags and drops everything that runs or loads:
script, style, event handlers, forms, frames, ``javascript:`` and other odd schemes. On top:

* links never point straight at the sender's target: they go through the ``/web/out``
  interstitial, which shows the full target before the user follows it;
* remote images are dropped unless the user consented for this message (tracking pixels
  confirm a read to the sender); ``data:`` images are inline content and always stay;
* ``style``, ``class`` and ``id`` go: inline style is refused by the page CSP anyway, and
  class/id would let a message restyle or clobber the page around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd",
    "del", "details", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s",
    "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "time", "tr", "u", "ul",
}
ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "abbr": {"title"},
    "time": {"datetime"},
    "ol": {"start"},
}
# Removed with their content, not just unwrapped.
DROP_WITH_CONTENT = {"script", "style", "template", "noscript", "iframe", "object", "svg",
                     "math", "textarea", "select", "title", "head"}
LINK_SCHEMES = {"http", "https", "mailto"}
_DATA_IMAGE = ("data:image/png;", "data:image/gif;", "data:image/jpeg;", "data:image/webp;")


@dataclass(frozen=True)
class CleanHtml:
    html: str
    blocked_images: int  # remote images left out for lack of consent


def outbound_link(target: str) -> str:
    return "/web/out?u=" + quote(target, safe="")


def clean_html(raw: str, *, allow_remote_images: bool = False) -> CleanHtml:
    blocked = 0

    def on_attribute(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        v = value.strip()
        if tag == "a" and attr == "href":
            scheme = urlsplit(v).scheme.lower()
            return outbound_link(v) if scheme in LINK_SCHEMES else None
        if tag == "img" and attr == "src":
            if v.lower().startswith(_DATA_IMAGE):
                return v
            if urlsplit(v).scheme.lower() in ("http", "https"):
                if allow_remote_images:
                    return v
                blocked += 1
            return None
        return value

    html = nh3.clean(raw, tags=TAGS, clean_content_tags=DROP_WITH_CONTENT,
                     attributes=ATTRIBUTES, attribute_filter=on_attribute,
                     url_schemes={"http", "https", "mailto", "data"},
                     link_rel="noopener noreferrer nofollow")
    return CleanHtml(html, blocked)


def has_remote_images(raw: str) -> bool:
    return clean_html(raw).blocked_images > 0
