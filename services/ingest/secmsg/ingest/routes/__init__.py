"""ingest's HTTP routes, one module per resource; ``ROUTERS`` in the order the app includes
them (the order of the OpenAPI document):

- ``messages``: submit a message (JSON + files, or RFC 5322)
- ``admin_templates``: notification templates
- ``messages_manage``: a sent message's expiry, revocations, recall and delivery slip
- ``admin_access``: API keys, admin users, recipients' tokens, the tenant's policy
- ``admin_delivery``: audit export, delivery stats, deliverability, key rotation
- ``admin_sending``: the SMTP selection and its test, the DKIM key
- ``admin_branding``: the tenant's name, footer and disclaimers
- ``common``: what they share (auth dependencies, error bodies, body parsing)
"""

from __future__ import annotations

from fastapi import APIRouter

from secmsg.ingest.routes import (
    admin_access,
    admin_branding,
    admin_delivery,
    admin_sending,
    admin_templates,
    messages,
    messages_manage,
)

ROUTERS: tuple[APIRouter, ...] = (
    messages.router, admin_templates.router, messages_manage.router, admin_access.router,
    admin_delivery.router, admin_sending.router, admin_branding.router)
