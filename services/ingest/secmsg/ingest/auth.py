"""Bearer API-key authentication shared by the sending and the admin routes."""

from __future__ import annotations

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from secmsg.ingest.ports import Credentials, TenantDirectory
from secmsg.shared import logs
from secmsg.shared.errors import Forbidden, Unauthorized

bearer = HTTPBearer(auto_error=False, description="The tenant's API key: smk_<key_id>_<secret>")


async def authenticate(tenants: TenantDirectory, auth: HTTPAuthorizationCredentials | None,
                       *, scope: str) -> Credentials:
    if auth is None or not auth.credentials:
        raise Unauthorized("an API key is required: 'Authorization: Bearer <key>'")
    creds = await tenants.authenticate(auth.credentials)
    if creds is None:
        raise Unauthorized("the API key is unknown or revoked")
    logs.tenant_id.set(creds.tenant.tenant_id)
    if scope not in creds.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope "
                        f"(it has: {', '.join(sorted(creds.scopes)) or 'none'})")
    return creds
