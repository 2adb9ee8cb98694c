"""Where the agent keeps what ``authorize`` set up: one directory per user, readable by that
user only.

    $XDG_CONFIG_HOME/secmsg-toolbar/     (default ~/.config/secmsg-toolbar/; --config-dir or
    ├── config.json   the options         SECMSG_TOOLBAR_CONFIG_DIR choose another)
    ├── token.json    the access token and what is known about it (never printed)
    └── state.json    when the last pass ran and what it did (for ``status``)

The directory is created 0700 and every file is written 0600, atomically (a temporary file in
the same directory, then a rename), so a crash never leaves half a token and no other user
ever sees one. JSON, because these files are written by the program; a person sets options on
the command line or in the environment instead (both win over config.json).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from secmsg.toolbar.errors import UsageError

APP_DIR = "secmsg-toolbar"
CONFIG = "config.json"
TOKEN = "token.json"  # noqa: S105 - a file name
STATE = "state.json"
# The options ``authorize`` remembers, so a later ``run`` needs none of them.
SAVED_OPTIONS = ("retrieve_url", "tenant_id", "ca_file", "imap_host", "imap_port", "imap_tls",
                 "user", "password_file", "mailbox")


def default_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("SECMSG_TOOLBAR_CONFIG_DIR"):
        return Path(env["SECMSG_TOOLBAR_CONFIG_DIR"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / APP_DIR


@dataclass(frozen=True)
class StoredToken:
    access_token: str
    token_id: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    obtained_at: datetime
    retrieve_url: str
    tenant_id: str

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "token_id": self.token_id,
                "scopes": list(self.scopes),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "obtained_at": self.obtained_at.isoformat(),
                "retrieve_url": self.retrieve_url, "tenant_id": self.tenant_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredToken:
        expires = data.get("expires_at")
        return cls(access_token=str(data["access_token"]), token_id=str(data["token_id"]),
                   scopes=tuple(str(s) for s in data.get("scopes") or ()),
                   expires_at=_aware(datetime.fromisoformat(expires)) if expires else None,
                   obtained_at=_aware(datetime.fromisoformat(str(data["obtained_at"]))),
                   retrieve_url=str(data["retrieve_url"]), tenant_id=str(data["tenant_id"]))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ConfigDir:
    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.file(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}; remove it and run authorize "
                             "again") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path} is not a JSON object; remove it and run authorize again")
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")  # created 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.file(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def options(self) -> dict[str, Any]:
        data = self._read(CONFIG) or {}
        return {k: v for k, v in data.items() if k in SAVED_OPTIONS and v is not None}

    def save_options(self, values: dict[str, Any]) -> None:
        merged = {**self.options(),
                  **{k: v for k, v in values.items() if k in SAVED_OPTIONS and v is not None}}
        self._write(CONFIG, merged)

    def token(self) -> StoredToken | None:
        data = self._read(TOKEN)
        if data is None:
            return None
        try:
            return StoredToken.from_json(data)
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{self.file(TOKEN)} is damaged; run authorize again") from None

    def save_token(self, token: StoredToken) -> None:
        self._write(TOKEN, token.to_json())

    def state(self) -> dict[str, Any] | None:
        return self._read(STATE)

    def save_state(self, *, at: datetime, exit_code: int, summary: str) -> None:
        self._write(STATE, {"last_run_at": at.isoformat(), "exit_code": exit_code,
                            "summary": summary})
