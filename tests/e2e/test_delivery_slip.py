"""The delivery slip tells the truth, end to end with the four real services: the sender's
``GET /v1/messages/{id}/slip`` follows each recipient from a deferred notification (reason and
next try) to notified, then to what they did -- opened and downloaded by file name in the
webmail API, or fetched and acknowledged by a toolbar. Nothing on it is ever ``null``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devstack.smtp_sink import Faults
from tests.e2e.helpers import Platform, eventually, submit
from tests.toolbar.helpers import insert_token

pytestmark = pytest.mark.timeout(240)

BOB, CAROL = "bob@example.org", "carol@example.org"


def no_null(value: Any) -> bool:
    if isinstance(value, dict):
        return all(no_null(v) for v in value.values())
    if isinstance(value, list):
        return all(no_null(v) for v in value)
    return value is not None


async def test_the_slip_follows_each_recipient(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.ingest_url, timeout=60) as ingest:
        async def slip() -> dict[str, dict[str, Any]]:
            r = await ingest.get(f"/v1/messages/{mid}/slip",
                                 headers={"Authorization": f"Bearer {platform.api_key}"})
            if r.status_code == 404:  # store has not recorded the message yet
                return {}
            assert r.status_code == 200, r.text
            assert no_null(r.json()), r.text
            return {x["address"]: x for x in r.json()["recipients"]}

        async def when(check: Any, what: str) -> dict[str, dict[str, Any]]:
            async def probe() -> dict[str, dict[str, Any]] | None:
                lines = await slip()
                return lines if lines and check(lines) else None
            found: dict[str, dict[str, Any]] = await eventually(probe, timeout=60, what=what)
            return found

        # The recipients' mail server answers 451 for now: notify defers.
        platform.sink.handler.faults = Faults(mode="tempfail", count=None)
        mid = await submit(platform, sender="alice@acme.example", to=[BOB, CAROL],
                           subject="Results", text="All clear.",
                           attachments={"scan.pdf": b"%PDF-1.4 not really" * 100})
        lines = await when(lambda x: x[BOB]["notification"]["state"] == "deferred",
                           "a deferred notification on the slip")
        bob = lines[BOB]
        assert bob["status"] == "deferred"
        assert bob["notification"]["reason"] and bob["notification"]["next_attempt_at"]
        assert bob["notification"]["attempts"] >= 1
        assert "next try" in bob["summary"]

        platform.sink.handler.faults = Faults()
        lines = await when(lambda x: all(v["status"] == "notified" for v in x.values()),
                           "both recipients notified")
        assert lines[BOB]["notification"]["state"] == "sent"
        assert "reason" not in lines[BOB]["notification"]

        # Bob reads and downloads in the webmail's API; Carol's toolbar fetches and acks.
        async with platform.retrieve_client() as web:
            token = await platform.sign_in(web, BOB)
            auth = {"Authorization": f"Bearer {token}"}
            detail = (await web.get(f"/v1/messages/{mid}", headers=auth)).json()
            (att,) = detail["attachments"]
            d = await web.get(f"/v1/messages/{mid}/attachments/{att['object_id']}",
                              headers=auth)
            assert d.status_code == 200
            carol_token, _ = await insert_token(platform.db, tenant_id="acme", email=CAROL)
            carol = {"Authorization": f"Bearer {carol_token}"}
            r = await web.get(f"/v1/toolbar/messages/{mid}/original", headers=carol)
            assert r.status_code == 200
            r = await web.post(f"/v1/toolbar/messages/{mid}/ack", headers=carol)
            assert r.status_code == 200

        lines = await when(lambda x: x[BOB]["status"] == "downloaded"
                           and x[CAROL]["status"] == "acknowledged_by_toolbar",
                           "the readers' steps on the slip")
    bob, carol_line = lines[BOB], lines[CAROL]
    assert bob["opened"] == 1 and bob["first_opened_at"]
    (dl,) = bob["downloads"]
    assert dl["file_name"] == "scan.pdf" and dl["object_id"] == att["object_id"]
    assert bob["toolbar"] == {"fetched": 0}
    assert "downloaded scan.pdf" in bob["summary"]
    assert carol_line["toolbar"]["fetched"] == 1
    assert carol_line["toolbar"]["acknowledged_at"] and carol_line["toolbar"]["last_fetched_at"]
    assert carol_line["opened"] == 0 and carol_line["downloads"] == []
    assert carol_line["notification"]["state"] == "sent"
