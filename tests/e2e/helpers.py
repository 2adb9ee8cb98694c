"""The running platform as the end-to-end and fault tests see it."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import ServiceProc
from devstack.smtp_sink import Sink

CODE_RE = re.compile(r"\b(\d{8})\b")


def code_from_mail(text: str) -> str | None:
    m = CODE_RE.search(text)
    return m.group(1) if m else None


async def eventually(probe: Callable[[], Any], *, timeout: float, what: str,
                     interval: float = 0.2) -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Platform:
    tenant: str
    api_key: str
    db: Any
    sink: Sink
    s3_data_dir: Path
    procs: dict[str, ServiceProc]
    start_service: Callable[..., ServiceProc]
    api_keys: dict[str, str] = field(default_factory=dict)

    @property
    def ingest_url(self) -> str:
        return self.procs["ingest"].base_url

    def retrieve_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.procs["retrieve"].base_url, verify=False,
                                 timeout=60)

    async def add_tenant(self, tenant_id: str) -> str:
        from secmsg.ingest.admin import create_api_key, create_tenant

        await create_tenant(self.db, tenant_id=tenant_id, name=tenant_id.title())
        key = await create_api_key(self.db, tenant_id=tenant_id, label="test")
        self.api_keys[tenant_id] = key
        return key

    async def sign_in(self, web: httpx.AsyncClient, email: str, *, tenant: str | None = None,
                      expect_code: bool = True) -> str | None:
        tenant = tenant or self.tenant
        before = len(self._code_mails(email))
        admitted, _ = await self.code_requests()
        r = await web.post("/v1/auth/code", json={"tenant_id": tenant, "email": email})
        assert r.status_code == 202, r.text
        if not expect_code:
            # Every code request retrieve admitted, this one included, has finished its
            # background lookup (a known address is emailed before it counts), and no mail came.
            await eventually(lambda: self._code_requests_settled(admitted), timeout=30,
                             what="retrieve's code lookups finished")
            assert len(self._code_mails(email)) == before, "no code for unknown recipients"
            return None
        mails = await eventually(lambda: self._code_mails(email)[before:], timeout=30,
                                 what=f"sign-in code mail to {email}")
        code = code_from_mail(mails[-1])
        assert code, "no 8-digit code in the sign-in mail"
        r = await web.post("/v1/auth/session",
                           json={"tenant_id": tenant, "email": email, "code": code})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    async def code_requests(self) -> tuple[float, float]:
        """retrieve's code requests admitted and finished (its internal /metrics:
        ``secmsg_retrieve_codes_total{outcome="accepted"}``, and
        ``secmsg_retrieve_code_requests_done_total``; each admitted one is looked up once)."""
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(self.procs["retrieve"].internal_url + "/metrics")).text
        samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
        admitted = sum(s.value for s in samples if s.name == "secmsg_retrieve_codes_total"
                       and s.labels.get("outcome") == "accepted")
        done = [s.value for s in samples if s.name == "secmsg_retrieve_code_requests_done_total"]
        assert done, "retrieve exports secmsg_retrieve_code_requests_done_total"
        return admitted, done[0]

    async def _code_requests_settled(self, admitted_before: float) -> bool:
        admitted, done = await self.code_requests()
        return admitted > admitted_before and done == admitted

    async def notified(self, email: str, message_id: str, *, timeout: float = 60) -> None:
        """Wait for ``email``'s notification of ``message_id``: what a real recipient has
        before asking for a code (asking earlier, while store has not yet recorded the
        recipient, is answered 202 with no code, by design)."""
        def mail() -> bool:
            return any(cap.message["X-Secure-Message-Id"] == message_id
                       for cap in self.sink.handler.for_recipient(email))
        await eventually(mail, timeout=timeout, what=f"notification of {message_id} to {email}")

    def _code_mails(self, email: str) -> list[str]:
        out = []
        for cap in self.sink.handler.for_recipient(email):
            msg = cap.message
            if msg["X-Secure-Message-Id"]:
                continue  # a notification, not a code
            body = msg.get_body(("plain",))
            out.append(body.get_content() if body else "")
        return out

    async def count(self, collection: str, query: dict[str, Any], *, at_least: int = 1) -> int:
        n = int(await self.db[collection].count_documents(query))
        return n if n >= at_least else 0


async def submit(platform: Platform, *, sender: str, to: list[str], subject: str,
                 text: str | None = None, html: str | None = None, cc: list[str] | None = None,
                 attachments: dict[str, bytes] | None = None, api_key: str | None = None,
                 idempotency_key: str | None = None, client: httpx.AsyncClient | None = None,
                 expect: int = 202) -> str:
    envelope: dict[str, Any] = {"from": sender, "to": to, "cc": cc or [], "subject": subject}
    if text is not None:
        envelope["text"] = text
    if html is not None:
        envelope["html"] = html
    files: list[tuple[str, tuple[str | None, bytes, str]]] = [
        ("envelope", (None, json.dumps(envelope).encode(), "application/json"))]
    for name, content in (attachments or {}).items():
        files.append(("attachment", (name, content, "application/octet-stream")))
    headers = {"Authorization": f"Bearer {api_key or platform.api_key}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    own = client is None
    c = client or httpx.AsyncClient(timeout=120)
    try:
        r = await c.post(platform.ingest_url + "/v1/messages", files=files, headers=headers)
    finally:
        if own:
            await c.aclose()
    assert r.status_code == expect, r.text
    return str(r.json().get("message_id", ""))
