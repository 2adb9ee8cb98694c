"""Wiring: MongoDB (tenants, dead letters), NATS (stream, publisher, the durable pull consumer,
the claims KV bucket), the SMTP pool, and the small HTTP app for /healthz, /readyz, /metrics.

Replicas share the durable consumer ``notify-stored``; JetStream hands each event to one of
them, and the per-recipient claims in the ``SECMSG_DELIVERIES`` KV bucket keep a redelivered
event from notifying anyone twice.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from pymongo import AsyncMongoClient

from secmsg.notify import retry
from secmsg.notify.adapters.kv import KvDeliveryRepo
from secmsg.notify.adapters.mongo import (
    MongoRelayChooser,
    MongoTenantDirectory,
    MongoUndeliverableList,
    TenantSmtpOptions,
)
from secmsg.notify.adapters.smtp import SmtpMailer
from secmsg.notify.bounce_address import bounce_address
from secmsg.notify.handlers import register
from secmsg.notify.ports import DkimKey, SmtpTarget
from secmsg.notify.probes import nats_and_mongo_problems, probe_app
from secmsg.notify.service import NotifyPolicy
from secmsg.notify.settings import NotifySettings
from secmsg.shared import bus, templating
from secmsg.shared.dkim import DkimSigner, check_key, default_ehlo_name
from secmsg.shared.mongo import make_client
from secmsg.shared.settings import CommonSettings
from secmsg.shared.tenant_cache import TenantChanges

log = logging.getLogger(__name__)


def platform_smtp(common: CommonSettings) -> SmtpTarget:
    return SmtpTarget(host=common.smtp_host, port=common.smtp_port, tls=common.smtp_tls,
                      username=common.smtp_username, password=common.smtp_password,
                      timeout_s=common.smtp_timeout_s, ca_file=common.smtp_ca_file)


def standby_smtp(common: CommonSettings, settings: NotifySettings) -> SmtpTarget | None:
    if not settings.standby_smtp_host:
        return None
    password = settings.standby_smtp_password
    return SmtpTarget(host=settings.standby_smtp_host, port=settings.standby_smtp_port,
                      tls=settings.standby_smtp_tls, username=settings.standby_smtp_username,
                      password=password.get_secret_value() if password else None,
                      timeout_s=common.smtp_timeout_s, ca_file=common.smtp_ca_file)


def platform_dkim(settings: NotifySettings) -> DkimKey | None:
    """The platform's DKIM key, read and checked once; None (and a warning) when unset."""
    if not (settings.dkim_domain and settings.dkim_selector
            and settings.dkim_private_key_file):
        log.warning("no platform DKIM key (SECMSG_NOTIFY_DKIM_DOMAIN/_SELECTOR/"
                    "_PRIVATE_KEY_FILE): notifications without a tenant key go out unsigned",
                    extra={"event": "startup"})
        return None
    with open(settings.dkim_private_key_file, "rb") as f:
        key = DkimKey(domain=settings.dkim_domain, selector=settings.dkim_selector,
                      private_key_pem=f.read())
    check_key(key)  # a broken key stops the start, not every notification
    return key


def _warn_unaligned(bounce_base: str, platform_from: str) -> None:
    """SPF alignment needs the envelope sender at the From's domain or a subdomain of it."""
    bounce_domain = bounce_base.rpartition("@")[2].lower()
    from_domain = platform_from.rpartition("@")[2].lower()
    if bounce_domain != from_domain and not bounce_domain.endswith("." + from_domain):
        log.warning("SECMSG_NOTIFY_BOUNCE_ADDRESS (%s) is not at the domain of SECMSG_SMTP_FROM "
                    "(%s) or a subdomain of it: SPF does not align with the From (DKIM still "
                    "can); see docs/deliverability.md", bounce_domain, from_domain,
                    extra={"event": "startup"})


class NotifyWorker:
    """The running service; ``start()``/``stop()`` bracket its life (in-process tests too)."""

    def __init__(self, common: CommonSettings | None = None,
                 settings: NotifySettings | None = None) -> None:
        self.common = common or CommonSettings()
        self.settings = settings or NotifySettings()
        if self.settings.lease_s <= self.common.smtp_timeout_s:
            raise ValueError("SECMSG_NOTIFY_LEASE_S must be longer than SECMSG_SMTP_TIMEOUT_S, "
                             "or a slow send could outlive its claim and be sent twice")
        if self.settings.claims_ttl_s <= self.settings.give_up_after_s:
            raise ValueError("SECMSG_NOTIFY_CLAIMS_TTL_S must be longer than "
                             "SECMSG_NOTIFY_GIVE_UP_AFTER_S, or a claim could expire while its "
                             "event is still being retried and the recipient be notified again")
        self.policy = NotifyPolicy(lease_s=self.settings.lease_s,
                                   retry_base_s=self.settings.retry_base_s,
                                   retry_max_s=self.settings.retry_max_s,
                                   give_up_after_s=self.settings.give_up_after_s)
        self.smtp_target = platform_smtp(self.common)
        self.platform_dkim = platform_dkim(self.settings)
        self.signer = DkimSigner()
        # The notification link names its recipient (shared crypto ``recipient_hint``), so the
        # link page can offer "continue as ..." instead of asking for the address.
        common = self.common
        self.recipient_hint = (lambda t, m, a: common.key_ring.recipient_hint(t, m, a))
        self.bounce_base = self.settings.bounce_address or None
        if self.bounce_base:
            # Refuse a base that cannot carry the tag at start, not at every notification.
            bounce_address(self.bounce_base, tenant_id="t", message_id="0", address="a@b")
            _warn_unaligned(self.bounce_base, self.common.smtp_from)
        self.mongo: AsyncMongoClient[Any] = make_client(self.common)
        self.db = self.mongo[self.common.mongo_db]
        self.undeliverable = MongoUndeliverableList(self.db, ttl_s=self.settings.tenant_cache_s)
        self.relay = MongoRelayChooser(self.db, primary=self.smtp_target,
                                       standby=standby_smtp(self.common, self.settings),
                                       check_s=self.settings.relay_check_s)
        self.deliveries: KvDeliveryRepo  # bound in start(): it needs the NATS connection
        self.changes = TenantChanges()  # drops cached tenants on tenant.changed
        self.tenants = MongoTenantDirectory(
            self.db, ttl_s=self.settings.tenant_cache_s, changes=self.changes,
            max_entries=self.common.tenant_cache_max_entries,
            bounce_subdomain=self.settings.tenant_bounce_subdomain if self.bounce_base else None,
            smtp=TenantSmtpOptions(
                allowed_targets=common.smtp_allowed_targets, ca_file=common.smtp_ca_file,
                timeout_s=common.smtp_timeout_s,
                # Lazy: the keyring is parsed only when a tenant's password must be opened.
                open_secret=lambda t, p, s: common.key_ring.open_secret(t, p, s)))
        # EHLO with a real FQDN (a bare or local host name costs spam points, some
        # receivers refuse it).
        self.ehlo_name = self.settings.ehlo_name or default_ehlo_name(self.common.smtp_from)
        self.mailer = SmtpMailer(pool_size=self.settings.smtp_pool_size,
                                 local_hostname=self.ehlo_name,
                                 rate_per_s=self.settings.target_rate_per_s,
                                 platform_rate_per_s=self.settings.platform_rate_per_s,
                                 saturated_wait_s=self.settings.target_saturated_wait_s,
                                 max_waiting=self.settings.target_max_waiting,
                                 reuse=self.settings.smtp_reuse,
                                 down_s=self.settings.target_down_s,
                                 tenant_max_waiting=self.settings.tenant_target_max_waiting,
                                 tenant_max_rate_wait_s=(
                                     self.settings.tenant_target_max_rate_wait_s),
                                 down_max_s=self.settings.target_down_max_s)
        self.renderer = templating.RenderPool(
            workers=self.settings.render_workers, per_tenant=self.settings.render_per_tenant,
            limits=dataclasses.replace(templating.LIMITS,
                                       render_timeout_s=self.settings.template_timeout_s),
            max_waiting=self.settings.render_max_waiting, name="notify-render")
        self.nc: NATS | None = None
        self.publisher: bus.EventPublisher
        self.retries: retry.RetryPublisher
        self.broker = NatsBroker(bus.servers(self.common.nats_url),
                                 **bus.broker_options(self.common),
                                 name="secmsg-notify",
                                 max_reconnect_attempts=-1, reconnect_time_wait=1,
                                 graceful_timeout=self.settings.graceful_timeout_s,
                                 logger=logging.getLogger("secmsg.notify.broker"),
                                 log_level=logging.DEBUG)
        self.events = register(self)

    async def start(self) -> None:
        self.nc = await bus.connect(self.common.nats_url, "secmsg-notify-publisher",
                                    **bus.connect_options(self.common))
        await bus.ensure_stream(self.nc, replicas=self.common.nats_stream_replicas)
        await self.changes.listen(self.nc)
        self.publisher = bus.EventPublisher(self.nc)
        await bus.ensure_stream(self.nc, replicas=self.common.nats_stream_replicas,
                                config=retry.stream_config(max_age_s=(
                                    self.settings.give_up_after_s + self.settings.retry_max_s
                                    + 86400)))
        self.retries = retry.RetryPublisher(self.nc)
        self.deliveries = await KvDeliveryRepo.open(self.nc, ttl_s=self.settings.claims_ttl_s,
                                                    replicas=self.common.nats_kv_replicas,
                                                    owner_ttl_s=self.settings.owner_ttl_s)
        self.deliveries.start()
        # The consumers' limits exist before the subscribers bind (JetStream binds an
        # existing durable without changing it).
        await self.events.ensure_consumers(self.nc)
        await self.broker.start()
        log.info("notify started", extra={"event": "startup"})

    async def stop(self) -> None:
        """Stop fetching, let in-flight events finish (graceful_timeout_s), then close."""
        try:
            await self.broker.stop()
        finally:
            await self.mailer.aclose()
            self.renderer.close()
            if getattr(self, "deliveries", None) is not None:
                await self.deliveries.stop()
            await self.changes.close()
            if self.nc is not None:
                await self.nc.close()
            await self.mongo.close()
        log.info("notify stopped", extra={"event": "shutdown"})

    async def readiness(self) -> dict[str, str]:
        """Problems by dependency; empty when NATS (stream, claims bucket) and MongoDB answer."""
        pings = None if self.nc is None else (self.publisher.ping, self.deliveries.ping)
        return await nats_and_mongo_problems(pings, self.db)

def make_http_app(rt: NotifyWorker) -> Any:
    """A bare ASGI app: /healthz (alive), /readyz (NATS + MongoDB), /metrics (Prometheus).

    SMTP is deliberately not part of readiness: an SMTP outage is handled by deferring and
    retrying, and taking every replica out of service would not make it come back sooner.
    """
    return probe_app(rt.readiness)
