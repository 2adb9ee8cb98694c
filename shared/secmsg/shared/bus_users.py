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

Operators' tools (``nats`` CLI, backups, replaying dead letters by hand) use ``admin``.
"""

from __future__ import annotations

from dataclasses import dataclass

from secmsg.shared import subjects as s

ADMIN = "admin"  # operators and in-process test code: everything
DELIVERIES_BUCKET = "SECMSG_DELIVERIES"  # notify's delivery claims (notify/adapters/kv.py)


@dataclass(frozen=True)
class BusUser:
    """One service's NATS user: what it publishes, consumes and keeps in KV."""

    name: str
    service: str  # the process: python -m secmsg.<service>
    publishes: tuple[str, ...]  # event subject suffixes, any tenant
    consumers: tuple[str, ...] = ()  # durable consumer names on the SECMSG stream
    kv_buckets: tuple[str, ...] = ()
    reads: str = ""  # what the consumers receive, for the docs

    @property
    def inbox(self) -> str:
        return f"_INBOX.{self.name}"

    def publish_allow(self) -> list[str]:
        st = s.STREAM
        allow = [s.any_tenant(p) for p in self.publishes]
        allow += ["$JS.API.INFO", f"$JS.API.STREAM.INFO.{st}", f"$JS.API.STREAM.CREATE.{st}",
                  f"$JS.API.STREAM.UPDATE.{st}"]
        for d in self.consumers:
            allow += [f"$JS.API.CONSUMER.CREATE.{st}.{d}", f"$JS.API.CONSUMER.CREATE.{st}.{d}.>",
                      f"$JS.API.CONSUMER.DURABLE.CREATE.{st}.{d}",
                      f"$JS.API.CONSUMER.INFO.{st}.{d}", f"$JS.API.CONSUMER.MSG.NEXT.{st}.{d}",
                      f"$JS.ACK.{st}.{d}.>"]
        for b in self.kv_buckets:
            kv = f"KV_{b}"
            allow += [f"$JS.API.STREAM.INFO.{kv}", f"$JS.API.STREAM.CREATE.{kv}",
                      f"$JS.API.STREAM.UPDATE.{kv}", f"$JS.API.STREAM.MSG.GET.{kv}",
                      f"$JS.API.DIRECT.GET.{kv}", f"$JS.API.DIRECT.GET.{kv}.>", f"$KV.{b}.>"]
        return allow

    def subscribe_allow(self) -> list[str]:
        return [f"{self.inbox}.>"]


USERS: tuple[BusUser, ...] = (
    BusUser("ingest", "ingest",
            publishes=(s.MESSAGE_RECEIVED, "control.>", s.AUDIT_RECORDED)),
    BusUser("store", "store", publishes=(s.MESSAGE_STORED,),
            consumers=(s.STORE_RECEIVED, s.STORE_DELIVERY, s.STORE_AUDIT, s.STORE_CONTROL),
            reads="message.received, notification.>, audit.>, control.>"),
    BusUser("notify", "notify",
            publishes=(s.NOTIFICATION_SENT, s.NOTIFICATION_DEFERRED, s.NOTIFICATION_FAILED),
            consumers=(s.NOTIFY_STORED,), kv_buckets=(DELIVERIES_BUCKET,),
            reads="message.stored"),
    BusUser("notify-deliverability", "notify.deliverability",
            publishes=(s.NOTIFICATION_BOUNCED,)),
    BusUser("retrieve", "retrieve",
            publishes=(s.MESSAGE_OPENED, s.ATTACHMENT_DOWNLOADED, s.AUDIT_RECORDED)),
)
BY_SERVICE = {u.service: u for u in USERS}

