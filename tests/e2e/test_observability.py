"""Observability end to end: one message through the four real services, then their logs and
metrics as an operator sees them.

* every service logs at least one JSON line carrying the message's id as ``message_id``;
* no log file holds the subject, the bodies, attachment bytes, the recipient's address, the
  sign-in code, the session token or the API key's secret (the raw files are searched);
* every log line is one JSON object, including start-up and shutdown;
* every metric family documented in docs/observability.md is on the services' /metrics.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import Platform, code_from_mail, eventually, submit

pytestmark = pytest.mark.timeout(240)

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
SERVICES = ("ingest", "store", "notify", "retrieve")


def documented_families() -> dict[str, set[str]]:
    """``{service: {family, ...}}`` from the metric tables of docs/observability.md."""
    out: dict[str, set[str]] = {s: set() for s in SERVICES}
    row = re.compile(r"^\|\s*`(secmsg_[a-z_]+)`\s*\|[^|]*\|[^|]*\|\s*([a-z, ]+?)\s*\|")
    for line in DOC.read_text().splitlines():
        if m := row.match(line):
            names = [s.strip() for s in m.group(2).split(",")]
            for svc in (SERVICES if names == ["all"] else names):
                out[svc].add(m.group(1))
    return out


def exposed(text: str) -> dict[str, set[str]]:
    """``{family: {sample line, ...}}``: counters are named without ``_total`` by the parser."""
    fams: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + ("_total" if fam.type == "counter" else "")
        fams[name] = {f"{s.name}{sorted(s.labels.items())}" for s in fam.samples}
    return fams


async def test_logs_follow_the_message_and_carry_no_secrets(platform: Platform) -> None:
    subject = "OBS-SUBJECT-9c41 quarterly figures"
    body = "OBS-BODY-5e2d the figures are attached " * 10
    html = "<p>OBS-HTML-77aa</p>"
    attachment = os.urandom(2000) + b"OBS-ATTACH-b3f0" + os.urandom(500)
    recipient = "obs.recipient-4d1e@example.org"
    message_id = await submit(platform, sender="alice@acme.example", to=[recipient],
                              subject=subject, text=body, html=html,
                              attachments={"figures.bin": attachment})
    await eventually(lambda: platform.sink.handler.for_recipient(recipient), timeout=60,
                     what="the notification")

    async with platform.retrieve_client() as web:
        r = await web.post("/v1/auth/code", json={"tenant_id": platform.tenant,
                                                  "email": recipient})
        assert r.status_code == 202, r.text
        mails = await eventually(lambda: platform._code_mails(recipient), timeout=30,
                                 what="the sign-in code")
        code = code_from_mail(mails[-1])
        assert code
        r = await web.post("/v1/auth/session", json={"tenant_id": platform.tenant,
                                                     "email": recipient, "code": code})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        r = await web.get(f"/v1/messages/{message_id}", headers=auth)
        assert r.status_code == 200 and r.json()["text"] == body
        (att,) = r.json()["attachments"]
        d = await web.get(f"/v1/messages/{message_id}/attachments/{att['object_id']}",
                          headers=auth)
        assert d.content == attachment

    # Store records the two audit events; after that every service has handled the message.
    await eventually(lambda: platform.count("audit_events", {"message_id": message_id},
                                            at_least=2), timeout=30, what="audit events")

    # Metrics: every documented family is exposed by the services that document it.
    docs = documented_families()
    assert sum(len(v) for v in docs.values()) >= 15, "docs/observability.md lists the metrics"
    async with httpx.AsyncClient(verify=False, timeout=10) as http:
        for name in SERVICES:
            # The lag gauges are read every few seconds; the first round runs at start-up.
            text = (await http.get(platform.procs[name].internal_url + "/metrics")).text
            fams = exposed(text)
            missing = docs[name] - set(fams)
            assert not missing, f"{name} /metrics lacks {sorted(missing)}"
    async with httpx.AsyncClient(verify=False, timeout=10) as http:
        store = exposed((await http.get(platform.procs["store"].internal_url + "/metrics")).text)
        notify = exposed((await http.get(platform.procs["notify"].internal_url + "/metrics")).text)
        ingest = exposed((await http.get(platform.procs["ingest"].internal_url + "/metrics")).text)
    assert any("'kind', 'message.received'" in s and "'published'" in s
               for s in ingest["secmsg_events_published_total"])
    assert any("store-received" in s for s in store["secmsg_consumer_pending_messages"])
    assert any("notify-stored" in s for s in notify["secmsg_consumer_ack_pending_messages"])

    # Stop everything so shutdown lines are part of what is checked.
    for name in ("ingest", "retrieve", "notify", "store"):
        platform.procs[name].stop()

    api_secret = platform.api_key.split("_", 2)[2]
    secrets = {
        "subject": subject.encode(), "body": b"OBS-BODY-5e2d", "html": b"OBS-HTML-77aa",
        "attachment": b"OBS-ATTACH-b3f0", "attachment head": attachment[:64],
        "recipient": recipient.encode(), "recipient local part": b"obs.recipient-4d1e",
        "sign-in code": code.encode(), "session token": token.encode(),
        "API key": platform.api_key.encode(), "API key secret": api_secret.encode(),
    }
    for name in SERVICES:
        raw = platform.procs[name].log_path.read_bytes()
        assert raw, f"{name} wrote no logs"
        for what, needle in secrets.items():
            assert needle not in raw, f"{name}'s log contains the {what}"
        about_message = []
        for n, line in enumerate(raw.decode().splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{name} log line {n} is not JSON: {line[:200]!r}")
            assert isinstance(record, dict), f"{name} log line {n} is not an object"
            if record.get("message_id") == message_id:
                about_message.append(record)
        assert about_message, f"{name} logged nothing with message_id={message_id}"
        assert all(r["service"] == name for r in about_message)
