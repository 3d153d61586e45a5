"""Pooled upstream connections the upstream closed: the lean upstream call
(forwarder.EndpointClient._send_lean) must keep aiohttp's session behaviour --
one retry of a safe request on a fresh connection -- and never resend a write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from strangler_proxy.config import load_config_text
from strangler_proxy.dataplane.handler import start_proxy
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import ShadowDispatcher
from strangler_proxy.diff.comparator import DiffComparator
from tests.dataplane.rawhttp import raw_request
from tests.dataplane.test_modes import req


class OneShotUpstream:
    """Answers the first request of every connection and keeps it open, then
    closes it without answering when a second request arrives on it -- what a
    pooled keep-alive connection looks like when the upstream's idle timeout
    fires just as the proxy reuses it."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> OneShotUpstream:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.answered += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the reuse: hang up without answering
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def proxy_port() -> AsyncIterator[tuple[int, OneShotUpstream]]:
    upstream = await OneShotUpstream().start()
    config = load_config_text(f'upstreams: {{legacy: {{url: "http://127.0.0.1:{upstream.port}", timeout_s: 2}}}}')
    runtime = ProxyRuntime(config)
    shadow = ShadowDispatcher(config.shadow, DiffComparator(), [], runtime)
    await shadow.start()
    runner, port = await start_proxy(runtime, shadow, "127.0.0.1", 0)
    yield port, upstream
    await runner.cleanup()
    await shadow.stop()
    assert upstream.server is not None
    upstream.server.close()


async def test_safe_request_on_a_closed_pooled_connection_is_retried_once(
    proxy_port: tuple[int, OneShotUpstream],
) -> None:
    port, upstream = proxy_port
    for i in range(3):
        resp = await raw_request(port, req("GET", f"/a?{i}"))
        assert (resp.status, resp.body) == (200, b"ok")
    # Requests 2 and 3 each went out on the pooled connection, found it hung up,
    # and were sent once more on a new one (which the next request reuses).
    assert upstream.answered == 3 and upstream.connections == 3


@pytest.mark.parametrize("method,body", [
    ("POST", b""),  # bodiless: takes the lean path too
    ("DELETE", b""),  # idempotent, and a write: not resent either
    ("PUT", b"{}"),  # with a body: through the session, whose own resend is off
])
async def test_a_write_on_a_closed_pooled_connection_is_not_resent(
    proxy_port: tuple[int, OneShotUpstream], method: str, body: bytes,
) -> None:
    port, upstream = proxy_port
    assert (await raw_request(port, req("GET", "/warm"))).status == 200
    resp = await raw_request(port, req(method, "/write", body=body))
    assert resp.status == 502 and resp.header("Content-Type") == "application/problem+json"
    assert upstream.answered == 1 and upstream.connections == 1
