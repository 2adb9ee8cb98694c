"""Run the four secmsg services as child processes (local platform, end-to-end and fault tests).

Each service is ``python -m secmsg.<name>``, configured only by environment variables. Every
process has an internal port (``internal_url``: /healthz, /readyz, /metrics, polled before the
service counts as up); ingest and retrieve also a public one (``base_url``: the API). For the
probe-only processes (store, notify, notify.deliverability) both are the same port.
``kill()`` is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devstack.servers import free_port

SERVICES = ("ingest", "store", "notify", "retrieve")
PUBLIC = ("ingest", "retrieve")  # the services with a public port besides the internal one


def port_env(name: str) -> str:
    """The public port's variable: "ingest" -> SECMSG_INGEST_PORT."""
    return f"SECMSG_{name.upper().replace('.', '_')}_PORT"


def host_env(name: str) -> str:
    """The public listen address' variable: "retrieve" -> SECMSG_RETRIEVE_HOST."""
    return f"SECMSG_{name.upper().replace('.', '_')}_HOST"


def internal_port_env(name: str) -> str:
    # "notify.deliverability" -> SECMSG_NOTIFY_DELIVERABILITY_INTERNAL_PORT
    return f"SECMSG_{name.upper().replace('.', '_')}_INTERNAL_PORT"


@dataclass
class ServiceProc:
    name: str
    env: dict[str, str]
    log_path: Path
    port: int
    tls: bool = False
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    internal_port: int = 0  # 0: a free port (ingest, retrieve) or ``port`` (the others)

    def __post_init__(self) -> None:
        if not self.internal_port:
            self.internal_port = free_port() if self.name in PUBLIC else self.port

    @property
    def base_url(self) -> str:
        """The public API (ingest, retrieve); the probes' port for the other processes."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        """/healthz, /readyz, /metrics (plain HTTP on loopback)."""
        return f"http://127.0.0.1:{self.internal_port}"

    def start(self, timeout: float = 30.0, wait: bool = True) -> None:
        ports = {internal_port_env(self.name): str(self.internal_port)}
        if self.name in PUBLIC:
            ports[port_env(self.name)] = str(self.port)
        env = {**os.environ, **self.env, **self.extra_env, **ports}
        if self.name in PUBLIC:
            # The public API listens on loopback too (the settings' default 0.0.0.0 is for a
            # container); a host the caller sets wins.
            env.setdefault(host_env(self.name), "127.0.0.1")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", f"secmsg.{self.name}"], env=env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0, path: str = "/healthz") -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.internal_url + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s ({last}):\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)
