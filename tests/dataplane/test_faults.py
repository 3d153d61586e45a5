"""Faults: a broken candidate is invisible to clients; a broken served upstream
gives 502/504 problem bodies; disconnects release upstream connections."""

from __future__ import annotations

import asyncio
import time

import pytest

from strangler_proxy.diff.result import Verdict
from tests.dataplane.conftest import MakeProxy
from tests.dataplane.rawhttp import RawUpstream, raw_request
from tests.dataplane.test_modes import get, req

SHADOW_ALL = '[{name: all, path: "/{*rest}", target: target, mode: shadow}]'


@pytest.mark.parametrize(
    "path,verdict",
    [("/_500", Verdict.LEGACY_ERROR), ("/_badjson", Verdict.MATCH), ("/_reset", Verdict.LEGACY_ERROR)],
)
async def test_same_fault_on_both_sides(make_proxy: MakeProxy, path: str, verdict: Verdict) -> None:
    """Legacy and candidate fail alike: the client sees exactly legacy's answer."""
    proxy = await make_proxy(SHADOW_ALL)
    resp = await raw_request(proxy.port, req("GET", path))
    if path == "/_reset":
        assert not resp.complete  # legacy cut its body: the client sees it cut too
    await proxy.shadow.drain()
    assert proxy.results.results[0].verdict is verdict


async def test_candidate_down_zero_client_errors(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(SHADOW_ALL, target_port=1)
    for i in range(20):
        resp = await get(proxy, f"/api/titles/tt{i}")
        assert resp.status == 200 and resp.header("X-Upstream") == "legacy"
    await proxy.shadow.drain()
    assert {r.verdict for r in proxy.results.results} == {Verdict.CANDIDATE_ERROR}
    assert len(proxy.results.results) == 20


async def test_slow_candidate_does_not_delay_client(make_proxy: MakeProxy, target: RawUpstream) -> None:
    # The candidate answers every /_slow after 3 s; shadow timeout is 0.3 s.
    proxy = await make_proxy('[{name: s, path: "/slow", target: target, mode: shadow, rewrite: "/_slow"}]',
                             shadow="{timeout_s: 0.3}")
    start = time.perf_counter()
    for _ in range(5):
        resp = await get(proxy, "/slow?s=3")
        assert resp.status == 200
    assert time.perf_counter() - start < 1.0
    await proxy.shadow.drain()
    assert [r.verdict for r in proxy.results.results] == [Verdict.CANDIDATE_ERROR] * 5
    assert all(r.reason == "candidate: timeout" for r in proxy.results.results)


async def test_candidate_5xx_and_invalid_json(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy('[{name: a, path: "/a", target: target, mode: shadow, rewrite: "/_500"},'
                             ' {name: b, path: "/b", target: target, mode: shadow, rewrite: "/_badjson"},'
                             ' {name: c, path: "/c", target: target, mode: shadow, rewrite: "/_reset"}]')
    for path in ("/a", "/b", "/c"):
        resp = await get(proxy, path)
        assert resp.status == 200 and resp.header("X-Upstream") == "legacy" and resp.complete
    await proxy.shadow.drain()
    by_key = {r.key: r for r in proxy.results.results}
    assert by_key["a"].verdict is Verdict.CANDIDATE_ERROR and by_key["a"].candidate_status == 500
    assert by_key["b"].verdict is Verdict.MISMATCH
    assert by_key["c"].verdict is Verdict.CANDIDATE_ERROR


async def test_legacy_refused_is_502_problem(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    await legacy.stop()
    resp = await get(proxy, "/x")
    assert resp.status == 502
    assert resp.header("Content-Type") == "application/problem+json"
    body = resp.json()
    assert body["status"] == 502 and body["upstream"] == "legacy" and "legacy" in body["detail"]


async def test_legacy_timeout_is_504_problem(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(legacy_timeout_s=0.3)
    resp = await get(proxy, "/_slow?s=2")
    assert resp.status == 504 and resp.json()["upstream"] == "legacy"
    assert proxy.runtime.route_counters()["_default"]["errors"] == 1


async def test_reset_mid_body_truncates_client_response(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    resp = await raw_request(proxy.port, req("GET", "/_reset"))
    assert resp.status == 200 and not resp.complete


async def _wait_for(cond, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_client_disconnect_mid_download_releases_upstream(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(req("GET", "/_drip"))
    await reader.readexactly(2000)  # streaming has started
    assert legacy.open_connections == 1 and legacy.closed_connections == 0
    writer.close()
    await _wait_for(lambda: legacy.closed_connections == 1)


async def test_client_disconnect_mid_upload_releases_upstream(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"z" * 100_000)
    await writer.drain()
    await _wait_for(lambda: legacy.open_connections == 1)
    writer.close()
    await _wait_for(lambda: legacy.closed_connections == 1)
    # and the proxy still serves
    assert (await get(proxy, "/after")).status == 200


async def test_a_mirrored_answer_over_the_body_limit_is_cut_and_skipped(make_proxy: MakeProxy, target: RawUpstream) -> None:
    proxy = await make_proxy('[{name: big, path: "/big", target: target, mode: shadow, rewrite: "/_big"}]',
                             shadow="{body_limit: 4096}")
    resp = await get(proxy, "/big?n=2000000")  # legacy echoes; the candidate sends 2 MB
    assert resp.status == 200 and resp.header("X-Upstream") == "legacy"
    await proxy.shadow.drain()
    [result] = proxy.results.results
    assert (result.verdict, result.reason) == (Verdict.SKIPPED, "candidate: too-large")
    for _ in range(50):  # the rest was not read: the mirror's connection was closed, not kept
        if target.closed_connections:
            break
        await asyncio.sleep(0.02)
    assert target.closed_connections == 1
