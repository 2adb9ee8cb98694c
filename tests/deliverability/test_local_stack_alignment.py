"""Every mail the local stack (``python -m devstack.run``) sends -- notifications, retrieve's
sign-in code mails and the admin's SMTP test (ingest), for a tenant without and a tenant with
its own DKIM key -- passes DKIM and DMARC for its From domain, as a receiving server would
check it: the signature is verified with dkimpy and DMARC evaluated with authheaders, both
looking the keys and policies up with real DNS queries (dnspython) to a DNS server on
127.0.0.1 (dnslib) that serves the records the deployment would publish -- the platform's
(``.run/dkim/records.txt``) and a tenant's own (from ingest's ``PUT /v1/admin/dkim`` answer).

Also checked per mail: the envelope sender (Return-Path) shares the From's
organisational domain (SPF alignment), the Message-ID is at the From's domain, EHLO gave a
fully qualified name, and no List-Unsubscribe header on this one-to-one mail. The stack is
the ``local_stack`` fixture (tests/conftest.py), shared with tests/deploy/test_local_stack.py:
whatever mail that test made is checked too."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import ssl
import time
import urllib.request
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import authheaders
import dns.rdatatype
import dns.resolver
import pytest
from authheaders.dmarc_lookup import get_org_domain
from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from devstack import dkim as devdkim
from secmsg.ingest.smtp_check import SUBJECT as SMTP_TEST_SUBJECT
from secmsg.retrieve.adapters.smtp import SUBJECT as CODE_SUBJECT
from tests.local_stack import LocalStack

pytestmark = pytest.mark.timeout(300)

TENANT, TENANT_DOMAIN, TENANT_SELECTOR = "acme", "acme.example", "s2026"
FQDN = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$", re.I)


class _Zone(BaseResolver):  # type: ignore[misc]  # dnslib ships no type hints
    """TXT records by name; any other name is NXDOMAIN, any other type an empty answer."""

    def __init__(self) -> None:
        self.txt: dict[str, str] = {}

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in self.txt:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            value = self.txt[name].encode()
            chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


class LoopbackDns:
    """A DNS server on 127.0.0.1 (UDP, a free port) and a resolver that asks only it."""

    def __init__(self) -> None:
        self.zone = _Zone()
        self.server = DNSServer(self.zone, address="127.0.0.1", port=0,
                                logger=DNSLogger("-request,-reply,-truncated,-error,-recv,"
                                                 "-send,-data", prefix=False))
        self.server.start_thread()
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = ["127.0.0.1"]
        self.resolver.port = self.server.server.server_address[1]
        self.queries: list[str] = []

    def txt(self, name: str | bytes) -> str | None:
        name = name.decode() if isinstance(name, bytes) else name
        self.queries.append(name.rstrip(".").lower())
        try:
            answer = self.resolver.resolve(name, dns.rdatatype.TXT, lifetime=5,
                                           raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        for rrset in answer.response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings).decode()
        return None

    def dkim_txt(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy's ``dnsfunc`` (bytes in, bytes out)."""
        value = self.txt(name)
        return value.encode() if value is not None else None

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()  # stop() leaves the socket open


def _http(method: str, url: str, key: str | None, body: bytes | None = None,
          content_type: str = "application/json") -> dict[str, Any]:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    ctx = ssl.create_default_context()  # retrieve's local certificate is self-signed
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
        answer: dict[str, Any] = json.load(r)
        return answer


def _submit(ingest: str, key: str, sender: str, to: str, subject: str) -> str:
    boundary = "----secmsgtest"
    envelope = json.dumps({"from": sender, "to": [to], "subject": subject, "text": "Secret"})
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n"
            f"Content-Type: application/json\r\n\r\n{envelope}\r\n--{boundary}--\r\n").encode()
    return str(_http("POST", f"{ingest}/v1/messages", key, body,
                     f"multipart/form-data; boundary={boundary}")["message_id"])


async def _tenant_with_admin_key(mongo_url: str) -> str:
    from secmsg.ingest.admin import SCOPE_ADMIN, SCOPE_SEND, create_api_key, create_tenant
    from secmsg.shared.mongo import make_client
    from secmsg.shared.settings import CommonSettings

    settings = CommonSettings(mongo_url=mongo_url)
    client = make_client(settings)
    try:
        db = client[settings.mongo_db]
        await create_tenant(db, tenant_id=TENANT, name="Acme Medical")
        return await create_api_key(db, tenant_id=TENANT, label="admin",
                                    scopes=(SCOPE_ADMIN, SCOPE_SEND))
    finally:
        await client.close()


def _mail(mail_dir: Path, want: dict[str, int]) -> list[tuple[bytes, EmailMessage]]:
    """Every mail in the sink's folder, once ``want`` (Subject -> count) is there."""
    deadline = time.monotonic() + 90
    while True:
        out = []
        for f in sorted(mail_dir.glob("*.eml")):
            raw = f.read_bytes()
            out.append((raw, email.message_from_bytes(raw, _class=EmailMessage,
                                                      policy=email.policy.default)))
        subjects = [str(m["Subject"]) for _, m in out]
        if all(subjects.count(k) >= n for k, n in want.items()) \
                or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def _from_domain(msg: EmailMessage) -> str:
    return parseaddr(str(msg["From"]))[1].rpartition("@")[2].lower()


def test_every_mail_of_the_local_stack_is_dkim_signed_and_dmarc_aligned(
        local_stack: LocalStack) -> None:
    run_dir, urls = local_stack.run_dir, local_stack.urls
    dnsd = LoopbackDns()
    try:
        # What the platform publishes (devstack made the key and wrote the records).
        published = devdkim.records((run_dir / "dkim" / "platform.pem").read_bytes())
        assert (run_dir / "dkim" / "records.txt").read_text().count(" TXT ") == len(published)
        dnsd.zone.txt.update(published)

        ingest, retrieve = urls["INGEST_URL"], urls["RETRIEVE_URL"]
        demo_key = (run_dir / "demo-api-key").read_text().strip()
        _submit(ingest, demo_key, "alice@demo.example", "bob@example.org", "Platform-signed")

        # A tenant with its own key: ingest generates it and answers the record to publish.
        admin_key = asyncio.run(_tenant_with_admin_key(urls["MONGO_URL"]))
        answer = _http("PUT", f"{ingest}/v1/admin/dkim", admin_key, json.dumps({
            "domain": TENANT_DOMAIN, "selector": TENANT_SELECTOR,
            "from_address": f"notifications@{TENANT_DOMAIN}"}).encode())
        dnsd.zone.txt[answer["dns_name"]] = answer["dns_value"]
        dnsd.zone.txt[f"_dmarc.{TENANT_DOMAIN}"] = "v=DMARC1; p=reject"
        _submit(ingest, admin_key, "carol@acme.example", "dave@example.org", "Tenant-signed")
        _mail(Path(urls["MAIL_DIR"]), {"Platform-signed": 1, "Tenant-signed": 1})

        # Each recipient now has a live message: each asks retrieve for a sign-in code.
        for tenant, address in (("demo", "bob@example.org"), (TENANT, "dave@example.org")):
            _http("POST", f"{retrieve}/v1/auth/code", None,
                  json.dumps({"tenant_id": tenant, "email": address}).encode())
        # The tenant admin's SMTP test (ingest) is mail the platform sends too.
        assert _http("POST", f"{ingest}/v1/admin/smtp/test", admin_key,
                     json.dumps({"to": "it@example.org"}).encode())["ok"] is True

        mails = _mail(Path(urls["MAIL_DIR"]), {"Platform-signed": 1, "Tenant-signed": 1,
                                               CODE_SUBJECT: 2, SMTP_TEST_SUBJECT: 1})
        seen = set()
        for raw, msg in mails:
            subject = str(msg["Subject"])
            kind = "notification" if msg["X-Secure-Message-Id"] else {
                CODE_SUBJECT: "code", SMTP_TEST_SUBJECT: "smtp test"}[subject]
            from_domain = _from_domain(msg)
            seen.add((kind, from_domain, str(msg["To"])))
            dkim_result = authheaders.check_dkim(raw, dnsfunc=dnsd.dkim_txt)
            assert dkim_result.result == "pass", f"{subject}: DKIM {dkim_result.result}"
            assert dkim_result.header_d == from_domain, f"{subject}: d= not the From's"
            dmarc = authheaders.check_dmarc(raw, dkim_result=dkim_result, dnsfunc=dnsd.txt)
            assert dmarc.result == "pass", f"{subject}: DMARC {dmarc.result} {dmarc.policy}"
            assert dmarc.policy == "reject"  # the published policy was read, over DNS

            return_path = parseaddr(str(msg["Return-Path"]))[1].rpartition("@")[2].lower()
            assert return_path != from_domain and get_org_domain(return_path) \
                == get_org_domain(from_domain), f"{subject}: Return-Path {return_path}"
            assert str(msg["Message-ID"]).rstrip(">").endswith("@" + from_domain), subject
            helo = str(msg["Received"]).split()[1]
            assert FQDN.match(helo), f"{subject}: EHLO {helo!r}"
            assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
        # both kinds of mail, from the platform's domain and from the keyed tenant's
        assert seen >= {("notification", devdkim.PLATFORM_DOMAIN, "bob@example.org"),
                        ("notification", TENANT_DOMAIN, "dave@example.org"),
                        ("code", devdkim.PLATFORM_DOMAIN, "bob@example.org"),
                        ("code", TENANT_DOMAIN, "dave@example.org"),
                        ("smtp test", TENANT_DOMAIN, "it@example.org")}, seen
        # the keys and policies really came over DNS
        assert f"{devdkim.SELECTOR}._domainkey.{devdkim.PLATFORM_DOMAIN}" in dnsd.queries
        assert f"{TENANT_SELECTOR}._domainkey.{TENANT_DOMAIN}" in dnsd.queries
        assert f"_dmarc.{TENANT_DOMAIN}" in dnsd.queries
    finally:
        dnsd.stop()
