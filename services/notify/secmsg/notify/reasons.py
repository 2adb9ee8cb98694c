"""The fixed vocabulary of delivery reasons (docs/design.md "Deliverability").

Every ``NotificationDeferred/Failed.reason``, claim ``reason``, log line and metric label about
a delivery uses one of these words, never a remote server's text: a reply could echo a banner,
an address or whatever a hostile server wants in our logs and the sender's view. Which
exception maps to which word is decided in one place, ``adapters/smtp_reasons.py``.
"""

from __future__ import annotations

from typing import Final, Literal

Reason = Literal[
    "connection_refused", "connection_lost", "timeout", "tls_unavailable", "tls_failed",
    "auth_failed", "temporary_rejection", "permanent_rejection", "blocked_target",
    "invalid_message", "undeliverable", "gave_up", "bounced_hard", "bounced_soft",
]

CONNECTION_REFUSED: Final = "connection_refused"
CONNECTION_LOST: Final = "connection_lost"
TIMEOUT: Final = "timeout"
TLS_UNAVAILABLE: Final = "tls_unavailable"
TLS_FAILED: Final = "tls_failed"
AUTH_FAILED: Final = "auth_failed"
TEMPORARY_REJECTION: Final = "temporary_rejection"
PERMANENT_REJECTION: Final = "permanent_rejection"
BLOCKED_TARGET: Final = "blocked_target"
INVALID_MESSAGE: Final = "invalid_message"
UNDELIVERABLE: Final = "undeliverable"
GAVE_UP: Final = "gave_up"

REASONS: Final[frozenset[str]] = frozenset(Reason.__args__)  # type: ignore[attr-defined]
