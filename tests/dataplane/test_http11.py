"""HTTP/1.1 corner cases a forwarding proxy must get right, on raw sockets:
request smuggling shapes refused, pipelining answered in order, bodiless
answers on kept-alive connections, Connection: close from either side,
upgrades declined, Expect: 100-continue waited for, chunked bodies streamed
both ways, HTTP/1.0 clients."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from strangler_proxy.config import load_config_text
from tests.dataplane.conftest import MakeProxy, start_test_proxy, stop_test_proxy
from tests.dataplane.rawhttp import RawUpstream, raw_request, read_response

HOST = "Host: films.example\r\n"


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """True when the peer closed the connection (everything left unread is dropped)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except ConnectionError:
        return True
    return True


# ---------------------------------------------------------------- request smuggling shapes
SMUGGLING = [
    ("content-length and transfer-encoding",
     f"POST /s HTTP/1.1\r\n{HOST}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n{HOST}\r\n"),
    ("differing duplicate content-length",
     f"POST /s HTTP/1.1\r\n{HOST}Content-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /smuggled HTTP/1.1\r\n{HOST}\r\n"),
    ("transfer-encoding not ending in chunked",
     f"POST /s HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("obsolete line folding", f"GET /s HTTP/1.1\r\n{HOST}X-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n"),
    ("space before the colon", f"POST /s HTTP/1.1\r\n{HOST}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("data", [d for _, d in SMUGGLING], ids=[n for n, _ in SMUGGLING])
async def test_smuggling_shapes_are_400_and_close(make_proxy: MakeProxy, legacy: RawUpstream, data: str) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(data.encode())
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.status == 400 and resp.header("Connection") == "close"
    assert await _closed(reader)
    writer.close()
    assert legacy.seen == []  # nothing reached the upstream


async def test_bad_chunk_size_is_400_and_nothing_complete_reaches_the_upstream(
    make_proxy: MakeProxy, legacy: RawUpstream
) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(f"POST /c HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n"
                 .encode())
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.status == 400
    assert await _closed(reader)
    writer.close()
    await asyncio.sleep(0.1)
    assert legacy.seen == []


async def test_connect_is_refused(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(b"CONNECT films.example:443 HTTP/1.1\r\nHost: films.example:443\r\n\r\n")
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.status == 400 and await _closed(reader)
    writer.close()
    assert legacy.seen == []


# ---------------------------------------------------------------- pipelining
async def test_pipelined_requests_are_answered_in_order(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    body = b"x" * 5000
    writer.write(
        f"GET /_slow?s=0.2 HTTP/1.1\r\n{HOST}\r\n".encode()  # the slowest first: the others wait for it
        + f"POST /p1 HTTP/1.1\r\n{HOST}Content-Length: {len(body)}\r\n\r\n".encode() + body
        + f"HEAD /_big?n=100 HTTP/1.1\r\n{HOST}\r\n".encode()
        + f"GET /_chunked HTTP/1.1\r\n{HOST}\r\n".encode()
        + f"GET /last HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode()
    )
    first = await asyncio.wait_for(read_response(reader), 3)
    second = await asyncio.wait_for(read_response(reader), 3)
    third = await asyncio.wait_for(read_response(reader, head=True), 3)
    fourth = await asyncio.wait_for(read_response(reader), 3)
    fifth = await asyncio.wait_for(read_response(reader), 3)
    assert first.json()["target"] == "/_slow?s=0.2"
    assert second.json()["target"] == "/p1" and second.json()["body_len"] == len(body)
    assert third.status == 200 and third.header("Content-Length") == "100" and third.body == b""
    assert fourth.body == b"one,two,three"
    assert fifth.json()["target"] == "/last" and fifth.header("Connection") == "close"
    assert await _closed(reader)
    writer.close()


# ---------------------------------------------------------------- bodiless answers keep the connection usable
@pytest.mark.parametrize("first,head", [
    ("HEAD /_big?n=5000000", True), ("GET /_204", False), ("GET /_304", False), ("HEAD /_chunked", True),
], ids=["HEAD with a length", "204", "304", "HEAD of a chunked answer"])
async def test_bodiless_answer_then_the_next_request(make_proxy: MakeProxy, first: str, head: bool) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    for _ in range(2):  # twice: the upstream connection is reused after a bodiless answer too
        writer.write(f"{first} HTTP/1.1\r\n{HOST}\r\n".encode())
        resp = await asyncio.wait_for(read_response(reader, head=head), 3)
        assert resp.body == b""
        writer.write(f"GET /after HTTP/1.1\r\n{HOST}\r\n".encode())
        resp = await asyncio.wait_for(read_response(reader), 3)
        assert resp.json()["target"] == "/after"
    writer.close()


# ---------------------------------------------------------------- Connection: close, either side
async def test_client_connection_close_is_honoured(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(f"GET /bye HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode())
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.status == 200 and resp.header("Connection") == "close"
    assert await _closed(reader)
    writer.close()


@pytest.fixture
async def closing_upstream() -> AsyncIterator[tuple[int, list[int]]]:
    """An upstream that answers one request per connection with Connection: close
    (and one without a length, delimited by the close)."""
    conns: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        if b" /eof " in head:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1], conns
    srv.close()
    await srv.wait_closed()


async def test_upstream_connection_close_keeps_the_client_connection(
    make_proxy: MakeProxy, closing_upstream: tuple[int, list[int]]
) -> None:
    port, conns = closing_upstream
    proxy = await start_test_proxy(load_config_text(f'upstreams: {{legacy: {{url: "http://127.0.0.1:{port}"}}}}'))
    try:
        reader, writer = await _open(proxy.port)
        for path in ("/a", "/eof", "/b"):
            writer.write(f"GET {path} HTTP/1.1\r\n{HOST}\r\n".encode())
            resp = await asyncio.wait_for(read_response(reader), 3)
            assert resp.status == 200 and resp.complete
            assert resp.body == (b"until the end" if path == "/eof" else b"ok")
            assert resp.header("Connection") is None  # hop-by-hop: the client's connection stays open
        assert len(conns) == 3  # each answer closed its upstream connection; a new one for the next
        writer.close()
    finally:
        await stop_test_proxy(proxy)


# ---------------------------------------------------------------- upgrades
async def test_websocket_upgrade_is_declined_cleanly(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(f"GET /ws HTTP/1.1\r\n{HOST}Connection: Upgrade\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.status == 200  # answered as a plain request: no 101, no tunnel
    assert resp.header("Upgrade") is None and resp.header("Connection") == "close"
    assert await _closed(reader)
    writer.close()
    seen = legacy.seen[-1]
    assert seen.target == "/ws" and all(k.lower() not in ("upgrade", "connection") for k, _ in seen.headers)


# ---------------------------------------------------------------- bodies
async def test_expect_continue_waits_for_the_client(make_proxy: MakeProxy) -> None:
    """A client that waits for 100 Continue before sending its body gets it, then the answer."""
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(f"PUT /e HTTP/1.1\r\n{HOST}Expect: 100-continue\r\nContent-Length: 4\r\n\r\n".encode())
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"data")
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.json()["body_len"] == 4
    writer.close()


async def test_large_chunked_upload_is_streamed(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(f"POST /up HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n".encode())
    digest = hashlib.sha256()
    block = bytes(range(256)) * 256  # 64 KB
    for _ in range(64):  # 4 MB, written as the client's buffer allows
        digest.update(block)
        writer.write(b"%x\r\n%b\r\n" % (len(block), block))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    resp = await asyncio.wait_for(read_response(reader), 10)
    assert resp.json()["body_len"] == 64 * len(block) and resp.json()["body_sha"] == digest.hexdigest()
    writer.close()


async def test_slow_reader_pauses_the_upstream_not_the_memory(make_proxy: MakeProxy) -> None:
    """A client that reads a 20 MB answer slowly still gets every byte; the proxy
    holds back by pausing the upstream (its own buffers stay bounded)."""
    proxy = await make_proxy(legacy_timeout_s=10)
    reader, writer = await _open(proxy.port)
    n = 20_000_000
    writer.write(f"GET /_big?n={n} HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert b"Content-Length: 20000000" in head
    await asyncio.sleep(0.5)  # not reading: the proxy must stop reading the upstream
    got = 0
    while got < n:
        chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
        assert chunk
        got += len(chunk)
    assert got == n
    writer.close()


async def test_http10_client(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(b"GET /_chunked HTTP/1.0\r\nHost: films.example\r\n\r\n")
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.status == 200 and resp.body == b"one,two,three"  # no chunking for HTTP/1.0: ends with the close
    assert resp.header("Transfer-Encoding") is None
    assert await _closed(reader)
    writer.close()


async def test_http10_keep_alive_client(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    for path in ("/one", "/two"):
        writer.write(f"GET {path} HTTP/1.0\r\nHost: films.example\r\nConnection: keep-alive\r\n\r\n".encode())
        resp = await asyncio.wait_for(read_response(reader), 3)
        assert resp.json()["target"] == path and resp.header("Connection") == "keep-alive"
    writer.close()


async def test_upgrade_with_a_body_is_refused(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(f"POST /u HTTP/1.1\r\n{HOST}Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nab"
                 .encode())
    resp = await asyncio.wait_for(read_response(reader), 3)
    assert resp.status == 400 and await _closed(reader)
    writer.close()
    assert legacy.seen == []


async def test_client_gone_while_waiting_releases_the_upstream(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await _open(proxy.port)
    writer.write(f"GET /_slow?s=3 HTTP/1.1\r\n{HOST}\r\n".encode())
    for _ in range(100):
        if legacy.seen:
            break
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{legacy.port}"
    client = proxy.runner.proxy_server.handler.upstreams.get("legacy", proxy.runtime.config.upstreams["legacy"])
    assert proxy.runtime.endpoints.in_flight("legacy", url) == 1
    writer.close()
    for _ in range(100):  # the proxy drops its upstream connection instead of waiting 3 s for nobody
        if client.clients[0].open_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert client.clients[0].open_connections == 0 and proxy.runtime.endpoints.in_flight("legacy", url) == 0


@pytest.fixture
async def slow_reader_upstream() -> AsyncIterator[tuple[int, list[int]]]:
    """An upstream that reads a request head, waits 1 s, then reads the whole body."""
    got: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await asyncio.sleep(1.0)
        left = length
        while left:
            left -= len(await reader.read(min(left, 1 << 20)))
        got.append(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1], got
    srv.close()
    await srv.wait_closed()


async def test_upload_to_a_slow_upstream_pauses_the_client(slow_reader_upstream: tuple[int, list[int]]) -> None:
    """While the upstream reads nothing, the proxy stops reading the client: the
    client's writes back up instead of the proxy's memory filling."""
    port, got = slow_reader_upstream
    proxy = await start_test_proxy(load_config_text(f'upstreams: {{legacy: {{url: "http://127.0.0.1:{port}"}}}}'))
    try:
        reader, writer = await _open(proxy.port)
        n = 32 * 1024 * 1024
        writer.write(f"PUT /up HTTP/1.1\r\n{HOST}Content-Length: {n}\r\n\r\n".encode())
        block = b"u" * (1 << 20)
        loop = asyncio.get_running_loop()
        started = loop.time()
        blocked_for = 0.0
        for _ in range(n // len(block)):
            writer.write(block)
            t0 = loop.time()
            await writer.drain()
            blocked_for = max(blocked_for, loop.time() - t0)
        resp = await asyncio.wait_for(read_response(reader), 10)
        assert resp.status == 200 and got == [n]
        assert blocked_for >= 0.5, blocked_for  # held back while the upstream slept
        assert loop.time() - started >= 0.9
        writer.close()
    finally:
        await stop_test_proxy(proxy)


async def test_at_max_connections_a_request_waits_for_a_free_one(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy(upstream_extra=", max_connections: 1")
    req = f"GET /_slow?s=0.3 HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode()
    first, second = await asyncio.gather(raw_request(proxy.port, req), raw_request(proxy.port, req))
    assert first.status == second.status == 200
    assert legacy.open_connections == 1  # one upstream connection, used in turn


async def test_no_free_connection_within_the_connect_timeout_is_504(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(upstream_extra=", max_connections: 1, connect_timeout_s: 0.2")
    slow = asyncio.create_task(raw_request(proxy.port, f"GET /_slow?s=1 HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n"
                                           .encode()))
    await asyncio.sleep(0.1)
    resp = await raw_request(proxy.port, f"GET /x HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode())
    assert resp.status == 504 and resp.header("Content-Type") == "application/problem+json"
    assert (await slow).status == 200


@pytest.fixture
async def early_answer_upstream() -> AsyncIterator[int]:
    """An upstream that answers 413 as soon as it has the head, then closes the
    way servers do (a lingering close: it reads and drops what still comes for
    a while, so that the answer is not lost to a reset)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
        await writer.drain()
        writer.write_eof()
        try:
            async with asyncio.timeout(2):
                while await reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


async def test_an_early_answer_to_a_streamed_upload_reaches_the_client(early_answer_upstream: int) -> None:
    proxy = await start_test_proxy(load_config_text(
        f'upstreams: {{legacy: {{url: "http://127.0.0.1:{early_answer_upstream}"}}}}'))
    try:
        reader, writer = await _open(proxy.port)
        writer.write(f"POST /up HTTP/1.1\r\n{HOST}Content-Length: {8 << 20}\r\n\r\n".encode() + b"z" * 65536)

        async def upload() -> None:
            block = b"z" * 65536
            try:
                for _ in range(127):
                    writer.write(block)
                    await writer.drain()
            except ConnectionError:
                pass  # the proxy closes once it answered: the rest of the body is not wanted

        sending = asyncio.create_task(upload())
        resp = await asyncio.wait_for(read_response(reader), 5)
        assert resp.status == 413 and resp.body == b"too big!"
        assert resp.header("Connection") == "close"  # the unread rest of the body ends the connection
        sending.cancel()
        writer.close()
    finally:
        await stop_test_proxy(proxy)
