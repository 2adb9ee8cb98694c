"""The reference agent against real servers: the platform (retrieve over HTTPS), a notification
from notify or an Outlook-path placeholder from ingest, and a real dovecot mailbox."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import httpx

from devstack.imap import Dovecot
from secmsg.shared import mongo
from secmsg.shared.settings import CommonSettings
from tests.e2e.helpers import Platform, eventually, submit
from tests.retrieve.helpers import audit_events
from tests.toolbar.conftest import IMAP_USER
from tests.toolbar.helpers import Agent, Box, insert_token

SECRET_WORD = "zanzibarquokka"
OTHER_WORD = "marmosetplinth"
WATCH_WORD = "quetzalgrommet"


async def notification_for(platform: Platform, message_id: str) -> bytes:
    def find() -> bytes | None:
        for cap in platform.sink.handler.for_recipient(IMAP_USER):
            if cap.message["X-Secure-Message-Id"] == message_id:
                return cap.data
        return None
    found: bytes = await eventually(find, timeout=60, what="the notification")
    return found


async def test_agent_replaces_notification_idempotently_and_survives_a_crash(
        platform: Platform, dovecot: Dovecot, tls_cert: tuple[Path, Path],
        tmp_path: Path, settings: CommonSettings) -> None:
    attachment = bytes(range(256)) * 300
    mid = await submit(platform, sender="doctor@acme.example", to=[IMAP_USER],
                       subject="Your results", text=f"The secret word is {SECRET_WORD}.",
                       attachments={"scan.bin": attachment})
    mid2 = await submit(platform, sender="doctor@acme.example", to=[IMAP_USER],
                        subject="More results", text=f"Another word: {OTHER_WORD}.")
    note = await notification_for(platform, mid)
    note2 = await notification_for(platform, mid2)
    assert SECRET_WORD.encode() not in note
    token, token_id = await insert_token(platform.db, tenant_id="acme", email=IMAP_USER)
    agent = Agent(dovecot, platform.procs["retrieve"].base_url, tls_cert[0], tmp_path, token)
    box = Box(dovecot)
    try:
        box.append(note)
        (placeholder,) = box.all()
        flags_before, date_before = box.meta(placeholder)

        done = await agent.run("--once")
        assert done.returncode == 0, done.stderr
        assert f"{mid}: replaced" in done.stderr and "1 replaced" in done.stderr
        assert token not in done.stderr + done.stdout
        (real,) = box.all()
        assert real != placeholder
        assert box.search("BODY", SECRET_WORD) == [real]
        assert box.search("HEADER", "X-Secure-Message-Id", '""') == []
        flags, date = box.meta(real)
        assert flags - {"\\Recent"} == flags_before - {"\\Recent"} == {"\\Seen", "$Important"}
        assert date == date_before == "15-Mar-2021 10:00:00 +0000"
        parsed = message_from_bytes(box.raw(real), policy=default_policy)
        (att,) = list(parsed.iter_attachments())  # type: ignore[attr-defined]
        assert att.get_payload(decode=True) == attachment
        acks = [e for e in await audit_events(settings)
                if e.get("action") == "message.acknowledged" and e["message_id"] == mid]
        assert len(acks) == 1 and acks[0]["actor"] == IMAP_USER
        assert any(e.get("action") == "message.fetched" and e["message_id"] == mid
                   for e in await audit_events(settings))

        again = await agent.run("--once")
        assert again.returncode == 0, again.stderr
        assert box.all() == [real], "a second run duplicates nothing"

        # The same notification again (e.g. delivered twice): removed, nothing appended.
        box.append(note)
        dup = await agent.run("--once")
        assert dup.returncode == 0 and "1 finished from an earlier run" in dup.stderr
        assert box.all() == [real]

        # A crash right after APPEND: the next run finds the copy and only removes the
        # notification -- one real copy, never two, never none.
        box.append(note2)
        crashed = await agent.run("--once", env={"SECMSG_TOOLBAR_TEST_CRASH": "after-append"})
        assert crashed.returncode == 70, crashed.stderr
        assert len(box.search("BODY", OTHER_WORD)) == 1
        assert len(box.search("HEADER", "X-Secure-Message-Id", '""')) == 1
        rerun = await agent.run("--once")
        assert rerun.returncode == 0, rerun.stderr
        assert "1 finished from an earlier run" in rerun.stderr
        assert box.search("HEADER", "X-Secure-Message-Id", '""') == []
        assert len(box.search("BODY", OTHER_WORD)) == 1 and len(box.all()) == 2

        # A revoked token: a clear error and exit 5 before the mailbox is touched.
        box.append(note)
        before = box.all()
        await platform.db[mongo.TOKENS].update_one({"token_id": token_id},
                                                   {"$set": {"revoked_at": datetime.now(UTC)}})
        refused = await agent.run("--once")
        assert refused.returncode == 5, refused.stderr
        assert "refused the token" in refused.stderr
        assert box.all() == before
    finally:
        box.close()


async def outlook_submit(platform: Platform, original: bytes) -> bytes:
    """The placeholder ingest answers for a whole message, once the message is on record."""
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(platform.ingest_url + "/v1/messages/rfc822", content=original,
                         headers={"Authorization": f"Bearer {platform.api_key}",
                                  "Content-Type": "message/rfc822"})
    assert r.status_code == 200, r.text
    mid = r.headers["X-Secure-Message-Id"]
    await eventually(lambda: platform.count(mongo.MESSAGES, {"_id": mid}), timeout=30,
                     what="the message on record")
    return r.content


async def test_agent_swaps_an_outlook_placeholder_for_the_original(
        platform: Platform, dovecot: Dovecot, tls_cert: tuple[Path, Path],
        tmp_path: Path) -> None:
    original = (b"From: Doctor <doctor@acme.example>\r\nTo: bob@example.org\r\n"
                b"Subject: Scan\r\nMessage-ID: <orig-1@acme.example>\r\n"
                b"Date: Tue, 01 Jan 2030 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                b"Only the original says " + SECRET_WORD.encode() + b".\r\n")
    placeholder = await outlook_submit(platform, original)
    mid = placeholder.split(b"X-Secure-Message-Id: ", 1)[1][:32].decode()
    assert SECRET_WORD.encode() not in placeholder
    token, _ = await insert_token(platform.db, tenant_id="acme", email=IMAP_USER)
    agent = Agent(dovecot, platform.procs["retrieve"].base_url, tls_cert[0], tmp_path, token)
    box = Box(dovecot)
    try:
        box.append(placeholder, flags="(\\Flagged)")
        wrong = Agent(dovecot, agent.retrieve_url, tls_cert[0], tmp_path, token,
                      password="wrong")
        denied = await wrong.run("--once")
        assert denied.returncode == 3 and "refused the login" in denied.stderr
        assert "wrong" not in denied.stderr.replace("wrong user", "")

        done = await agent.run("--once")
        assert done.returncode == 0, done.stderr
        (real,) = box.all()
        assert box.search("TEXT", SECRET_WORD) == [real]
        raw = box.raw(real)
        head, _, rest = raw.partition(b"\r\n")
        assert head.startswith(b"X-Secure-Message-Retrieved: 127.0.0.1; id=" + mid.encode())
        assert rest == original  # the original, byte for byte, under our one header
        assert "\\Flagged" in box.meta(real)[0]

        # --watch: a placeholder arriving later is replaced without another start (IDLE).
        watcher = await asyncio.to_thread(agent.start, "--watch", "--poll-interval", "5")
        try:
            second = await outlook_submit(platform, original.replace(
                SECRET_WORD.encode(), WATCH_WORD.encode()).replace(b"orig-1", b"orig-2"))
            box.append(second)
            await eventually(lambda: box.search("TEXT", WATCH_WORD)
                             and not box.search("HEADER", "X-Secure-Message-Id", '""'),
                             timeout=60, what="the watcher to replace the placeholder")
        finally:
            watcher.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(watcher.communicate, timeout=30)
        assert watcher.returncode == 0, out
        assert len(box.all()) == 2 and "1 replaced" in out
    finally:
        box.close()


async def test_unreachable_retrieve_is_a_clear_error(dovecot: Dovecot, tmp_path: Path,
                                                     tls_cert: tuple[Path, Path]) -> None:
    from devstack.servers import free_port

    agent = Agent(dovecot, f"https://127.0.0.1:{free_port()}", tls_cert[0], tmp_path,
                  "smt_" + "0" * 32 + "_" + "x" * 43)
    out = await agent.run("--once")
    assert out.returncode == 4 and "cannot reach retrieve" in out.stderr

