"""Tenant administration: tenants, API keys, indexes. Also a CLI::

    python -m secmsg.ingest.admin create-tenant acme --name "Acme Medical" \\
        --max-recipients 50 --footer "Sent by Acme ..." --disclaimer "Confidential ..."
    python -m secmsg.ingest.admin create-api-key acme --label outlook-addin
    python -m secmsg.ingest.admin create-api-key acme --label admin-console --admin
    python -m secmsg.ingest.admin revoke-api-key <key_id>

An API key is ``smk_<key_id>_<secret>`` and is shown once; only its SHA-256 is stored. Its
``scopes`` say what it may do: ``send`` (submit messages, the default; also what a key without
``scopes`` may do) and/or ``admin`` (the tenant's own admin API, e.g. templates).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from secmsg.ingest.adapters.mongo import ensure_indexes, hash_api_key
from secmsg.ingest.ports import SCOPE_ADMIN, SCOPE_SEND
from secmsg.ingest.tenants import DEFAULT_EXPIRY_DAYS, DEFAULT_LIMITS
from secmsg.shared import mongo
from secmsg.shared.errors import InvalidInput, NotFound
from secmsg.shared.settings import CommonSettings
from secmsg.shared.subjects import TENANT_ID_RE

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from secmsg.shared.events import TenantAspect

__all__ = ["create_api_key", "create_tenant", "ensure_indexes", "main", "revoke_api_key"]

KEY_PREFIX = "smk"
_POLICY_KEYS = {"display_name", "default_expiry_days", "footer", "disclaimers"}


async def create_tenant(db: AsyncDatabase[Any], *, tenant_id: str, name: str,
                        **policy: Any) -> dict[str, Any]:
    """Create the tenant, or update its name and the policy given (others stay). Idempotent.

    ``policy``: ``max_message_bytes``, ``max_recipients``, ``max_attachments``,
    ``max_envelope_bytes``, ``default_expiry_days`` (None: no expiry), ``footer``,
    ``disclaimers`` (list), ``display_name``.
    """
    if not TENANT_ID_RE.match(tenant_id):
        raise InvalidInput(f"tenant id {tenant_id!r} must match {TENANT_ID_RE.pattern}")
    unknown = set(policy) - set(DEFAULT_LIMITS) - _POLICY_KEYS
    if unknown:
        raise InvalidInput(f"unknown tenant settings: {', '.join(sorted(unknown))}")
    for key in DEFAULT_LIMITS:
        if key in policy and (not isinstance(policy[key], int) or policy[key] <= 0):
            raise InvalidInput(f"{key} must be a positive integer")
    async with mongo.unavailable_as_503():
        existing = await db[mongo.TENANTS].find_one({"_id": tenant_id}) or {}
        limits = {**DEFAULT_LIMITS, **(existing.get("limits") or {}),
                  **{k: v for k, v in policy.items() if k in DEFAULT_LIMITS}}
        doc: dict[str, Any] = {
            "name": name,
            "display_name": policy.get("display_name", name),
            "limits": limits,
            "default_expiry_days": policy.get(
                "default_expiry_days", existing.get("default_expiry_days", DEFAULT_EXPIRY_DAYS)),
            "footer": policy.get("footer", existing.get("footer")),
            "disclaimers": list(policy.get("disclaimers", existing.get("disclaimers", []))),
        }
        await db[mongo.TENANTS].update_one(
            {"_id": tenant_id},
            {"$set": doc, "$setOnInsert": {"created_at": datetime.now(UTC)}}, upsert=True)
        return dict(await db[mongo.TENANTS].find_one({"_id": tenant_id}) or {})


_SCOPES = (SCOPE_SEND, SCOPE_ADMIN)


async def create_api_key(db: AsyncDatabase[Any], *, tenant_id: str, label: str = "default",
                         scopes: tuple[str, ...] = (SCOPE_SEND,)) -> str:
    """Create an API key for the tenant and return it; it cannot be shown again."""
    unknown = set(scopes) - set(_SCOPES)
    if unknown or not scopes:
        raise InvalidInput(f"scopes must be a non-empty subset of {', '.join(_SCOPES)}")
    async with mongo.unavailable_as_503():
        if await db[mongo.TENANTS].find_one({"_id": tenant_id}) is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        await db[mongo.API_KEYS].insert_one({
            "_id": hash_api_key(key), "tenant_id": tenant_id, "key_id": key_id,
            "label": label, "scopes": [s for s in _SCOPES if s in scopes],
            "created_at": datetime.now(UTC), "revoked_at": None})
    return key


async def revoke_api_key(db: AsyncDatabase[Any], *, key_id: str) -> bool:
    async with mongo.unavailable_as_503():
        res = await db[mongo.API_KEYS].update_one(
            {"key_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": datetime.now(UTC)}})
    return res.modified_count == 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m secmsg.ingest.admin",
                                description="secmsg tenant administration")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("create-tenant", help="create or update a tenant")
    t.add_argument("tenant_id")
    t.add_argument("--name", required=True, help="display name")
    for opt in ("max-message-bytes", "max-recipients", "max-attachments",
                "max-envelope-bytes", "default-expiry-days"):
        t.add_argument(f"--{opt}", type=int)
    t.add_argument("--footer")
    t.add_argument("--disclaimer", action="append", dest="disclaimers",
                   help="legal disclaimer (repeatable)")
    k = sub.add_parser("create-api-key", help="create an API key (printed once)")
    k.add_argument("tenant_id")
    k.add_argument("--label", default="default")
    k.add_argument("--admin", action="store_true",
                   help="an admin key (tenant admin API, e.g. templates) instead of a sending key")
    k.add_argument("--send", action="store_true",
                   help="with --admin: the key may also submit messages")
    r = sub.add_parser("revoke-api-key", help="revoke an API key by its key id")
    r.add_argument("key_id")
    return p


async def announce_change(settings: CommonSettings, tenant_id: str,
                          aspect: TenantAspect) -> bool:
    """Publish ``tenant.changed`` so running services drop their cached keys and settings of
    the tenant at once; False (and a warning) if NATS cannot be reached: they then notice
    within ``SECMSG_TENANT_CACHE_TTL_S``."""
    from secmsg.shared import bus
    from secmsg.shared.events import event_msg_id
    from secmsg.shared.tenant_cache import tenant_changed

    change = tenant_changed(tenant_id, aspect)
    try:
        nc = await asyncio.wait_for(
            bus.connect(settings.nats_url, "secmsg-ingest-admin",
                        **bus.connect_options(settings)), timeout=10)
    except Exception as exc:
        print(f"warning: NATS unreachable ({type(exc).__name__}): running services may use "
              f"their cached copy for up to {settings.tenant_cache_ttl_s:g} s",
              file=sys.stderr)
        return False
    try:
        await bus.EventPublisher(nc).publish(change, event_msg_id(change, change.change_id))
        return True
    except Exception as exc:
        print(f"warning: tenant.changed not published ({type(exc).__name__}): running "
              f"services may use their cached copy for up to {settings.tenant_cache_ttl_s:g} s",
              file=sys.stderr)
        return False
    finally:
        await nc.close()


async def _run(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    client = mongo.make_client(settings)
    try:
        db = client[settings.mongo_db]
        await ensure_indexes(db)
        if args.command == "create-tenant":
            policy = {k: v for k, v in vars(args).items()
                      if k not in ("command", "tenant_id", "name") and v is not None}
            doc = await create_tenant(db, tenant_id=args.tenant_id, name=args.name, **policy)
            print(f"tenant {doc['_id']} ({doc['name']}) limits={doc['limits']}")
            await announce_change(settings, args.tenant_id, "policy")
        elif args.command == "create-api-key":
            scopes = ((SCOPE_ADMIN,) + ((SCOPE_SEND,) if args.send else ())
                      if args.admin else (SCOPE_SEND,))
            print(await create_api_key(db, tenant_id=args.tenant_id, label=args.label,
                                       scopes=scopes))
        else:
            key = await db[mongo.API_KEYS].find_one({"key_id": args.key_id}, {"tenant_id": 1})
            if not await revoke_api_key(db, key_id=args.key_id):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
            if key is not None:
                await announce_change(settings, str(key["tenant_id"]), "api_keys")
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (InvalidInput, NotFound) as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
