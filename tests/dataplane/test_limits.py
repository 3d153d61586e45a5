"""Client limits (proxy.limits): slow heads, idle keep-alive, the connection cap,
oversize heads, and the proxy's own pages (no echo, no versions in Server).

Everything runs on loopback sockets; the clients are plain asyncio protocols
that keep every byte the proxy sent, even when the connection ends in a reset.
"""

from __future__ import annotations

import asyncio
import doctest
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from strangler_proxy.config import ProxyLimits, load_config_text
from strangler_proxy.dataplane import listener
from strangler_proxy.dataplane.handler import ProxyRunner, start_proxy
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import ShadowDispatcher
from strangler_proxy.diff.comparator import DiffComparator
from tests.dataplane.rawhttp import RawResponse, RawUpstream, raw_request, read_response

SLACK_S = 1.0  # scheduling slack on a busy 2-core box
FORBIDDEN_IN_SERVER = ("aiohttp", "Python")


@dataclass
class Limited:
    port: int
    runner: ProxyRunner

    @property
    def open_connections(self) -> int:
        return self.runner.proxy_server.open_connections


StartLimited = Callable[..., Awaitable[Limited]]


@pytest.fixture
async def limited(legacy: RawUpstream) -> AsyncIterator[StartLimited]:
    """``await limited(header_timeout_s=1, ...)``: a proxy over the echo upstream with these limits."""
    started: list[tuple[ProxyRunner, ShadowDispatcher]] = []

    async def start(*, upstream_port: int | None = None, **limits: object) -> Limited:
        config = load_config_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{upstream_port or legacy.port}", timeout_s: 2, connect_timeout_s: 1}}
""")
        runtime = ProxyRuntime(config)
        shadow = ShadowDispatcher(config.shadow, DiffComparator(), [], runtime)
        await shadow.start()
        runner, port = await start_proxy(runtime, shadow, "127.0.0.1", 0, limits=ProxyLimits(**limits))
        started.append((runner, shadow))
        return Limited(port, runner)

    yield start
    for runner, shadow in started:
        await runner.cleanup()
        await shadow.stop()


class Client(asyncio.Protocol):
    """A raw connection that records every byte received and when it ended."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.opened = loop.time()
        self.data = bytearray()
        self.closed: asyncio.Future[float] = loop.create_future()  # seconds from open to close
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(self.loop.time() - self.opened)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def response(self) -> RawResponse:
        """The first response received (call it once the connection ended)."""
        return _parse(bytes(self.data))

    async def open_after(self, seconds: float) -> bool:
        """True when the connection is still open ``seconds`` from now."""
        await asyncio.sleep(seconds)
        return not self.closed.done()


async def connect(port: int) -> Client:
    _, client = await asyncio.get_running_loop().create_connection(Client, "127.0.0.1", port)
    return client


def _parse(data: bytes) -> RawResponse:
    """The first response in ``data`` (a whole Content-Length body is enough for the proxy's pages)."""
    assert data, "the proxy sent nothing"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = [(k, v.strip()) for k, v in (line.split(":", 1) for line in lines[1:])]
    return RawResponse(int(status), reason, headers, body)


def req(target: str = "/x", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: films.example\r\n{extra}\r\n".encode()


def assert_own_page(resp: RawResponse, status: int, *, secret: bytes = b"", server: str | None = "strangler") -> None:
    """A proxy page: the status, a short fixed text, no echo, the configured Server, closing."""
    assert resp.status == status
    assert resp.header("Content-Type") == "text/plain; charset=utf-8"
    assert resp.body.startswith(f"{status} ".encode()) and len(resp.body) < 200
    if secret:
        assert secret not in resp.body
        assert all(secret.decode() not in v for _, v in resp.headers)
    assert resp.header("Server") == server
    assert resp.header("Date")
    for word in FORBIDDEN_IN_SERVER:
        assert all(word not in v for _, v in resp.headers)


# ---------------------------------------------------------------- slow heads
async def _drip(client: Client, data: bytes, every_s: float) -> None:
    """Send ``data`` one byte every ``every_s`` until it is sent or the proxy closes."""
    for i in range(len(data)):
        if client.closed.done():
            return
        client.send(data[i:i + 1])
        await asyncio.wait({client.closed}, timeout=every_s)


async def test_slowloris_closed_within_header_timeout_while_others_are_served(limited: StartLimited) -> None:
    proxy = await limited(header_timeout_s=1.0)
    slow = [await connect(proxy.port) for _ in range(150)]
    head = req("/slow", "X-Pad: " + "p" * 40 + "\r\n")
    drips = [asyncio.create_task(_drip(c, head, 0.5)) for c in slow]

    served: list[float] = []
    loop = asyncio.get_running_loop()
    while not all(c.closed.done() for c in slow) and loop.time() - slow[0].opened < 1.0 + 2 * SLACK_S:
        t0 = loop.time()
        resp = await raw_request(proxy.port, req("/normal", "Connection: close\r\n"), timeout=2)
        assert resp.status == 200 and resp.json()["target"] == "/normal"
        served.append(loop.time() - t0)
        await asyncio.sleep(0.05)

    lifetimes = await asyncio.wait_for(asyncio.gather(*(c.closed for c in slow)), 2 * SLACK_S)
    await asyncio.gather(*drips)
    assert max(lifetimes) <= 1.0 + SLACK_S, max(lifetimes)
    assert min(lifetimes) >= 0.9
    for c in slow:
        assert_own_page(c.response(), 408)
    assert len(served) >= 5 and max(served) < 1.0
    assert proxy.runner.proxy_server.head_timeouts == 150
    await _until(lambda: proxy.open_connections == 0)


async def test_silent_connection_closed_without_an_answer(limited: StartLimited) -> None:
    proxy = await limited(header_timeout_s=0.5)
    client = await connect(proxy.port)
    assert await client.open_after(0.3)
    assert await asyncio.wait_for(client.closed, 0.2 + SLACK_S) <= 0.5 + SLACK_S
    assert client.data == b""  # nothing came, so there is nothing to answer


async def test_head_in_pieces_within_the_timeout_is_served(limited: StartLimited) -> None:
    proxy = await limited(header_timeout_s=1.5)
    client = await connect(proxy.port)
    for piece in (b"GET /pie", b"ces HTTP/1.1\r\nHost: fi", b"lms.example\r\nConnection: close\r\n", b"\r\n"):
        client.send(piece)
        await asyncio.sleep(0.1)
    await asyncio.wait_for(client.closed, 2)
    resp = client.response()
    assert resp.status == 200 and b'"target": "/pieces"' in resp.body


# ---------------------------------------------------------------- keep-alive
async def test_idle_keep_alive_closed_after_keepalive_timeout(limited: StartLimited) -> None:
    proxy = await limited(header_timeout_s=5, keepalive_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    loop = asyncio.get_running_loop()
    for i in range(3):  # a kept-alive connection serves request after request
        writer.write(req(f"/k{i}"))
        resp = await asyncio.wait_for(read_response(reader), 2)
        assert resp.status == 200
        await asyncio.sleep(0.2)  # idle, but less than the timeout
    idle_from = loop.time() - 0.2
    assert await asyncio.wait_for(reader.read(), 0.5 + SLACK_S) == b""  # closed, silently
    assert 0.4 <= loop.time() - idle_from <= 0.5 + SLACK_S
    writer.close()


async def test_slow_head_on_kept_alive_connection_gets_the_header_timeout(limited: StartLimited) -> None:
    """Idle time ends at the next request's first byte: from then the head has
    header_timeout_s, even when that is longer than the idle timeout."""
    proxy = await limited(header_timeout_s=1.5, keepalive_timeout_s=0.5)
    client = await connect(proxy.port)
    client.send(req("/first"))
    await _until(lambda: b"\r\n\r\n" in client.data)
    client.data.clear()
    started = asyncio.get_running_loop().time()
    drip = asyncio.create_task(_drip(client, req("/second"), 0.2))
    await asyncio.wait_for(client.closed, 1.5 + SLACK_S)
    await drip
    assert 1.4 <= asyncio.get_running_loop().time() - started <= 1.5 + SLACK_S
    assert_own_page(client.response(), 408, secret=b"/second")


# ---------------------------------------------------------------- connection cap
async def test_connection_cap_refuses_the_next_one_clearly(limited: StartLimited) -> None:
    proxy = await limited(max_connections=5, header_timeout_s=10)
    held = [await connect(proxy.port) for _ in range(5)]
    await _until(lambda: proxy.open_connections == 5)

    refused = await connect(proxy.port)
    refused.send(req("/over", "Connection: close\r\n"))
    assert await asyncio.wait_for(refused.closed, 2) < 1.5
    resp = refused.response()
    assert_own_page(resp, 503)
    assert resp.header("Connection") == "close" and resp.header("Retry-After") == "1"
    assert proxy.runner.proxy_server.refused_total == 1

    held[0].send(req("/held", "Connection: close\r\n"))  # the open ones are served as usual
    await asyncio.wait_for(held[0].closed, 2)
    assert held[0].response().status == 200
    await _until(lambda: proxy.open_connections == 4)
    resp = await raw_request(proxy.port, req("/again", "Connection: close\r\n"), timeout=2)
    assert resp.status == 200  # a freed slot takes a new connection
    for c in held:
        c.close()
    await _until(lambda: proxy.open_connections == 0)


async def test_at_the_cap_an_idle_kept_alive_connection_makes_room(limited: StartLimited) -> None:
    """Idle kept-alive connections never keep a new client out: at the cap the
    longest idle one is closed (silently, between requests) and the new one served."""
    proxy = await limited(max_connections=2, header_timeout_s=10, keepalive_timeout_s=60)
    idle = [await connect(proxy.port) for _ in range(2)]
    for i, c in enumerate(idle):  # each answered once, then idle
        c.send(req(f"/idle{i}"))
        await _until(lambda c=c: b"\r\n\r\n" in c.data)  # type: ignore[misc]
    await asyncio.sleep(0.05)
    resp = await raw_request(proxy.port, req("/new", "Connection: close\r\n"), timeout=2)
    assert resp.status == 200 and resp.json()["target"] == "/new"
    assert await asyncio.wait_for(idle[0].closed, 2) >= 0  # the longest idle one made room
    assert not idle[1].closed.done()
    assert proxy.runner.proxy_server.refused_total == 0 and proxy.runner.proxy_server.idle_evicted == 1
    idle[1].close()


# ---------------------------------------------------------------- oversize and bad heads
SECRET = "s3cr3t-token"


@pytest.mark.parametrize("pieces", [1, 4], ids=["one write", "in pieces"])
async def test_long_request_line_is_414(limited: StartLimited, pieces: int) -> None:
    proxy = await limited(max_line_size=1024)
    data = req(f"/{SECRET}/" + "a" * 2000)
    client = await connect(proxy.port)
    step = -(-len(data) // pieces)
    for i in range(0, len(data), step):
        client.send(data[i:i + step])
        await asyncio.sleep(0.05)
    await asyncio.wait_for(client.closed, 2)
    assert_own_page(client.response(), 414, secret=SECRET.encode())


async def test_target_just_under_the_limit_is_served(limited: StartLimited) -> None:
    proxy = await limited(max_line_size=1024)
    target = "/" + "a" * 1000
    resp = await raw_request(proxy.port, req(target, "Connection: close\r\n"), timeout=2)
    assert resp.status == 200 and resp.json()["target"] == target


@pytest.mark.parametrize("extra", [
    f"X-Big: {SECRET}" + "b" * 2000 + "\r\n",
    f"X-{SECRET}" + "n" * 2000 + ": 1\r\n",
    "".join(f"X-H{i}: {SECRET}\r\n" for i in range(20)),
], ids=["long value", "long name", "too many"])
async def test_oversize_headers_are_431(limited: StartLimited, extra: str) -> None:
    proxy = await limited(max_field_size=1024, max_headers=10)
    client = await connect(proxy.port)
    client.send(req("/h", extra))
    await asyncio.wait_for(client.closed, 2)
    assert_own_page(client.response(), 431, secret=SECRET.encode())


@pytest.mark.parametrize("data", [
    f"GET /{SECRET} HTTP/1.1\r\nHost: films.example\r\nBad Header {SECRET}\r\n\r\n".encode(),
    f"\x16\x03\x01{SECRET} not http\r\n\r\n".encode(),
    f"GET /{SECRET} HTTP/1.1\r\n\r\n".encode(),  # no Host
], ids=["bad header", "tls on the http port", "no host"])
async def test_bad_request_is_400_without_echo(limited: StartLimited, data: bytes) -> None:
    proxy = await limited()
    client = await connect(proxy.port)
    client.send(data)
    await asyncio.wait_for(client.closed, 2)
    assert_own_page(client.response(), 400, secret=SECRET.encode())


# ---------------------------------------------------------------- Server header
@pytest.mark.parametrize("server", ["edge-proxy", None], ids=["named", "none"])
async def test_own_pages_carry_the_configured_server(limited: StartLimited, server: str | None) -> None:
    proxy = await limited(server_header=server, max_line_size=512, max_connections=1, header_timeout_s=0.5)
    pages: dict[int, RawResponse] = {}
    for status, data in ((400, b"NOT HTTP\r\n\r\n"), (414, req("/" + "x" * 600)), (408, b"GET /slo")):
        client = await connect(proxy.port)
        client.send(data)
        await asyncio.wait_for(client.closed, 2)
        pages[status] = client.response()
        await _until(lambda: proxy.open_connections == 0)
    held = await connect(proxy.port)
    await _until(lambda: proxy.open_connections == 1)
    refused = await connect(proxy.port)
    await asyncio.wait_for(refused.closed, 2)
    pages[503] = refused.response()
    held.close()
    for status, resp in pages.items():
        assert_own_page(resp, status, server=server)


@pytest.mark.parametrize("server", ["edge-proxy", None], ids=["named", "none"])
async def test_502_problem_carries_the_configured_server(limited: StartLimited, server: str | None) -> None:
    proxy = await limited(upstream_port=1, server_header=server)
    resp = await raw_request(proxy.port, req("/down", "Connection: close\r\n"), timeout=3)
    assert resp.status == 502 and resp.header("Content-Type") == "application/problem+json"
    assert resp.header("Server") == server
    assert all(w not in v for _, v in resp.headers for w in FORBIDDEN_IN_SERVER)


@pytest.fixture
async def server_upstream() -> AsyncIterator[int]:
    """An upstream that names itself in Server (and one path that sends none)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        server = b"" if b" /anon " in head else b"Server: Apache/2.4.62 (Unix) OpenSSL/3.0\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\n" + server + b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


@pytest.mark.parametrize("server", ["edge-proxy", None], ids=["named", "none"])
async def test_upstream_server_header_passes_untouched(
    limited: StartLimited, server_upstream: int, server: str | None
) -> None:
    proxy = await limited(upstream_port=server_upstream, server_header=server)
    resp = await raw_request(proxy.port, req("/", "Connection: close\r\n"), timeout=3)
    assert resp.status == 200 and resp.body == b"ok"
    assert [v for k, v in resp.headers if k.lower() == "server"] == ["Apache/2.4.62 (Unix) OpenSSL/3.0"]
    resp = await raw_request(proxy.port, req("/anon", "Connection: close\r\n"), timeout=3)
    assert resp.status == 200 and resp.header("Server") is None  # none sent, none added


# ---------------------------------------------------------------- config
def test_limits_in_the_file_and_their_defaults() -> None:
    config = load_config_text("""
upstreams: {legacy: {url: "http://127.0.0.1:1"}}
proxy:
  limits: {header_timeout_s: 5, max_connections: 100, server_header: null}
""")
    limits = config.proxy.limits
    assert (limits.header_timeout_s, limits.max_connections, limits.server_header) == (5, 100, None)
    assert limits.keepalive_timeout_s == 75 and limits.max_line_size == 8190 and limits.max_headers == 128
    default = load_config_text('upstreams: {legacy: {url: "http://127.0.0.1:1"}}').proxy.limits
    assert default == ProxyLimits() and default.server_header == "strangler" and default.header_timeout_s == 10


def test_docstring_examples() -> None:
    failed, attempted = doctest.testmod(listener)
    assert attempted > 0 and failed == 0


async def _until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)
