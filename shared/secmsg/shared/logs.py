"""JSON logs with a correlation id (the message id) that follows a message across services.

Log records carry metadata only -- never message content, codes, keys or passwords.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from datetime import UTC, datetime

import orjson

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None)
tenant_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)

# A safety net under the rule "log metadata only": library exceptions quote what they were
# given (an SMTP refusal names the recipient), so addresses and API keys are masked in every
# message and traceback before the line is written.
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_API_KEY = re.compile(r"smk_[0-9a-f]+_[\w-]+")
_USER_TOKEN = re.compile(r"smt_[\w-]+")


def redact(text: str) -> str:
    if "@" in text:
        text = _ADDRESS.sub("<address>", text)
    if "smk_" in text:
        text = _API_KEY.sub("<api-key>", text)
    if "smt_" in text:
        text = _USER_TOKEN.sub("<token>", text)
    return text


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if cid := correlation_id.get():
            data["message_id"] = cid
        if tid := tenant_id.get():
            data["tenant_id"] = tid
        for key in ("event", "subject", "recipient_hash", "attempt", "status", "duration_ms",
                    "alert", "target", "zone", "reason", "action"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            data["exc"] = redact(self.formatException(record.exc_info))
        # orjson: every accepted message and every event handled writes a line; the standard
        # json module with ``default=`` builds a new encoder per call. Dates, dataclasses and
        # anything else odd still go through ``str`` as before.
        return orjson.dumps(data, default=str, option=_PASSTHROUGH).decode()


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymongo", "urllib3", "nats", "aiosmtplib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
