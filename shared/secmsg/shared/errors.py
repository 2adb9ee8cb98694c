"""The secmsg error tree, shared by every service.

    SecmsgError
    ├── TransientError            retry later: the world may change (server down, 4xx SMTP)
    │   └── DependencyUnavailable     NATS, MongoDB, S3 or SMTP could not be reached
    │       └── PublishUnconfirmed        a publish was sent but not acknowledged: it may
    │                                     or may not be in the stream
    └── PermanentError            giving up: retrying would fail the same way
        ├── InvalidInput              bad request data (HTTP 400/422)
        │   ├── PayloadTooLarge           over a size or count limit (HTTP 413)
        │   └── UnsupportedMediaType      wrong Content-Type (HTTP 415)
        ├── Unauthorized              missing or unknown credentials (HTTP 401)
        ├── Forbidden                 valid credentials without the needed scope, on the
        │                             caller's own tenant's resource (HTTP 403)
        ├── NotFound                  absent, or not yours to see (HTTP 404, never 403)
        ├── Conflict                  state forbids it, e.g. idempotency key in flight (HTTP 409)
        ├── RangeNotSatisfiable       bad Range header (HTTP 416)
        ├── TooManyRequests           rate limited (HTTP 429)
        ├── IntegrityError            ciphertext tampered, truncated or reordered
        └── PoisonEvent               an event that cannot be decoded or has an unknown version

Workers map TransientError to a delayed nak (JetStream redelivers) and PermanentError to a
terminate plus a record. HTTP services map each class to the status code above with a JSON
body ``{"error": <code>, "detail": <human sentence>}``; ``DependencyUnavailable`` becomes 503.
"""

from __future__ import annotations


class SecmsgError(Exception):
    """Root of every error secmsg raises on purpose."""

    code = "error"
    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TransientError(SecmsgError):
    code = "temporarily_unavailable"
    status = 503


class DependencyUnavailable(TransientError):
    code = "dependency_unavailable"
    status = 503


class PublishUnconfirmed(DependencyUnavailable):
    """The event left for JetStream but no acknowledgement came back.

    It may be in the stream. Whatever it references must be kept (an orphan sweep removes it
    later if the event never arrived); a retry with the same ``Nats-Msg-Id`` is safe.
    """

    code = "dependency_unavailable"


class PermanentError(SecmsgError):
    code = "permanent_error"
    status = 500


class InvalidInput(PermanentError):
    code = "invalid_input"
    status = 400


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"
    status = 415


class Unauthorized(PermanentError):
    code = "unauthorized"
    status = 401


class Forbidden(PermanentError):
    """Valid credentials lacking a scope. Only for the caller's own resources: anything of
    another tenant or recipient is ``NotFound``, so its existence is never revealed."""

    code = "forbidden"
    status = 403


class NotFound(PermanentError):
    code = "not_found"
    status = 404


class Conflict(PermanentError):
    code = "conflict"
    status = 409


class RangeNotSatisfiable(PermanentError):
    code = "range_not_satisfiable"
    status = 416


class TooManyRequests(PermanentError):
    code = "too_many_requests"
    status = 429


class IntegrityError(PermanentError):
    code = "integrity_error"
    status = 500


class PoisonEvent(PermanentError):
    code = "poison_event"
    status = 500
