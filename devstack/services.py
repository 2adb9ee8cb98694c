"""Run the four secmsg services as child processes (local platform, end-to-end and fault tests).

Each service is ``python -m secmsg.<name>``, configured only by environment variables, with a
health endpoint this module polls before declaring it up. ``kill()`` is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("ingest", "store", "notify", "retrieve")


def port_env(name: str) -> str:
    # "notify.deliverability" -> SECMSG_NOTIFY_DELIVERABILITY_PORT
    return f"SECMSG_{name.upper().replace('.', '_')}_PORT"


@dataclass
class ServiceProc:
    name: str
    env: dict[str, str]
    log_path: Path
    port: int
    tls: bool = False
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, wait: bool = True) -> None:
        env = {**os.environ, **self.env, **self.extra_env, port_env(self.name): str(self.port)}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", f"secmsg.{self.name}"], env=env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0, path: str = "/healthz") -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2,
                                            context=ctx if self.tls else None) as r:
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
