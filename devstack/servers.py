"""Real servers as plain processes on loopback: NATS (JetStream), FerretDB, versitygw.

Used by ``scripts/run`` (the local platform) and by the test suite. Binaries are built once
from the Go module proxy and cached under ``~/.cache/secmsg/bin/<name>-<version>/`` (override
with ``SECMSG_BIN_CACHE``), so a second start takes seconds. Every server gets a free port
and its own data directory; ``stop()``/``start()`` keep both, so fault tests can take a server
away and bring the same one back.

NATS runs with authentication, as in production: one user per service with the permissions
of ``secmsg.shared.bus_users`` plus an ``admin`` user, passwords made at start (kept in
``nats.passwords.json`` beside the data, so a restarted server and a second ``scripts/run``
use the same ones). A client without credentials is refused.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

NATS_VERSION = "v2.15.2"
FERRETDB_VERSION = "v1.24.2"
VERSITYGW_VERSION = "v1.7.0"

S3_ACCESS_KEY = "secmsg-dev"
S3_SECRET_KEY = "secmsg-dev-secret"  # noqa: S105 - local loopback server only


def bin_cache() -> Path:
    return Path(os.environ.get("SECMSG_BIN_CACHE", Path.home() / ".cache" / "secmsg" / "bin"))


def say(msg: str) -> None:
    # One write per line: builds run in threads and print() may split text and newline.
    sys.stderr.write(f"[devstack] {msg}\n")
    sys.stderr.flush()


def _go(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    if not shutil.which("go"):
        raise RuntimeError("Go is needed to build the local servers once (apt-get install golang)")
    proc = subprocess.run(["go", *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _build_go_install(name: str, module: str, version: str) -> Path:
    target = bin_cache() / f"{name}-{version}"
    binary = target / name
    if binary.exists():
        return binary
    say(f"building {name} {version} from the Go module proxy (first run only, ~2 min)...")
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=bin_cache().parent))
    _go("install", f"{module}@{version}", env={"GOBIN": str(tmp)})
    target.mkdir(parents=True, exist_ok=True)
    (tmp / name).replace(binary)
    shutil.rmtree(tmp, ignore_errors=True)
    say(f"built {binary}")
    return binary


def _build_ferretdb() -> Path:
    """FerretDB's release version is read from an embedded file its own build tooling writes;
    ``go install`` leaves it empty, so build from the module source with that file filled in."""
    target = bin_cache() / f"ferretdb-{FERRETDB_VERSION}"
    binary = target / "ferretdb"
    if binary.exists():
        return binary
    say(f"building ferretdb {FERRETDB_VERSION} from the Go module proxy (first run only)...")
    info = json.loads(_go("mod", "download", "-json",
                          f"github.com/FerretDB/FerretDB@{FERRETDB_VERSION}"))
    work = Path(tempfile.mkdtemp(prefix="ferretdb-src-", dir=bin_cache().parent))
    src = work / "src"
    shutil.copytree(info["Dir"], src)
    for root, dirs, files in os.walk(src):
        for n in dirs + files:
            p = Path(root) / n
            p.chmod(p.stat().st_mode | 0o200)
    (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
    target.mkdir(parents=True, exist_ok=True)
    _go("build", "-o", str(work / "ferretdb"), "./cmd/ferretdb", cwd=src)
    (work / "ferretdb").replace(binary)
    shutil.rmtree(work, ignore_errors=True)
    say(f"built {binary}")
    return binary


def ensure_binaries() -> dict[str, Path]:
    """Build (once) and return the three server binaries; builds run side by side."""
    bin_cache().mkdir(parents=True, exist_ok=True)
    jobs: dict[str, Callable[[], Path]] = {
        "nats": lambda: _build_go_install("nats-server", "github.com/nats-io/nats-server/v2",
                                          NATS_VERSION),
        "ferretdb": _build_ferretdb,
        "versitygw": lambda: _build_go_install("versitygw",
                                               "github.com/versity/versitygw/cmd/versitygw",
                                               VERSITYGW_VERSION),
    }
    with ThreadPoolExecutor(3) as pool:
        futures = {k: pool.submit(v) for k, v in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


# Ports for our servers come from PORT_FLOOR up to the start of the kernel's ephemeral range.
PORT_FLOOR = 10000


@functools.cache
def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (where outgoing connections get theirs)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# The ports given out lately (a window, not every port of a long test session): two servers
# started side by side never get the same one, and a long run cannot use the range up.
_HANDED_OUT: deque[int] = deque(maxlen=4096)


def free_port() -> int:
    """A loopback port nothing listens on, chosen *below* the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: between our close and the server's bind, any
    outgoing connection on the machine (a client to NATS, MongoDB, S3) may be given it, and the
    server then fails with "address already in use" (seen in CI: retrieve restarted on its
    port). Ports below the range are never handed to outgoing connections. Each port is given
    out at most once among the last 4,096 handed out by this process.
    """
    low = ephemeral_low()
    if low - PORT_FLOOR < 2000:  # an unusual range: fall back to the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        port = PORT_FLOOR + secrets.randbelow(low - PORT_FLOOR)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.append(port)
        return port
    raise RuntimeError(f"no free loopback port in {PORT_FLOOR}..{low - 1}")


def wait_port(port: int, timeout: float = 30.0,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if proc is None or _listens(proc.pid, port):
                    return
        except OSError:
            pass
        # Not yet, or the port is another process's (free_port() races with other test runs
        # on the machine): wait for ours, or for it to exit on its failed bind.
        time.sleep(0.05)
    raise TimeoutError(f"nothing of ours listening on 127.0.0.1:{port} after {timeout}s")


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or one of its children) has a listening socket on ``port``."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for p in family:
        try:
            conns = p.net_connections(kind="inet")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in conns):
            return True
    return False


@dataclass
class Server:
    """A server process with a fixed port and data directory, restartable."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **self.env},
                                     start_new_session=True)
        log.close()
        wait_port(self.port, timeout, self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if not self.running or self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def nats_passwords(path: Path) -> dict[str, str]:
    """A password per NATS user (the services' and ``admin``), made once and kept."""
    from secmsg.shared.bus_users import ADMIN, USERS

    names = [u.name for u in USERS] + [ADMIN]
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if set(names) - set(known):
        known = {n: known.get(n) or secrets.token_urlsafe(24) for n in names}
        path.write_text(json.dumps(known, indent=1))
        path.chmod(0o600)
    return known


def nats_config(*, port: int, store_dir: Path, passwords: dict[str, str],
                cluster: tuple[str, str, int, list[int]] | None = None,
                tls: tuple[Path, Path] | None = None) -> str:
    """A nats-server configuration: JetStream on disk, account ``SECMSG`` with a user per
    service (``bus_users``, rendered by ``nats_auth``) and ``admin``; ``cluster`` = (cluster
    name, server name, route port, the other nodes' route ports) for a clustered node;
    ``tls`` = (certificate, key): clients must use TLS."""
    from devstack.nats_auth import accounts_block

    q = json.dumps
    lines = [f"listen: 127.0.0.1:{port}",
             f"jetstream {{ store_dir: {q(str(store_dir))} }}"]
    if cluster is not None:
        cname, sname, route_port, routes = cluster
        lines += [f"server_name: {q(sname)}",
                  f"cluster {{ name: {q(cname)}, listen: 127.0.0.1:{route_port}, routes: "
                  f"{q([f'nats-route://127.0.0.1:{r}' for r in routes])} }}"]
    if tls is not None:
        lines += [f"tls {{ cert_file: {q(str(tls[0]))}, key_file: {q(str(tls[1]))} }}"]
    return "\n".join(lines) + "\n" + accounts_block(passwords)


@dataclass
class NatsServer(Server):
    """A nats-server with its users' passwords (``passwords[user]``)."""

    passwords: dict[str, str] = field(default_factory=dict)

    def url(self, user: str | None = None) -> str:
        """``nats://`` URL of this server, with ``user``'s credentials in it if given."""
        auth = f"{user}:{self.passwords[user]}@" if user else ""
        return f"nats://{auth}127.0.0.1:{self.port}"

    def service_env(self, service: str) -> dict[str, str]:
        """What a service process needs to connect as its own user (``bus_users``)."""
        from secmsg.shared.bus_users import BY_SERVICE

        user = BY_SERVICE[service].name
        return {"SECMSG_NATS_URL": self.url(), "SECMSG_NATS_USER": user,
                "SECMSG_NATS_PASSWORD": self.passwords[user]}


def make_nats(binary: Path, port: int, base: Path, *, passwords: dict[str, str] | None = None,
              cluster: tuple[str, str, int, list[int]] | None = None,
              tls: tuple[Path, Path] | None = None, name: str = "nats") -> NatsServer:
    """A NATS server (not started) with data, config and log under ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    passwords = passwords or nats_passwords(base / "nats.passwords.json")
    conf = base / "nats.conf"
    conf.write_text(nats_config(port=port, store_dir=base, passwords=passwords,
                                cluster=cluster, tls=tls))
    conf.chmod(0o600)
    return NatsServer(name, [str(binary), "-c", str(conf)], port, base / f"{name}.log",
                      passwords=passwords)


@dataclass
class NatsCluster:
    """A JetStream cluster on loopback: nodes ``n1``..``nN`` with routes to each other, one
    data directory each, the same users. Quacks like ``NatsServer`` for the fixtures."""

    nodes: list[NatsServer]
    passwords: dict[str, str]

    def url(self, user: str | None = None) -> str:
        """Every node's URL, comma-separated (``SECMSG_NATS_URL`` takes such a list)."""
        return ",".join(n.url(user) for n in self.nodes)

    def service_env(self, service: str) -> dict[str, str]:
        return {**self.nodes[0].service_env(service), "SECMSG_NATS_URL": self.url()}

    def node(self, server_name: str) -> NatsServer:
        return next(n for n in self.nodes if n.name == server_name)

    def start(self) -> None:
        for n in self.nodes:
            n.start()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def make_nats_cluster(binary: Path, base: Path, size: int = 3,
                      name: str = "secmsg") -> NatsCluster:
    """``size`` NATS nodes (not started), each with a client and a route port."""
    base.mkdir(parents=True, exist_ok=True)
    passwords = nats_passwords(base / "nats.passwords.json")
    client = [free_port() for _ in range(size)]
    routes = [free_port() for _ in range(size)]
    nodes = [make_nats(binary, client[i], base / f"n{i + 1}", passwords=passwords,
                       cluster=(name, f"n{i + 1}", routes[i],
                                [r for j, r in enumerate(routes) if j != i]),
                       name=f"n{i + 1}")
             for i in range(size)]
    return NatsCluster(nodes, passwords)


@dataclass
class Stack:
    base: Path
    nats: NatsServer
    mongo: Server
    s3: Server

    @property
    def servers(self) -> list[Server]:
        return [self.nats, self.mongo, self.s3]

    def env(self) -> dict[str, str]:
        """The ``SECMSG_*`` variables that point at these servers; NATS as ``admin`` (for
        in-process code: a service process adds ``nats.service_env(name)``)."""
        from secmsg.shared.bus_users import ADMIN

        return {
            "SECMSG_NATS_URL": self.nats.url(ADMIN),
            "SECMSG_MONGO_URL": f"mongodb://127.0.0.1:{self.mongo.port}/",
            "SECMSG_S3_ENDPOINT": f"127.0.0.1:{self.s3.port}",
            "SECMSG_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "SECMSG_S3_SECRET_KEY": S3_SECRET_KEY,
            "SECMSG_S3_SECURE": "false",
        }

    @property
    def s3_data_dir(self) -> Path:
        return self.base / "s3-data"

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()


def make_s3(binary: Path, port: int, base: Path, log_path: Path, *,
            tls: tuple[Path, Path] | None = None) -> Server:
    """versitygw on loopback over the POSIX data under ``base`` (``s3-data``, ``s3-meta``),
    with the platform's local keys; ``tls`` = (certificate, key) serves HTTPS. Two of them may
    serve the same data (the bench's HTTPS floor)."""
    tls_args = ["--cert", str(tls[0]), "--key", str(tls[1])] if tls else []
    return Server("versitygw", [str(binary), "--quiet", "--port", f"127.0.0.1:{port}", *tls_args,
                                "posix", "--sidecar", str(base / "s3-meta"),
                                str(base / "s3-data")],
                  port, log_path,
                  env={"ROOT_ACCESS_KEY": S3_ACCESS_KEY, "ROOT_SECRET_KEY": S3_SECRET_KEY})


def start_stack(base: Path, *, ports: dict[str, int] | None = None) -> Stack:
    """Start NATS, FerretDB and versitygw with data under ``base`` (kept between runs)."""
    bins = ensure_binaries()
    ports = dict(ports or {})
    for name in ("nats", "mongo", "s3"):
        ports.setdefault(name, free_port())
    for sub in ("nats", "ferretdb", "s3-data", "s3-meta", "logs"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    logs = base / "logs"
    nats = make_nats(bins["nats"], ports["nats"], base / "nats")
    nats.log_path = logs / "nats.log"
    mongo = Server("ferretdb", [str(bins["ferretdb"]), "--handler=sqlite",
                                f"--sqlite-url=file:{base / 'ferretdb'}/",
                                f"--state-dir={base / 'ferretdb'}",
                                f"--listen-addr=127.0.0.1:{ports['mongo']}",
                                "--debug-addr=-",
                                "--telemetry=disable", "--log-level=warn"],
                   ports["mongo"], logs / "ferretdb.log")
    s3 = make_s3(bins["versitygw"], ports["s3"], base, logs / "versitygw.log")
    stack = Stack(base, nats, mongo, s3)
    try:
        for s in stack.servers:
            s.start()
    except BaseException:
        stack.stop()
        raise
    return stack


if __name__ == "__main__":
    for name, path in ensure_binaries().items():
        say(f"{name}: {path}")
