"""Big bodies stream through with flat memory, both ways."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from tests.dataplane.conftest import MakeProxy
from tests.dataplane.rawhttp import RawUpstream

SIZE = 96 * 1024 * 1024  # 96 MiB each way; the proxy may hold only a few MiB of it
MAX_GROWTH = 40 * 1024 * 1024


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Peak:
    def __init__(self) -> None:
        self.base = rss()
        self.peak = self.base
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.01)

    def stop(self) -> int:
        self._task.cancel()
        return self.peak - self.base


async def test_big_download_streams(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    peak = Peak()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"GET /_big?n={SIZE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert f"Content-Length: {SIZE}".encode() in head
    got = 0
    while chunk := await reader.read(1 << 20):
        got += len(chunk)
        await asyncio.sleep(0)  # a slow-ish client: the proxy must apply back-pressure
    writer.close()
    assert got == SIZE
    assert peak.stop() < MAX_GROWTH


async def test_big_upload_streams(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    peak = Peak()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n".encode())
    block = b"u" * (1 << 20)
    digest = hashlib.sha256()
    for _ in range(SIZE // len(block)):
        writer.write(block)
        digest.update(block)
        await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert legacy.seen[-1].body == f"big:{SIZE}:{digest.hexdigest()}".encode()
    assert peak.stop() < MAX_GROWTH


async def test_chunked_upload_of_unknown_length(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    for i in range(50):
        part = bytes([65 + i % 26]) * 1000
        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert len(legacy.seen[-1].body) == 50_000
