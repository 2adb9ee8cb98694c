"""The local stack (``python -m devstack.run``, what ``./scripts/run`` starts) as a real
process tree in a given ``.run`` folder: the ``local_stack`` fixture of tests/conftest.py."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LocalStack:
    run_dir: Path  # the stack's .run folder
    urls: dict[str, str]  # .run/urls.env, as the README's walk-through reads it
    process: psutil.Process  # python -m devstack.run (its children: servers and services)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines with shell quoting, as ``. .run/urls.env`` would read them."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = shlex.split(value)[0] if value else ""
    return out


@contextlib.contextmanager
def running_local_stack(run_dir: Path) -> Iterator[LocalStack]:
    """Start the stack in ``run_dir`` (no SECMSG_* variable of ours leaks into it), wait for
    ``urls.env``, stop it with Ctrl-C on leaving; ``urls.env`` must then be gone."""
    log = (run_dir / "devstack.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "devstack.run", "--dir", str(run_dir)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("SECMSG_")})
    urls = run_dir / "urls.env"
    deadline = time.monotonic() + 240
    try:
        while not urls.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the local stack did not come up:\n"
                            + (run_dir / "devstack.out").read_text(errors="replace")[-4000:])
            time.sleep(0.5)
        yield LocalStack(run_dir, read_env_file(urls), psutil.Process(proc.pid))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
    assert not urls.exists(), "urls.env must go when the stack stops (nothing listens there)"


