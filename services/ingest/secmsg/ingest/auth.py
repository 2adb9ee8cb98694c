"""Bearer authentication shared by every route: tenant API keys (``smk_...``) and user tokens
(``smt_...``, issued by retrieve to the toolbar and the webmail)."""

from __future__ import annotations

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from secmsg.ingest.ports import SCOPE_ADMIN, Credentials, TenantDirectory
from secmsg.shared import logs
from secmsg.shared.errors import Forbidden, Unauthorized
from secmsg.shared.ids import looks_like_user_token

bearer = HTTPBearer(auto_error=False,
                    description="The tenant's API key (smk_<key_id>_<secret>) or a user token "
                                "(smt_<token_id>_<secret>)")


async def authenticate(tenants: TenantDirectory, auth: HTTPAuthorizationCredentials | None,
                       *, scope: str | tuple[str, ...]) -> Credentials:
    """The caller, who must hold ``scope`` (or one of several)."""
    if auth is None or not auth.credentials:
        raise Unauthorized("an API key or token is required: 'Authorization: Bearer <key>'")
    creds = await tenants.authenticate(auth.credentials)
    if creds is None:
        what = "token" if looks_like_user_token(auth.credentials) else "API key"
        raise Unauthorized(f"the {what} is unknown, expired or revoked")
    logs.tenant_id.set(creds.tenant.tenant_id)
    wanted = (scope,) if isinstance(scope, str) else scope
    if not creds.scopes & set(wanted):
        need = " or ".join(repr(s) for s in wanted)
        if creds.is_token and SCOPE_ADMIN in wanted and SCOPE_ADMIN in creds.token_scopes:
            raise Forbidden("this token's user is not an admin of the tenant")
        what = "token" if creds.is_token else "API key"
        raise Forbidden(f"this {what} lacks the {need} scope "
                        f"(it has: {', '.join(sorted(creds.scopes)) or 'none'})")
    return creds
