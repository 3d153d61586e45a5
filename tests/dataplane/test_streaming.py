"""Big bodies stream through with flat memory, both ways; a small answer goes out in one
write, and a head whose body is late is not held back."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from strangler_proxy.dataplane.listener import ClientConnection
from tests.dataplane.conftest import MakeProxy
from tests.dataplane.rawhttp import RawUpstream, raw_request
from tests.dataplane.test_modes import req

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


async def test_a_small_answer_is_one_write_to_the_client(make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = await make_proxy()
    writes: list[bytes] = []
    real = ClientConnection.write

    def counting(conn: ClientConnection, data: bytes) -> None:
        writes.append(data)
        real(conn, data)

    monkeypatch.setattr(ClientConnection, "write", counting)
    resp = await raw_request(proxy.port, req("GET", "/some/page"))
    assert resp.status == 200 and resp.body
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(resp.body)


async def test_the_head_is_not_held_back_while_the_body_is_late(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /_late?s=1.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)  # before the body
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 4" in head
        assert await asyncio.wait_for(reader.read(), 5) == b"late"
    finally:
        writer.close()
