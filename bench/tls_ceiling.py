"""The ceiling of an HTTPS download from a Python server here: a bare uvloop TLS server that
streams random bytes (no decryption, no framework, no object store) to ``curl``.

    uv run python -m bench.tls_ceiling              # 512 MiB per chunk size
    uv run python -m bench.tls_ceiling --size 256
    uv run python -m bench.tls_ceiling --json       # the best rates only (bench.run uses it)

Prints, per write size, the rate curl received and the server's CPU seconds per GiB, then the
same over plain HTTP. Whatever retrieve does on top (decrypting, the ASGI stack), its HTTPS
download cannot beat these rates on the same machine: compare them with ``bench.run``'s raw
GET floor to see how much of the 0.5x target TLS alone leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import cast

import uvloop

from devstack.tls import ensure_cert


class _Stream(asyncio.Protocol):
    def __init__(self, total: int, chunk: int, done: asyncio.Future[None]) -> None:
        self.total, self.chunk, self.done = total, chunk, done
        self.room = asyncio.Event()
        self.room.set()
        self.block = os.urandom(chunk)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's own classes

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.sending = asyncio.ensure_future(self.send())

    def pause_writing(self) -> None:
        self.room.clear()

    def resume_writing(self) -> None:
        self.room.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def send(self) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n" % self.total)
        sent = 0
        while sent < self.total:
            await self.room.wait()
            self.transport.write(bytes(self.block))  # a fresh object, as a real stream has
            sent += self.chunk
        self.transport.close()


async def one(size: int, chunk: int, tls: ssl.SSLContext | None) -> tuple[float, float]:
    """(MiB/s curl received, server CPU seconds per GiB)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    server = await loop.create_server(lambda: _Stream(size, chunk, done), "127.0.0.1", 0,
                                      ssl=tls)
    port = server.sockets[0].getsockname()[1]
    cpu, t = time.process_time(), time.perf_counter()
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sSk", "-o", "/dev/null", "-w", "%{size_download}",
        f"{'https' if tls else 'http'}://127.0.0.1:{port}/", stdout=asyncio.subprocess.PIPE)
    out, _ = await curl.communicate()
    await done
    if curl.returncode != 0 or int(out or 0) != size:
        raise RuntimeError(f"curl got {out!r} of {size} bytes (exit {curl.returncode})")
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    server.close()
    return size / 2**20 / wall, cpu / (size / 2**30)


async def amain(size_mib: int, as_json: bool = False) -> None:
    size = size_mib * 2**20
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = ensure_cert(Path(tmp))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if as_json:  # for bench.run: the best HTTPS rate and the plain one, one line
            best = max([(await one(size, c, ctx))[0] for c in (64 * 1024, 256 * 1024)])
            plain = (await one(size, 4 * 1024 * 1024, None))[0]
            print(json.dumps({"https_mib_s": best, "plain_mib_s": plain}))
            return
        print("| write size | HTTPS MiB/s | server CPU s/GiB |\n|---|---|---|")
        for chunk in (64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024):
            rate, cpu = await one(size, chunk, ctx)
            print(f"| {chunk // 1024} KiB | {rate:.0f} | {cpu:.2f} |")
        rate, cpu = await one(size, 4 * 1024 * 1024, None)
        print(f"| 4096 KiB, plain HTTP | {rate:.0f} | {cpu:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="MiB per measurement")
    ap.add_argument("--json", action="store_true",
                    help="print only the best HTTPS rate (64 and 256 KiB writes) and the plain "
                         "one as JSON (bench.run)")
    args = ap.parse_args()
    uvloop.run(amain(args.size, args.json))


if __name__ == "__main__":
    main()
