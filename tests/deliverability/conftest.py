"""Helpers for the deliverability tests: the process (``python -m
secmsg.notify.deliverability``) started with this test's env, an SMTP client that reports
reply codes, delivery reports shaped like real MTAs', a reader of ``notification.bounced``
events, and a small authoritative DNS server on loopback for the DNSBL monitor."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from devstack.servers import NatsServer, free_port
from devstack.services import ServiceProc
from secmsg.notify.bounce_address import bounce_address
from secmsg.shared import bus
from secmsg.shared.events import NotificationBounced, decode_event
from secmsg.shared.settings import CommonSettings

BOUNCE_BASE = "bounces@notify.example"
TENANT = "acme"


def new_message_id() -> str:
    return uuid.uuid4().hex


def tagged(message_id: str, address: str, tenant: str = TENANT) -> str:
    return bounce_address(BOUNCE_BASE, tenant_id=tenant, message_id=message_id, address=address)


# --- the process ----------------------------------------------------------------------------

@dataclass
class Proc:
    svc: ServiceProc
    bounce_port: int

    @property
    def base_url(self) -> str:
        return self.svc.base_url

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.svc.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


@pytest.fixture
def start_deliverability(env: dict[str, str], nats_server: NatsServer, tmp_path: Path
                         ) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(**extra: Any) -> Proc:
        port, bounce_port = free_port(), free_port()
        values = {"SECMSG_NOTIFY_BOUNCE_HOST": "127.0.0.1",
                  "SECMSG_NOTIFY_BOUNCE_PORT": str(bounce_port),
                  "SECMSG_NOTIFY_BOUNCE_ADDRESS": BOUNCE_BASE,
                  **{k: str(v) for k, v in extra.items()}}
        svc = ServiceProc("notify.deliverability",
                          {**env, **nats_server.service_env("notify.deliverability")},
                          tmp_path / f"deliverability-{len(started)}.log", port,
                          extra_env=values)
        svc.start()
        proc = Proc(svc, bounce_port)
        started.append(proc)
        return proc

    yield start
    for p in reversed(started):
        p.svc.stop()


# --- SMTP client ----------------------------------------------------------------------------

async def send(port: int, rcpts: list[str], data: bytes, *, mail_from: str = ""
               ) -> tuple[list[int], int | None]:
    """Deliver ``data``; returns (RCPT reply codes, DATA reply code or None if no recipient
    was accepted)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as smtp:
        await smtp.mail(mail_from)
        codes = []
        for r in rcpts:
            try:
                codes.append((await smtp.rcpt(r)).code)
            except aiosmtplib.SMTPResponseException as exc:
                codes.append(exc.code)
        if not any(200 <= c < 300 for c in codes):
            return codes, None
        try:
            return codes, (await smtp.data(data)).code
        except aiosmtplib.SMTPResponseException as exc:
            return codes, exc.code


# --- events ---------------------------------------------------------------------------------

@pytest.fixture
async def nc(env: dict[str, str]) -> AsyncIterator[Any]:
    client = await bus.connect(CommonSettings().nats_url, "deliverability-tests")
    await bus.ensure_stream(client)
    yield client
    await client.close()


async def bounced_events(nc: Any) -> list[NotificationBounced]:
    """Every ``notification.bounced`` event in the stream so far."""
    js = nc.jetstream()
    sub = await js.pull_subscribe("secmsg.*.notification.bounced", stream="SECMSG",
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    out: list[NotificationBounced] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.3)
            except TimeoutError:
                break
            for m in msgs:
                out.append(decode_event(m.data, NotificationBounced))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


# --- delivery reports -----------------------------------------------------------------------

def _original_headers(message_id: str, recipient: str, tenant: str = TENANT) -> str:
    return (f"From: \"alice@acme.example via Acme\" <notifications@notify.example>\r\n"
            f"To: {recipient}\r\n"
            f"Subject: Lab results\r\n"
            f"Message-ID: <{'ab' * 16}.{message_id}@notify.example>\r\n"
            f"X-Secure-Message-Id: {message_id}\r\n"
            f"X-Secure-Message-Url: https://secure.example/m/{tenant}/{message_id}\r\n")


def _recipient_block(address: str, action: str, status: str, *, original: bool = True,
                     diagnostic: str = "smtp; 550 5.1.1 user unknown") -> str:
    lines = [f"Final-Recipient: rfc822; {address}"]
    if original:
        lines.append(f"Original-Recipient: rfc822;{address}")
    lines += [f"Action: {action}", f"Status: {status}", "Remote-MTA: dns; mx.example.org",
              f"Diagnostic-Code: {diagnostic}"]
    return "\r\n".join(lines) + "\r\n"


def postfix_dsn(*, to: str, message_id: str, recipients: list[tuple[str, str, str]],
                tenant: str = TENANT) -> bytes:
    """Postfix: text part, delivery-status, and the original's headers (text/rfc822-headers).
    ``recipients``: (address, action, status)."""
    blocks = "\r\n".join(_recipient_block(a, act, st) for a, act, st in recipients)
    quoted = _original_headers(message_id, recipients[0][0], tenant)
    return ("From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
            f"To: {to}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            "Auto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status;\r\n"
            "\tboundary=\"4B1.1700000000/mx.example.org\"\r\n\r\n"
            "This is a MIME-encapsulated message.\r\n\r\n"
            "--4B1.1700000000/mx.example.org\r\n"
            "Content-Description: Notification\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            "This is the mail system at host mx.example.org.\r\n\r\n"
            "I'm sorry to have to inform you that your message could not\r\n"
            "be delivered to one or more recipients.\r\n\r\n"
            "--4B1.1700000000/mx.example.org\r\n"
            "Content-Description: Delivery report\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.org\r\n"
            "X-Postfix-Queue-ID: 4B1\r\n"
            "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000 (UTC)\r\n\r\n"
            f"{blocks}\r\n"
            "--4B1.1700000000/mx.example.org\r\n"
            "Content-Description: Undelivered Message Headers\r\n"
            "Content-Type: text/rfc822-headers\r\n\r\n"
            f"{quoted}\r\n"
            "--4B1.1700000000/mx.example.org--\r\n").encode()


def exchange_dsn(*, to: str, message_id: str, address: str, action: str = "failed",
                 status: str = "5.1.10") -> bytes:
    """Exchange Online: alternative text/html, delivery-status without Original-Recipient,
    address in another case, the whole original as message/rfc822."""
    block = _recipient_block(address.upper(), action, status,
                             original=False,
                             diagnostic="smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound")
    return ("From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@"
            "contoso.com>\r\n"
            f"To: <{to}>\r\n"
            "Subject: Undeliverable: Lab results\r\n"
            "Content-Type: multipart/report; report-type=delivery-status;\r\n"
            "\tboundary=\"_000_BN6PR\"\r\n"
            "MIME-Version: 1.0\r\n\r\n"
            "--_000_BN6PR\r\n"
            "Content-Type: multipart/alternative; boundary=\"_002_BN6PR\"\r\n\r\n"
            "--_002_BN6PR\r\n"
            "Content-Type: text/plain; charset=\"us-ascii\"\r\n\r\n"
            "Your message to the recipient couldn't be delivered.\r\n\r\n"
            "--_002_BN6PR\r\n"
            "Content-Type: text/html; charset=\"us-ascii\"\r\n\r\n"
            "<html><body><b>Delivery has failed.</b></body></html>\r\n\r\n"
            "--_002_BN6PR--\r\n\r\n"
            "--_000_BN6PR\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns;BN6PR.namprd.prod.outlook.com\r\n"
            "Received-From-MTA: dns;notify.example\r\n"
            "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n"
            f"{block}"
            "X-Display-Name: Bob\r\n\r\n"
            "--_000_BN6PR\r\n"
            "Content-Type: message/rfc822\r\n\r\n"
            f"{_original_headers(message_id, address)}"
            "Content-Type: text/plain\r\n\r\n"
            "You have a secure message.\r\n\r\n"
            "--_000_BN6PR--\r\n").encode()


def gmail_dsn(*, to: str, message_id: str, address: str) -> bytes:
    """Gmail: multipart/related text part, delivery-status, message/rfc822 original."""
    return ("Delivered-To: bounces@notify.example\r\n"
            "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
            f"To: {to}\r\n"
            "Auto-Submitted: auto-replied\r\n"
            "Subject: Delivery Status Notification (Failure)\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; boundary=\"000000000000a1\";"
            " report-type=delivery-status\r\n\r\n"
            "--000000000000a1\r\n"
            "Content-Type: multipart/related; boundary=\"000000000000b2\"\r\n\r\n"
            "--000000000000b2\r\n"
            "Content-Type: text/plain; charset=\"UTF-8\"\r\n\r\n"
            "** Address not found **\r\n\r\n"
            "--000000000000b2--\r\n"
            "--000000000000a1\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; googlemail.com\r\n"
            "Received-From-MTA: dns; notify.example\r\n\r\n"
            f"Final-Recipient: rfc822; {address}\r\n"
            "Action: failed\r\n"
            "Status: 5.1.1\r\n"
            "Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0::1b)\r\n"
            "Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does"
            "\r\n  not exist.\r\n"
            "Last-Attempt-Date: Tue, 14 Nov 2023 14:13:21 -0800 (PST)\r\n\r\n"
            "--000000000000a1\r\n"
            "Content-Type: message/rfc822\r\n\r\n"
            f"{_original_headers(message_id, address)}"
            "Content-Type: text/plain\r\n\r\n"
            "You have a secure message.\r\n\r\n"
            "--000000000000a1--\r\n").encode()


def plain_mail(to: str, *, auto_reply: bool = False) -> bytes:
    extra = "Auto-Submitted: auto-replied\r\nSubject: Out of office\r\n" if auto_reply else (
        "Subject: Re: Lab results\r\n")
    return (f"From: bob@example.org\r\nTo: {to}\r\n{extra}\r\n"
            "I am away until Monday.\r\n").encode()


# --- DNS ------------------------------------------------------------------------------------

@dataclass
class DnsZone:
    """What the loopback DNS server answers: A records by name; ``silent`` names get no
    answer at all (the monitor times out); anything else is NXDOMAIN."""

    records: dict[str, str] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    queries: list[str] = field(default_factory=list)
    port: int = 0


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: DnsZone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text(omit_final_dot=True).lower()
        self.zone.queries.append(name)
        if name in self.zone.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        answer = self.zone.records.get(name)
        if answer is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            response.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", answer))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def dns_zone() -> AsyncIterator[DnsZone]:
    zone = DnsZone()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _DnsProtocol(zone), local_addr=("127.0.0.1", 0))
    zone.port = transport.get_extra_info("sockname")[1]
    yield zone
    transport.close()


