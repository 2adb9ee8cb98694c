"""Jinja2 filters for the webmail pages."""

from __future__ import annotations

from datetime import UTC, datetime


def human_size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def when(at: datetime | None) -> str:
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d") if at else ""
