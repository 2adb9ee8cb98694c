"""What the webmail needs besides retrieve's own ports, built at start-up and closed at
shutdown through the router's lifespan (FastAPI merges it into the app's)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape

from secmsg.retrieve.settings import WebSettings
from secmsg.retrieve.web.queries import WebQueries
from secmsg.shared.colours import brand_colour_problem

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"


@dataclass
class WebContext:
    settings: WebSettings
    queries: WebQueries
    http: httpx.AsyncClient
    templates: Environment
    csrf_key: bytes


def _templates() -> Environment:
    from secmsg.retrieve.web import filters

    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]), auto_reload=False)
    env.filters.update(size=filters.human_size, when=filters.when, day=filters.day)
    return env


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = WebSettings()
    deps = app.state.deps
    # The CSRF key is derived from retrieve's code pepper: already a required production
    # secret, kept out of the database, so no new secret to distribute.
    pepper = deps.settings.code_pepper.encode()
    http = httpx.AsyncClient(timeout=settings.web_ingest_timeout_s)
    try:
        app.state.webmail = WebContext(
            settings=settings, queries=WebQueries(deps.database), http=http,
            templates=_templates(),
            csrf_key=hmac.new(pepper, b"secmsg-webmail-csrf", hashlib.sha256).digest())
        yield
    finally:
        await http.aclose()


def get_web(request: Request) -> WebContext:
    web: WebContext = request.app.state.webmail
    return web


WebDep = Annotated[WebContext, Depends(get_web)]


def brand_of(tenant: dict[str, Any] | None) -> dict[str, Any]:
    """Display name, logo and colour of a tenant, each checked; neutral defaults otherwise."""
    import re

    tenant = tenant or {}
    branding = tenant.get("branding") or {}
    logo = branding.get("logo_url") if isinstance(branding, dict) else None
    color = branding.get("primary_color") if isinstance(branding, dict) else None
    # Only what the page CSP allows (img-src 'self' data:): a same-origin path or an inline
    # raster image. A remote logo would be blocked by the CSP anyway, and would leak reads.
    if not (isinstance(logo, str) and (
            re.fullmatch(r"/[A-Za-z0-9/._-]{1,200}", logo)
            or re.fullmatch(r"data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=]{1,200000}",
                            logo))):
        logo = None
    if not (isinstance(color, str) and re.fullmatch(r"#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3}", color)
            and brand_colour_problem(color) is None):  # unreadable: the neutral colour
        color = None
    name = tenant.get("display_name") or tenant.get("name") or "Secure messages"
    return {"tenant_id": tenant.get("_id"), "name": str(name), "logo_url": logo,
            "color": color, "footer": tenant.get("footer"),
            "disclaimers": [str(d) for d in tenant.get("disclaimers") or []]}
