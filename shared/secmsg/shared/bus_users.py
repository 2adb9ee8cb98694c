"""Who may do what on the bus: one NATS user per service, limited to its own subjects.

The single source of the permissions: ``devstack.nats_auth`` renders them into the local and
test NATS configuration, ``deploy/compose/nats-auth.conf`` and the NATS Helm chart's values
``deploy/helm/nats-values.yaml`` (a test keeps those two current), and docs/operations.md
explains them. A service that starts publishing or
consuming something new adds it here, or NATS refuses it ("Permissions Violation").

What each entry grants, besides the event subjects themselves:

* ``_INBOX.<user>.>`` (subscribe): the service's own reply inbox (``bus.inbox_prefix``). The
  JetStream API answers there, and pull consumers deliver their messages there, so another
  service must not be able to read it.
* ``$JS.API.INFO``, ``$JS.API.STREAM.INFO|CREATE|UPDATE.SECMSG``: ``bus.ensure_stream`` at
  start-up (no DELETE, no PURGE: only an operator may destroy events).
* for each durable consumer ``D``: create it and read its state
  (``$JS.API.CONSUMER.CREATE|DURABLE.CREATE|INFO.SECMSG.D``), pull from it
  (``$JS.API.CONSUMER.MSG.NEXT.SECMSG.D``) and ack/nak/term its messages
  (``$JS.ACK.SECMSG.D.>``).
* for each KV bucket ``B``: the bucket's stream API (``KV_B``), direct and stream reads and
  writes to ``$KV.B.>``.

* for a stream of its own (``OwnStream``, e.g. a work queue only that service reads): the
  same stream API (created with ``bus.ensure_stream(nc, replicas=..., config=...)`` so it gets
  the replicas setting too), its subjects and its durables.

Operators' tools (``nats`` CLI, backups, replaying dead letters by hand) use ``admin``.
"""

from __future__ import annotations

from dataclasses import dataclass

from secmsg.shared import subjects as s

ADMIN = "admin"  # operators and in-process test code: everything
DELIVERIES_BUCKET = "SECMSG_DELIVERIES"  # notify's delivery claims (notify/adapters/kv.py)
OWNERS_BUCKET = "SECMSG_NOTIFY_OWNERS"  # notify's per-process heartbeats (the same module)



def _stream_grants(stream: str) -> list[str]:
    return [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.CREATE.{stream}",
            f"$JS.API.STREAM.UPDATE.{stream}"]


def _consumer_grants(stream: str, durable: str) -> list[str]:
    return [f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>"]


@dataclass(frozen=True)
class OwnStream:
    """A stream one service keeps for itself: its subjects (as published) and durables."""

    name: str
    publishes: tuple[str, ...]
    consumers: tuple[str, ...] = ()


@dataclass(frozen=True)
class BusUser:
    """One service's NATS user: what it publishes, consumes and keeps in KV."""

    name: str
    service: str  # the process: python -m secmsg.<service>
    publishes: tuple[str, ...]  # event subject suffixes, any tenant
    consumers: tuple[str, ...] = ()  # durable consumer names on the SECMSG stream
    kv_buckets: tuple[str, ...] = ()
    own_streams: tuple[OwnStream, ...] = ()
    reads: str = ""  # what the consumers receive, for the docs
    # event subject suffixes, any tenant, heard on a plain core-NATS subscription (no durable)
    listens: tuple[str, ...] = ()

    @property
    def inbox(self) -> str:
        return f"_INBOX.{self.name}"

    def publish_allow(self) -> list[str]:
        allow = [s.any_tenant(p) for p in self.publishes]
        allow += ["$JS.API.INFO", *_stream_grants(s.STREAM)]
        for d in self.consumers:
            allow += _consumer_grants(s.STREAM, d)
        for b in self.kv_buckets:
            kv = f"KV_{b}"
            allow += [*_stream_grants(kv), f"$JS.API.STREAM.MSG.GET.{kv}",
                      f"$JS.API.DIRECT.GET.{kv}", f"$JS.API.DIRECT.GET.{kv}.>", f"$KV.{b}.>"]
        for own in self.own_streams:
            allow += [*own.publishes, *_stream_grants(own.name)]
            for d in own.consumers:
                allow += _consumer_grants(own.name, d)
        return allow

    def subscribe_allow(self) -> list[str]:
        return [f"{self.inbox}.>", *(s.any_tenant(x) for x in self.listens)]


# notify's retries, off the hot consumer (notify/retry.py)
NOTIFY_RETRY = OwnStream("NOTIFY_RETRY", publishes=("notify.retry.*",),
                         consumers=("notify-retry",))

USERS: tuple[BusUser, ...] = (
    # tenant.changed: ingest announces admin changes; every caching service drops its
    # cached entries of the tenant (shared/tenant_cache.py)
    BusUser("ingest", "ingest",
            publishes=(s.MESSAGE_RECEIVED, "control.>", s.AUDIT_RECORDED, s.TENANT_CHANGED),
            listens=(s.TENANT_CHANGED,)),
    # Besides message.stored, store may publish what it consumes itself: the platform
    # operator's dead-letter replay (store's /admin/dead-letter/replay) re-publishes a failed
    # event on its own subject. Only store consumes those, so this grants nothing new.
    BusUser("store", "store",
            publishes=(s.MESSAGE_STORED, s.MESSAGE_RECEIVED, "notification.>", "audit.>",
                       "control.>"),
            consumers=(s.STORE_RECEIVED, s.STORE_DELIVERY, s.STORE_AUDIT, s.STORE_CONTROL,
                       s.STORE_DEAD_LETTERS),
            reads="message.received, notification.>, audit.>, control.>, "
                  "_ops.dead_letter.recorded"),
    BusUser("notify", "notify",
            # dead_letter.recorded: its dead letters, handed to store (shared/worker.py)
            publishes=(s.NOTIFICATION_SENT, s.NOTIFICATION_DEFERRED, s.NOTIFICATION_FAILED,
                       s.DEAD_LETTER_RECORDED_SUFFIX),
            consumers=(s.NOTIFY_STORED,), kv_buckets=(DELIVERIES_BUCKET, OWNERS_BUCKET),
            own_streams=(NOTIFY_RETRY,), reads="message.stored, notify.retry.*",
            listens=(s.TENANT_CHANGED,)),
    BusUser("notify-deliverability", "notify.deliverability",
            publishes=(s.NOTIFICATION_BOUNCED,)),
    BusUser("retrieve", "retrieve",
            publishes=(s.MESSAGE_OPENED, s.ATTACHMENT_DOWNLOADED, s.AUDIT_RECORDED)),
)
BY_SERVICE = {u.service: u for u in USERS}

