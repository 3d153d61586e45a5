"""Idle upstream connections belong to the address: clients of one KeepAlive that reach the
same host:port share warm connections (each within its own max_connections, with its own read
timeout), and cells whose copies of an upstream share a backend find each other's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from strangler_proxy.config import UpstreamConfig, load_config_text
from strangler_proxy.dataplane.upstream import KeepAlive, LeanEndpointClient, LeanResponse
from tests.dataplane.conftest import start_test_proxy, stop_test_proxy
from tests.dataplane.rawhttp import RawUpstream, raw_request
from tests.dataplane.test_modes import req


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        pass


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    up = await RawUpstream().start()
    yield up
    await up.stop()


def client(up: RawUpstream, name: str, keepalive: KeepAlive | None, *, limit: int = 8,
           timeout_s: float = 5.0) -> LeanEndpointClient:
    url = f"http://127.0.0.1:{up.port}"
    return LeanEndpointClient(name, url, UpstreamConfig(url=url, max_connections=limit, timeout_s=timeout_s),
                              keepalive=keepalive)


async def fetch(c: LeanEndpointClient, path: str) -> int:
    resp: LeanResponse = await c.send("GET", path, "", [], None)
    await resp.pipe(Sink())
    return resp.status


async def test_two_clients_of_one_address_share_an_idle_connection(upstream: RawUpstream) -> None:
    shared = KeepAlive()
    a, b = client(upstream, "legacy@c1", shared), client(upstream, "legacy@c2", shared)
    try:
        assert await fetch(a, "/one") == 200
        assert await fetch(b, "/two") == 200
        assert await fetch(a, "/three") == 200
        assert upstream.open_connections == 1  # one warm connection, handed from client to client
        assert (a.open_connections, b.open_connections) == (1, 0)  # counted against its last taker
    finally:
        await a.close()
        await b.close()


async def test_clients_without_a_shared_keepalive_keep_their_own(upstream: RawUpstream) -> None:
    a, b = client(upstream, "legacy@c1", None), client(upstream, "legacy@c2", None)
    try:
        for c in (a, b, a, b):
            assert await fetch(c, "/x") == 200
        assert upstream.open_connections == 2
    finally:
        await a.close()
        await b.close()


async def test_a_taken_connection_gets_the_takers_read_timeout(upstream: RawUpstream) -> None:
    shared = KeepAlive()
    patient, hasty = client(upstream, "patient", shared, timeout_s=10), client(upstream, "hasty", shared, timeout_s=0.2)
    try:
        assert await fetch(patient, "/warm") == 200
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await fetch(hasty, "/_slow?s=2")
        assert asyncio.get_running_loop().time() - started < 1.5
        assert upstream.open_connections == 1  # it was the patient client's connection
    finally:
        await patient.close()
        await hasty.close()


async def test_a_client_at_its_limit_waits_for_its_own_instead_of_taking_anothers(upstream: RawUpstream) -> None:
    shared = KeepAlive()
    other, bounded = client(upstream, "other", shared), client(upstream, "bounded", shared, limit=1)
    try:
        assert await fetch(other, "/warm") == 200  # an idle connection of "other" waits in the shared list
        slow = asyncio.ensure_future(fetch(bounded, "/_slow?s=0.3"))  # takes it: bounded's one connection
        await asyncio.sleep(0.05)
        assert (bounded.open_connections, other.open_connections) == (1, 0)
        assert await fetch(other, "/meanwhile") == 200  # other opens a second one, idle after
        second = asyncio.ensure_future(fetch(bounded, "/after"))  # at its limit: waits for its own
        await asyncio.sleep(0.05)
        assert not second.done() and bounded.open_connections == 1
        assert await slow == 200 and await second == 200
        assert bounded.open_connections == 1 and upstream.open_connections == 2
    finally:
        await other.close()
        await bounded.close()


async def test_cells_sharing_a_backend_share_its_connections(upstream: RawUpstream) -> None:
    listed = "".join(f'    - {{name: c{i}, upstreams: {{legacy: "http://127.0.0.1:{upstream.port}"}}}}\n'
                     for i in range(1, 4))
    proxy = await start_test_proxy(load_config_text(f"""
upstreams: {{legacy: {{timeout_s: 2}}}}
cells:
  partition_key: header:X-Tenant
  cells:
{listed}"""))
    try:
        cells = proxy.runtime.snapshot.cells
        assert cells is not None
        tenants = [f"t{i}" for i in range(12)]
        assert len({cells.cell_of(t) for t in tenants}) == 3  # every cell's copy is used
        for tenant in tenants:
            resp = await raw_request(proxy.port, req("GET", "/a", {"X-Tenant": tenant}))
            assert resp.status == 200
        assert upstream.open_connections == 1  # one after another: one warm connection for all three cells
    finally:
        await stop_test_proxy(proxy)


async def test_the_read_timeout_counts_from_each_exchange_on_a_reused_connection(upstream: RawUpstream) -> None:
    c = client(upstream, "legacy", None, timeout_s=0.3)
    loop = asyncio.get_running_loop()
    try:
        assert await fetch(c, "/quick") == 200
        await asyncio.sleep(0.5)  # idle past the timeout: the connection is kept, not failed
        assert await fetch(c, "/again") == 200
        await asyncio.sleep(0.2)  # most of a timeout after the last exchange began
        started = loop.time()
        with pytest.raises(TimeoutError):
            await fetch(c, "/_slow?s=3")
        assert 0.25 <= loop.time() - started < 1.0  # a whole timeout of silence, not what was left of one
        assert upstream.open_connections == 1  # the quick ones shared one connection
    finally:
        await c.close()
