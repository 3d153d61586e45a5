"""What the endpoint-pool tests run: real endpoints on loopback that count what
they received, an endpoint that hangs up before answering, a port nobody
listens on, and a proxy assembled around a config given as a dict."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from strangler_proxy.config import StranglerConfig, load_config_text
from tests.dataplane.conftest import Proxy, start_test_proxy, stop_test_proxy

HEALTH_PATH = "/healthz"


@dataclass
class Endpoint:
    """An aiohttp app answering every path with its name (``X-Endpoint``) and
    ``status``; it records each request but the health checks, which get ``health_status``.
    With ``gate`` set, requests wait for it before answering."""

    name: str
    status: int = 200
    health_status: int = 200
    gate: asyncio.Event | None = None
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    health_checks: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> Endpoint:
        app = web.Application()
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str | None = None) -> int:
        return sum(1 for m, _, _ in self.received if method is None or m == method)

    async def _health(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        return web.Response(status=self.health_status, text="ok")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.method, request.path_qs, body))
        if self.gate is not None:
            await self.gate.wait()
        return web.Response(status=self.status, text=self.name, headers={"X-Endpoint": self.name})


@dataclass
class HangUp:
    """Reads a whole request (head and Content-Length body), records it, and closes
    the connection without a byte of answer: a reset before the response."""

    received: list[tuple[str, bytes]] = field(default_factory=list)
    port: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self) -> HangUp:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                           if k.strip().lower() == "content-length"), 0)
            body = await reader.readexactly(length) if length else b""
            self.received.append((lines[0].split(" ", 1)[0], body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoint(url: str, zone: str = "a", priority: int = 0, weight: int = 1) -> dict[str, Any]:
    return {"url": url, "zone": zone, "priority": priority, "weight": weight}


@dataclass
class PoolProxy(Proxy):
    """A proxy (served path, shadow path) in front of the given upstreams, and a client for it."""

    config: StranglerConfig = field(kw_only=True)
    client: aiohttp.ClientSession = field(kw_only=True)

    async def get(self, path: str = "/x") -> tuple[int, str]:
        async with self.client.get(f"http://127.0.0.1:{self.port}{path}") as resp:
            return resp.status, await resp.text()

    async def post(self, path: str, body: bytes) -> tuple[int, str]:
        async with self.client.post(f"http://127.0.0.1:{self.port}{path}", data=body) as resp:
            return resp.status, await resp.text()

    def metric(self, name: str, **labels: str) -> float:
        return self.runtime.registry.get_sample_value(name, labels) or 0.0

    def status(self, url: str) -> Any:
        [found] = [s for s in self.runtime.endpoints.describe(self.config) if s.url == url]
        return found


MakePoolProxy = Callable[..., Awaitable[PoolProxy]]


@pytest.fixture
async def pool_proxy() -> AsyncIterator[MakePoolProxy]:
    """``await pool_proxy({"legacy": {"endpoints": [...], ...}}, routes=[...], shadow={...})``."""
    made: list[PoolProxy] = []

    async def make(upstreams: dict[str, Any], *, routes: list[dict[str, Any]] | None = None,
                   shadow: dict[str, Any] | None = None) -> PoolProxy:
        text = json.dumps({"upstreams": upstreams, "routes": routes or [], "shadow": shadow or {}})
        config = load_config_text(text)  # YAML reads JSON
        proxy = PoolProxy(**vars(await start_test_proxy(config)), config=config, client=aiohttp.ClientSession())
        made.append(proxy)
        return proxy

    yield make
    for p in made:
        await p.client.close()
        await stop_test_proxy(p)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0, step_s: float = 0.02) -> None:
    """Wait for ``condition`` (fails the test after ``timeout_s``)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step_s)
