"""Prometheus metrics of the notify service (events acked/naked/terminated: shared.worker)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# ``target`` is the SMTP target's host:port: one per platform relay or tenant relay, bounded.
NOTIFICATIONS = Counter("secmsg_notifications_total",
                        "Notifications by outcome, tenant and SMTP target",
                        ["tenant", "outcome", "target"])
SMTP_SEND_SECONDS = Histogram(
    "secmsg_notify_smtp_send_seconds", "Time to hand one notification to SMTP",
    ["target", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
SMTP_CONNECTIONS = Counter("secmsg_notify_smtp_connections_total",
                           "SMTP connections opened, by target", ["target"])
DELIVERY_PROBLEMS = Counter(
    "secmsg_notify_delivery_problems_total",
    "Deferred or failed notifications by SMTP target and reason (secmsg.shared.smtp_reasons), "
    "plus 'busy': events sent back because the target's connections or rate were used up",
    ["target", "reason"])
RETRIES = Counter("secmsg_notify_retries_total",
                  "Retry rounds: 'scheduled' onto the retry stream, 'done' (nothing left to wait)",
                  ["outcome"])
TARGETS_DOWN = Counter("secmsg_notify_target_down_total",
                       "Times an SMTP target was marked down (connections failing or hanging)",
                       ["target"])
