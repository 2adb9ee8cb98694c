"""A real IMAP mailbox on loopback: dovecot as a plain process with its own generated config.

Everything lives under one directory (config, passwd-file, maildirs, sockets, state, log), so
nothing touches ``/etc/dovecot`` or the system's users: passdb is a static passwd-file with
plain passwords, every user maps to the current uid/gid, and TLS is off (the agent tests use
``--imap-tls none``). Used by the toolbar tests; ``python -m devstack.imap`` runs one by hand.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.servers import free_port, wait_port

DOVECOT = os.environ.get("SECMSG_DOVECOT", "/usr/sbin/dovecot")


def _system_user(name: str) -> str:
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"running as root, dovecot needs the system user {name!r} "
                           "(created by the dovecot-core package)") from None
    return name


def mail_owner() -> tuple[int, int]:
    """(uid, gid) owning the mail: ours, or -- dovecot refuses uid 0 for mail -- its own."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam(_system_user("dovecot"))
    return entry.pw_uid, entry.pw_gid


def _config(base: Path, mail: Path, port: int) -> str:
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    uid, gid = mail_owner()
    internal, internal_group, login = user, group, user
    if os.getuid() == 0:
        # dovecot refuses root for its login and internal processes: use the unprivileged
        # users its Debian package creates.
        internal, internal_group, login = _system_user("dovecot"), "dovecot", _system_user(
            "dovenull")
    return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# No system users: every process runs as whoever started dovecot.
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{mail}/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
# Auth reads the passwd-file inside our (possibly 0700) temp dir: run it as its owner.
service auth {{
  user = {user}
}}
service auth-worker {{
  user = {user}
}}
service stats {{
  unix_listener stats-reader {{
    user = {user}
  }}
  unix_listener stats-writer {{
    user = {user}
  }}
}}
"""


@dataclass
class Dovecot:
    """One dovecot instance; ``users`` maps login name to password."""

    base: Path
    users: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    mail: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.base / "dovecot.conf"

    def start(self, timeout: float = 20.0) -> None:
        if not Path(DOVECOT).exists():
            raise RuntimeError(f"dovecot not found at {DOVECOT} (apt-get install dovecot-imapd, "
                               "or scripts/bootstrap)")
        self.port = self.port or free_port()
        for sub in ("run", "state"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.mail = self._mail_dir()
        self.write_users()
        self.config_path.write_text(_config(self.base, self.mail, self.port))
        log = (self.base / "dovecot.stdout").open("ab")
        # -F: stay in the foreground, so stop() signals the master we started.
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            wait_port(self.port, timeout, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"dovecot did not start: {exc}\n{self.log_tail()}") from exc

    def _mail_dir(self) -> Path:
        uid, gid = mail_owner()
        if uid == os.getuid():
            path = self.base / "mail"
            path.mkdir(exist_ok=True)
            return path
        # Another user owns the mail, and our base dir may be private (pytest's are 0700):
        # a separate world-traversable temp dir owned by that user, removed by stop().
        path = Path(tempfile.mkdtemp(prefix="secmsg-imap-mail-"))
        path.chmod(0o700)
        os.chown(path, uid, gid)
        return path

    def write_users(self) -> None:
        lines = [f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items()]
        path = self.base / "passwd"
        path.write_text("".join(lines))
        path.chmod(0o600)

    def add_user(self, name: str, password: str) -> None:
        # passwd-file is re-read when it changes: no restart needed.
        self.users[name] = password
        self.write_users()

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = (self.base / "dovecot.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._remove_mail()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # The master's children share its session: take the whole group down.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._remove_mail()

    def _remove_mail(self) -> None:
        if self.mail is not None and not self.mail.is_relative_to(self.base):
            shutil.rmtree(self.mail, ignore_errors=True)


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="secmsg-imap-"))
    server = Dovecot(base, {"user@example.org": "secret"})
    server.start()
    sys.stderr.write(f"[devstack] dovecot on 127.0.0.1:{server.port} (user@example.org / "
                     f"secret), files in {base}; Ctrl-C stops it\n")
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
