"""Revoked and recalled messages (``revocations`` written directly, as ingest does): 410 for
an addressed recipient, 404 for anyone else, gone from listings, and a download in progress
cut off after the revocation lands."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devstack.services import ServiceProc
from secmsg.retrieve import downloads, tokens
from secmsg.retrieve.access import RECHECK_BYTES, Gone, RevocationGuard
from secmsg.retrieve.ports import SessionRecord
from secmsg.shared import mongo
from tests.retrieve.helpers import ALICE, TENANT, Running, Seeder, bearer
from tests.toolbar.helpers import insert_token

CAROL = "carol@example.org"


async def token_for(app: Running, email: str) -> str:
    d = app.deps
    issued = await tokens.issue_token(tokens=d.tokens, accounts=d.accounts, audit=d.audit,
                                      tenant_id=TENANT, email=email, scopes=["read"],
                                      client="test", now=d.clock())
    return issued.token


async def revoke(db: Any, message_id: str, who: str, kind: str) -> None:
    await db[mongo.REVOCATIONS].insert_one({
        "_id": f"{message_id}:{who}", "tenant_id": TENANT, "message_id": message_id,
        "recipient": who, "kind": kind, "at": datetime.now(UTC), "by": "doctor@acme.example"})


async def test_revoked_is_410_for_that_recipient_only(app: Running, seeder: Seeder,
                                                      mongo_db: Any) -> None:
    msg = await seeder.message(to=["bob@example.org", ALICE],
                               attachments=[("a.txt", "text/plain", b"x" * 3000)])
    other = await seeder.message(to=[CAROL])  # carol can sign in; msg is not hers
    bob, alice, carol = [await token_for(app, a)
                         for a in ("bob@example.org", ALICE, CAROL)]
    att = next(iter(msg.attachments))
    await revoke(mongo_db, msg.message_id, "bob@example.org", "revoked")

    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(bob))
    assert r.status_code == 410 and r.json()["error"] == "revoked"
    r = await app.client.get(f"/v1/messages/{msg.message_id}/attachments/{att}",
                             headers=bearer(bob))
    assert r.status_code == 410 and r.json()["error"] == "revoked"
    listing = await app.client.get("/v1/messages", headers=bearer(bob))
    assert listing.json()["messages"] == []

    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(alice))
    assert r.status_code == 200  # revoked for bob, not for alice
    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(carol))
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await app.client.get(f"/v1/messages/{other.message_id}", headers=bearer(carol))
    assert r.status_code == 200

    # Restoring access is deleting the entry: the next request reads again.
    await mongo_db[mongo.REVOCATIONS].delete_one({"_id": f"{msg.message_id}:bob@example.org"})
    r = await app.client.get(f"/v1/messages/{msg.message_id}", headers=bearer(bob))
    assert r.status_code == 200


async def test_recalled_is_410_for_every_recipient_and_404_for_others(
        app: Running, seeder: Seeder, mongo_db: Any) -> None:
    msg = await seeder.message(to=["bob@example.org", ALICE])
    await seeder.message(to=[CAROL])
    await revoke(mongo_db, msg.message_id, "*", "recalled")
    # store later marks it recalled and purges it: still 410, not 404, for recipients.
    await mongo_db[mongo.MESSAGES].update_one({"_id": msg.message_id},
                                             {"$set": {"state": "recalled"}})
    for who in ("bob@example.org", ALICE):
        r = await app.client.get(f"/v1/messages/{msg.message_id}",
                                 headers=bearer(await token_for(app, who)))
        assert r.status_code == 410 and r.json()["error"] == "recalled", who
    r = await app.client.get(f"/v1/messages/{msg.message_id}",
                             headers=bearer(await token_for(app, CAROL)))
    assert r.status_code == 404


async def test_download_in_progress_stops_within_1_mib_of_a_revocation(
        app: Running, seeder: Seeder, mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worst case: the revocation lands just after a re-check said "still yours". At most
    # RECHECK_BYTES (1 MiB) may leave after that (once a whole object-store read did).
    assert RECHECK_BYTES == 1024 * 1024
    size = 10 * 1024 * 1024  # several object-store reads (1 MiB each)
    msg = await seeder.message(to=["bob@example.org"],
                               attachments=[("big.bin", "application/octet-stream",
                                             bytes(range(256)) * (size // 256))])
    att = next(iter(msg.attachments))
    d = app.deps
    # The byte bound alone (the time one: test_time_allowance_bounds_lookups_and_still_stops).
    monkeypatch.setattr(d.messages, "recheck_s", 0.0)
    who = SessionRecord(token_hash="t", tenant_id=TENANT, address="bob@example.org",
                        expires_at=None)
    plan = await downloads.plan_download(session=who, message_id=msg.message_id,
                                       object_id=att, range_header=None, if_range=None,
                                       messages=d.messages, audit=d.audit, client_ip=None,
                                       user_agent=None, now=d.clock())
    received = 0
    at_revocation: list[int] = []
    real_check = d.messages.check

    async def check_then_revoke(**who: str) -> None:
        await real_check(**who)  # passes: still bob's
        if not at_revocation:
            await revoke(mongo_db, msg.message_id, "bob@example.org", "revoked")
            at_revocation.append(received)

    monkeypatch.setattr(d.messages, "check", check_then_revoke)
    stream = downloads.stream_download(download=plan, blobs=d.blobs, keyring=d.keyring)
    with pytest.raises(Gone) as caught:
        async for chunk in stream:
            received += len(chunk)
    assert caught.value.code == "revoked"
    assert at_revocation, "no re-check while streaming"
    assert received - at_revocation[0] <= RECHECK_BYTES
    assert received < size  # the rest never left


async def test_https_download_is_cut_when_revoked(
        services: Callable[..., ServiceProc], seeder: Seeder, mongo_db: Any) -> None:
    """The same through a real retrieve process: the status line and the first bytes are out,
    then the revocation lands and the server cuts the connection."""
    size = 24 * 1024 * 1024
    data = bytes(range(256)) * (size // 256)
    msg = await seeder.message(to=["bob@example.org"],
                               attachments=[("big.bin", "application/octet-stream", data)])
    att = next(iter(msg.attachments))
    token, _ = await insert_token(mongo_db, tenant_id=TENANT, email="bob@example.org")
    # Bytes only: with the time allowance the whole 24 MiB may leave within it on loopback.
    svc = services("retrieve", SECMSG_RETRIEVE_DOWNLOAD_RECHECK_S="0")
    received = bytearray()
    async with httpx.AsyncClient(base_url=svc.base_url, verify=False, timeout=30) as client:
        with pytest.raises(httpx.TransportError):
            async with client.stream("GET", f"/v1/messages/{msg.message_id}/attachments/{att}",
                                     headers=bearer(token)) as resp:
                assert resp.status_code == 200
                async for chunk in resp.aiter_raw():
                    if not received:
                        await revoke(mongo_db, msg.message_id, "bob@example.org", "revoked")
                    received += chunk
    assert 0 < len(received) < size
    assert data.startswith(bytes(received))
    async with httpx.AsyncClient(base_url=svc.base_url, verify=False, timeout=30) as client:
        r = await client.get(f"/v1/messages/{msg.message_id}/attachments/{att}",
                             headers=bearer(token))
    assert r.status_code == 410 and r.json()["error"] == "revoked"


class CountingRepo:
    """The guard's view of the repository: counts lookups; ``revoked`` makes them fail."""

    recheck_bytes = RECHECK_BYTES
    recheck_s = 0.25

    def __init__(self) -> None:
        self.lookups = 0
        self.revoked = False

    async def check(self, **who: str) -> None:
        self.lookups += 1
        if self.revoked:
            raise Gone("revoked")


async def test_time_allowance_bounds_lookups_and_still_stops() -> None:
    """Within ``recheck_s`` of the last passing check whole chunks go out with no lookup per
    MiB; past it, a revocation stops the stream before the byte allowance is used up again."""
    now = [0.0]
    repo = CountingRepo()
    chunk = b"x" * (4 * RECHECK_BYTES)

    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield chunk

    guard = RevocationGuard(repo, tenant_id=TENANT, message_id="m",  # type: ignore[arg-type]
                            address="bob@example.org", clock=lambda: now[0])
    sizes = [len(c) async for c in guard.wrap(chunks(16))]  # 64 MiB, the clock standing still
    assert sizes == [len(chunk)] * 16 and repo.lookups == 0

    bytes_only = RevocationGuard(repo, tenant_id=TENANT, message_id="m",  # type: ignore[arg-type]
                                 address="bob@example.org", every_s=0, clock=lambda: now[0])
    assert sum([len(c) async for c in bytes_only.wrap(chunks(16))]) == 16 * len(chunk)
    assert repo.lookups >= 60  # about one per MiB

    repo.lookups = 0
    guard = RevocationGuard(repo, tenant_id=TENANT, message_id="m",  # type: ignore[arg-type]
                            address="bob@example.org", clock=lambda: now[0])
    received = 0
    with pytest.raises(Gone):
        async for c in guard.wrap(chunks(16)):
            received += len(c)
            if received == 2 * len(chunk):
                repo.revoked = True  # recorded now...
                now[0] += 1.0  # ...and the time allowance runs out
    # After the revocation at most the byte allowance left (the time one had passed).
    assert received - 2 * len(chunk) <= RECHECK_BYTES
    assert repo.lookups <= 3
