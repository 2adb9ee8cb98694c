"""The wired ports of one running app, and the FastAPI dependencies that hand them out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from secmsg.retrieve import service
from secmsg.retrieve.accounts import AccountPorts
from secmsg.retrieve.passkeys import PasskeyPorts
from secmsg.retrieve.ports import (
    AccountRepo,
    AuditPublisher,
    BlobReader,
    CodeMailer,
    CodeRepo,
    DeviceRepo,
    ExpiredCleaner,
    MarkerRepo,
    MessageRepo,
    PasskeyRepo,
    PolicyRepo,
    RateLimiter,
    RevocationRepo,
    SessionRecord,
    SessionRepo,
    TenantRepo,
    TokenRepo,
)
from secmsg.retrieve.settings import RetrieveSettings
from secmsg.shared.crypto import KeyRing


@dataclass
class Deps:
    settings: RetrieveSettings
    keyring: KeyRing
    messages: MessageRepo
    tenants: TenantRepo
    codes: CodeRepo
    sessions: SessionRepo
    limiter: RateLimiter
    mailer: CodeMailer
    audit: AuditPublisher
    blobs: BlobReader
    janitor: ExpiredCleaner
    tokens: TokenRepo
    accounts: AccountRepo
    markers: MarkerRepo
    revocations: RevocationRepo
    policies: PolicyRepo
    devices: DeviceRepo
    passkeys: PasskeyRepo
    readiness: dict[str, Callable[[], Awaitable[None]]]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    public_url: str = "https://localhost:8443"  # SECMSG_RETRIEVE_PUBLIC_URL (links, device)
    # The app's one MongoDB database handle, for the adapters a router builds itself (the
    # webmail's queries) -- so they share the app's connection pool instead of opening one.
    database: Any = None


def account_ports(deps: Deps) -> AccountPorts:
    return AccountPorts(settings=deps.settings, keyring=deps.keyring, codes=deps.codes,
                        sessions=deps.sessions, accounts=deps.accounts, tokens=deps.tokens,
                        markers=deps.markers, limiter=deps.limiter, policies=deps.policies,
                        audit=deps.audit)


def passkey_ports(deps: Deps) -> PasskeyPorts:
    return PasskeyPorts(account=account_ports(deps), passkeys=deps.passkeys,
                        public_url=deps.public_url)


def get_deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsDep = Annotated[Deps, Depends(get_deps)]


def client_ip(request: Request) -> str:
    # uvicorn already applied X-Forwarded-For from trusted proxies (forwarded_allow_ips).
    return request.client.host if request.client else "unknown"


def user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


def session_token(request: Request, deps: DepsDep) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(deps.settings.cookie_name) or None


TokenDep = Annotated[str | None, Depends(session_token)]


async def require_session(deps: DepsDep, token: TokenDep) -> SessionRecord:
    """A browser session, or a bearer ``smt_`` token with scope ``read`` (toolbar/webmail):
    both give a record with ``tenant_id``, ``address``, ``scopes``, ``via``, ``token_id``."""
    return await service.authenticate(token=token, sessions=deps.sessions,
                                      settings=deps.settings, now=deps.clock(),
                                      tokens=deps.tokens, accounts=deps.accounts)


async def require_browser_session(deps: DepsDep, token: TokenDep) -> SessionRecord:
    """Only a signed-in session (account management: never a toolbar's token)."""
    return await service.authenticate(token=token, sessions=deps.sessions,
                                      settings=deps.settings, now=deps.clock(),
                                      tokens=deps.tokens, accounts=deps.accounts,
                                      session_only=True)


SessionDep = Annotated[SessionRecord, Depends(require_session)]
BrowserSessionDep = Annotated[SessionRecord, Depends(require_browser_session)]
ClientIpDep = Annotated[str, Depends(client_ip)]
UserAgentDep = Annotated[str | None, Depends(user_agent)]
