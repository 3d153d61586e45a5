"""Upstreams with several endpoints, end to end through the proxy: balancing,
retries (never a write that may have been received), outlier ejection and its
limits, active checks, panic, priority failover, the retry budget, drains and
zone pins; the shadow path and the GraphQL backend client use the same pools."""

from __future__ import annotations

import asyncio
import doctest
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from strangler_proxy.config import load_config_text
from strangler_proxy.dataplane import forwarder, health, pool
from strangler_proxy.dataplane.pool import Upstreams
from strangler_proxy.diff.result import Verdict
from strangler_proxy.graphql.executor import BackendClient, BackendRoute, BackendUnavailable
from strangler_proxy.routing.endpoints import UpstreamSwitch
from tests.dataplane.endpoint_support import (
    HEALTH_PATH,
    Endpoint,
    HangUp,
    MakePoolProxy,
    closed_port,
    endpoint,
    pool_proxy,  # noqa: F401 -- the fixture
    until,
)

FAST_OUTLIER = {"consecutive_failures": 3, "base_ejection_s": 0.5, "max_ejection_s": 2}
NO_EJECTION = {"consecutive_failures": 1000}


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    a, b = await Endpoint("a").start(), await Endpoint("b").start()
    yield a, b
    await a.stop()
    await b.stop()


def test_the_module_examples_hold() -> None:
    for module in (pool, health, forwarder):
        assert doctest.testmod(module).failed == 0, module.__name__


async def test_requests_spread_over_the_healthy_endpoints(pool_proxy: MakePoolProxy,
                                                          pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = pair
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(a.url, "a"), endpoint(b.url, "b")]}})
    answers = await asyncio.gather(*(proxy.get(f"/t/{i}") for i in range(60)))
    assert {status for status, _ in answers} == {200}
    assert a.count() + b.count() == 60 and a.count() >= 10 and b.count() >= 10
    assert proxy.metric("strangler_endpoint_requests_total", upstream="legacy", endpoint=a.url, zone="a") == a.count()
    assert proxy.metric("strangler_endpoint_healthy", upstream="legacy", endpoint=b.url, zone="b") == 1.0
    assert proxy.status(a.url).in_flight == 0 and proxy.status(b.url).p50_ms is not None


async def test_a_refused_endpoint_costs_no_request_whatever_the_method(
    pool_proxy: MakePoolProxy, pair: tuple[Endpoint, Endpoint],
) -> None:
    """Connect refused: the request never left, so even a POST with a streamed body is
    sent to the other endpoint -- once, whole."""
    _, b = pair
    dead = f"http://127.0.0.1:{closed_port()}"
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(dead, "a"), endpoint(b.url, "b")],
                                         "outlier": NO_EJECTION}})
    for i in range(15):
        assert await proxy.get(f"/r/{i}") == (200, "b")
        body = f"order-{i}".encode() * 1000  # streamed through the proxy
        assert await proxy.post(f"/w/{i}", body) == (200, "b")
    posts = [(path, body) for method, path, body in b.received if method == "POST"]
    assert sorted(posts) == sorted((f"/w/{i}", f"order-{i}".encode() * 1000) for i in range(15))
    assert proxy.metric("strangler_upstream_retries_total", upstream="legacy") > 0
    assert proxy.status(dead).failures == proxy.metric("strangler_upstream_retries_total", upstream="legacy")


async def test_a_reset_before_the_answer_retries_a_read_never_a_write(
    pool_proxy: MakePoolProxy, pair: tuple[Endpoint, Endpoint],
) -> None:
    _, b = pair
    hang_up = await HangUp().start()
    try:
        # priority 0 is the endpoint that hangs up: every request goes there first
        proxy = await pool_proxy({"legacy": {
            "endpoints": [endpoint(hang_up.url, "a", 0), endpoint(b.url, "b", 1)], "outlier": NO_EJECTION}})
        # a read: once more on a new connection (the endpoint may have closed an idle one), then elsewhere
        assert await proxy.get("/read") == (200, "b")
        status, _ = await proxy.post("/write", b"pay 10")
        assert status == 502  # it may have been received: the client is told, nothing is sent again
        async with proxy.client.delete(f"http://127.0.0.1:{proxy.port}/write/1") as resp:
            assert resp.status == 502  # idempotent, but a write all the same
        async with proxy.client.put(f"http://127.0.0.1:{proxy.port}/write/1", data=b"x") as resp:
            assert resp.status == 502
        assert [m for m, _ in hang_up.received] == ["GET", "GET", "POST", "DELETE", "PUT"]
        assert [m for m, _, _ in b.received] == ["GET"]  # each write went to one endpoint, once
    finally:
        await hang_up.stop()


async def test_5xx_in_a_row_eject_an_endpoint_for_a_growing_time(pool_proxy: MakePoolProxy,
                                                                  pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = pair
    a.status = 503
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(a.url, "a"), endpoint(b.url, "b")],
                                         "outlier": FAST_OUTLIER}})
    for i in range(40):
        await proxy.get(f"/{i}")
        if proxy.status(a.url).ejected:
            break
    assert proxy.status(a.url).ejected and a.count() == 3  # exactly consecutive_failures answers
    assert proxy.metric("strangler_endpoint_ejections_total", upstream="legacy", endpoint=a.url) == 1
    assert proxy.metric("strangler_endpoint_healthy", upstream="legacy", endpoint=a.url, zone="a") == 0.0
    for i in range(20):  # while ejected, b serves everything
        assert await proxy.get(f"/e/{i}") == (200, "b")
    assert a.count() == 3
    await until(lambda: not proxy.status(a.url).ejected, timeout_s=2)  # 0.5 s later it may serve again...
    for i in range(40):  # ...fails 3 more times...
        await proxy.get(f"/again/{i}")
        if proxy.status(a.url).ejected:
            break
    second = proxy.status(a.url)
    assert second.ejected and second.ejections == 2 and second.ejected_for_s > 0.6  # ...and is out for 1 s
    a.status = 200
    await until(lambda: not proxy.status(a.url).ejected, timeout_s=3)
    answers = await asyncio.gather(*(proxy.get(f"/back/{i}") for i in range(40)))
    assert {text for _, text in answers} == {"a", "b"}  # back in the pool; a success resets its count
    assert proxy.status(a.url).ejections == 2


async def test_max_ejected_percent_keeps_the_pool_from_being_emptied(pool_proxy: MakePoolProxy,
                                                                     pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = pair
    a.status = b.status = 500
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(a.url, "a"), endpoint(b.url, "b")],
                                         "outlier": {**FAST_OUTLIER, "max_ejected_percent": 50}}})
    for i in range(60):
        assert (await proxy.get(f"/{i}"))[0] == 500  # the answer is passed on as it is
    ejected = [proxy.status(e.url).ejected for e in pair]
    assert ejected.count(True) == 1  # half the pool, never both


async def test_active_checks_mark_endpoints_unhealthy_and_healthy_again(pool_proxy: MakePoolProxy,
                                                                        pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = pair
    checks = {"path": HEALTH_PATH, "interval_s": 0.05, "timeout_s": 0.5, "unhealthy_after": 2, "healthy_after": 2}
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(a.url, "a"), endpoint(b.url, "b")],
                                         "health": checks}})
    await proxy.get("/start")  # pools (and their checks) start with the first request
    a.health_status = 503
    await until(lambda: proxy.status(a.url).check == "unhealthy")
    answers = await asyncio.gather(*(proxy.get(f"/{i}") for i in range(30)))
    assert {text for _, text in answers} == {"b"}
    # panic: when no endpoint is healthy, all of them serve rather than none
    b.health_status = 503
    await until(lambda: proxy.status(b.url).check == "unhealthy")
    answers = await asyncio.gather(*(proxy.get(f"/p/{i}") for i in range(40)))
    assert {status for status, _ in answers} == {200} and {text for _, text in answers} == {"a", "b"}
    a.health_status = b.health_status = 200
    await until(lambda: proxy.status(a.url).healthy and proxy.status(b.url).healthy)
    assert a.health_checks > 4


async def test_priority_failover_and_failback(pool_proxy: MakePoolProxy, pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = pair
    c = await Endpoint("c").start()
    try:
        checks = {"path": HEALTH_PATH, "interval_s": 0.05, "timeout_s": 0.5, "unhealthy_after": 1,
                  "healthy_after": 1}
        proxy = await pool_proxy({"legacy": {
            "endpoints": [endpoint(a.url, "eu", 0), endpoint(b.url, "eu", 0), endpoint(c.url, "us", 1)],
            "health": checks, "failover_threshold": 0.7}})
        answers = await asyncio.gather(*(proxy.get(f"/{i}") for i in range(30)))
        assert {text for _, text in answers} == {"a", "b"} and c.count() == 0
        assert proxy.metric("strangler_upstream_serving_priority", upstream="legacy") == 0
        a.health_status = 500  # one of two at priority 0: under the threshold, priority 1 takes over
        await until(lambda: proxy.status(a.url).check == "unhealthy")
        answers = await asyncio.gather(*(proxy.get(f"/f/{i}") for i in range(30)))
        assert {text for _, text in answers} == {"c"}
        assert proxy.metric("strangler_upstream_serving_priority", upstream="legacy") == 1
        assert proxy.status(c.url).serving_priority == 1
        a.health_status = 200  # health returns: back to priority 0
        await until(lambda: proxy.status(a.url).check == "healthy")
        answers = await asyncio.gather(*(proxy.get(f"/b/{i}") for i in range(30)))
        assert {text for _, text in answers} == {"a", "b"}
    finally:
        await c.stop()


async def test_the_retry_budget_caps_retries_when_every_endpoint_fails(pool_proxy: MakePoolProxy) -> None:
    dead = [f"http://127.0.0.1:{closed_port()}" for _ in range(4)]
    # 10 % of the requests of 10 s, plus 0.5 a second (5 in the window)
    proxy = await pool_proxy({"legacy": {
        "endpoints": [endpoint(url, zone) for url, zone in zip(dead, "abcd", strict=True)],
        "outlier": NO_EJECTION, "retries": {"budget_percent": 10, "window_s": 10, "min_per_s": 0.5}}})
    for i in range(40):
        assert (await proxy.get(f"/{i}"))[0] == 502
    retries = proxy.metric("strangler_upstream_retries_total", upstream="legacy")
    assert 5 <= retries <= 5 + 0.1 * 40
    assert proxy.metric("strangler_upstream_retry_budget_exhausted_total", upstream="legacy") >= 40 - retries - 1
    attempts = sum(proxy.status(url).failures for url in dead)
    assert attempts == 40 + retries  # one attempt per request, plus what the budget allowed


async def test_a_drained_endpoint_finishes_its_requests_and_gets_no_new_ones(
    pool_proxy: MakePoolProxy, pair: tuple[Endpoint, Endpoint],
) -> None:
    a, b = pair
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(a.url, "a"), endpoint(b.url, "b")]}})
    upstreams = proxy.runtime.endpoints
    a.gate = asyncio.Event()
    proxy.runtime.set_switches({"legacy": UpstreamSwitch(pinned_zone="a")})  # steer three requests to a
    slow = [asyncio.ensure_future(proxy.get(f"/slow/{i}")) for i in range(3)]
    await until(lambda: upstreams.in_flight("legacy", a.url) == 3)
    proxy.runtime.set_switches({"legacy": UpstreamSwitch(drained=frozenset({a.url}))})
    answers = await asyncio.gather(*(proxy.get(f"/new/{i}") for i in range(20)))
    assert {text for _, text in answers} == {"b"}
    assert upstreams.in_flight("legacy", a.url) == 3 and proxy.status(a.url).drained
    a.gate.set()  # the drained endpoint's requests finish normally
    assert [await s for s in slow] == [(200, "a")] * 3
    assert upstreams.in_flight("legacy", a.url) == 0
    assert proxy.metric("strangler_endpoint_drained", upstream="legacy", endpoint=a.url, zone="a") == 1.0
    # every endpoint drained: nothing may be chosen, not even in panic
    proxy.runtime.set_switches({"legacy": UpstreamSwitch(drained=frozenset({a.url, b.url}))})
    status, text = await proxy.get("/none")
    assert status == 502 and "drained" in text
    proxy.runtime.set_switches({})  # undrained
    assert (await proxy.get("/after"))[0] == 200


async def test_a_zone_pin_sends_everything_to_that_zone(pool_proxy: MakePoolProxy,
                                                        pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = pair
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(a.url, "eu", 0), endpoint(b.url, "us", 1)]}})
    proxy.runtime.set_switches({"legacy": UpstreamSwitch(pinned_zone="us")})
    answers = await asyncio.gather(*(proxy.get(f"/{i}") for i in range(20)))
    assert {text for _, text in answers} == {"b"} and a.count() == 0
    await b.stop()  # pinned to a zone that fails: no way out of it but the operator's
    status, _ = await proxy.get("/down")
    assert status == 502 and a.count() == 0
    proxy.runtime.set_switches({})  # --auto: health decides again
    assert await proxy.get("/auto") == (200, "a")


async def test_one_url_is_one_endpoint_as_before(pool_proxy: MakePoolProxy, pair: tuple[Endpoint, Endpoint]) -> None:
    a, _ = pair
    proxy = await pool_proxy({"legacy": {"url": a.url, "outlier": {"consecutive_failures": 1}}})
    a.status = 500
    for i in range(5):  # a single endpoint serves whatever its health: nothing to fail over to
        assert (await proxy.get(f"/{i}"))[0] == 500
    assert a.count() == 5 and proxy.status(a.url).ejections == 0
    await a.stop()
    status, text = await proxy.get("/gone")
    assert status == 502 and "legacy" in text
    assert proxy.metric("strangler_upstream_retries_total", upstream="legacy") == 0


async def test_mirrors_go_through_the_shadow_paths_own_pools(pool_proxy: MakePoolProxy,
                                                             pair: tuple[Endpoint, Endpoint]) -> None:
    legacy, target = pair
    dead = f"http://127.0.0.1:{closed_port()}"
    proxy = await pool_proxy(
        {"legacy": {"url": legacy.url},
         "target": {"endpoints": [endpoint(dead, "a"), endpoint(target.url, "b")], "outlier": NO_EJECTION}},
        routes=[{"name": "all", "path": "/{*rest}", "target": "target", "mode": "shadow",
                 "compare": {"recheck_after_s": 0}}])
    for i in range(10):
        assert await proxy.get(f"/t/{i}") == (200, "a")
    await proxy.shadow.drain()
    assert target.count() == 10  # every mirror reached the live endpoint
    assert {r.verdict for r in proxy.results.results} == {Verdict.MISMATCH}  # bodies differ ("a" vs "b"): compared
    assert proxy.metric("strangler_upstream_retries_total", upstream="target") > 0


async def test_graphql_fetches_choose_an_endpoint_per_fetch(pair: tuple[Endpoint, Endpoint]) -> None:
    from aiohttp import web

    def answering(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"data": {"who": name}})
        return answer

    runners, urls = [], []
    for name in ("g1", "g2"):
        app = web.Application()
        app.router.add_post("/graphql", answering(name))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    dead = f"http://127.0.0.1:{closed_port()}"
    config = load_config_text(
        '{"upstreams": {"legacy": {"url": "http://127.0.0.1:1"}, "svc": {"endpoints": ['
        + ", ".join(f'{{"url": "{u}", "zone": "z{i}"}}' for i, u in enumerate([dead, *urls])) + "]}}}")
    upstreams = Upstreams()
    try:
        async with aiohttp.ClientSession() as session:
            client = BackendClient(session, {}, pools=upstreams,
                                   routes={"svc": BackendRoute("svc", config.upstreams["svc"], "/graphql")})
            seen = [(await client.query("svc", "{ who }", None))["data"]["who"] for _ in range(30)]
            assert set(seen) == {"g1", "g2"}  # the dead endpoint cost no fetch
            upstreams.set_switches({"svc": UpstreamSwitch(drained=frozenset(urls))})
            with pytest.raises(BackendUnavailable) as failed:
                await client.query("svc", "{ who }", None)
            assert failed.value.kind == "connection"
    finally:
        await upstreams.close()
        for runner in runners:
            await runner.cleanup()


async def test_checks_stop_with_the_last_pool_registry(pair: tuple[Endpoint, Endpoint]) -> None:
    a, _ = pair
    config = load_config_text(f'{{"upstreams": {{"legacy": {{"endpoints": [{{"url": "{a.url}"}}],'
                              f' "health": {{"path": "{HEALTH_PATH}", "interval_s": 0.02}}}}}}}}')
    served = Upstreams()
    mirrored = Upstreams(served.board)  # one board: one checker for both
    served.get("legacy", config.upstreams["legacy"])
    mirrored.get("legacy", config.upstreams["legacy"])
    await until(lambda: a.health_checks >= 3)
    await served.close()
    seen = a.health_checks
    await asyncio.sleep(0.1)
    assert a.health_checks > seen  # the shadow path's registry is still open
    await mirrored.close()
    seen = a.health_checks
    await asyncio.sleep(0.1)
    assert a.health_checks <= seen + 1  # (one may have been under way)


async def test_an_ejection_by_one_path_is_seen_by_the_others(pair: tuple[Endpoint, Endpoint]) -> None:
    """The shadow path ejects an endpoint: the served path's pool, which had
    kept its candidates, stops choosing it at once (one board, one health)."""
    a, b = pair
    a.status = 503
    config = load_config_text(
        f'{{"upstreams": {{"legacy": {{"endpoints": [{{"url": "{a.url}", "zone": "a"}}, {{"url": "{b.url}", "zone": "b"}}],'
        f' "outlier": {{"consecutive_failures": 2, "base_ejection_s": 30}}}}}}}}')
    served = Upstreams()
    mirrored = Upstreams(served.board)
    try:
        pools = [u.get("legacy", config.upstreams["legacy"]) for u in (served, mirrored)]
        for p in pools:  # both pools have chosen once: both keep their candidates
            (await p.send("GET", "/warm", "", [], None)).release()
        while not served.board.describe(config)[0].ejected:
            (await pools[1].send("GET", "/m", "", [], None)).release()
        before = a.count()
        for _ in range(20):
            resp = await pools[0].send("GET", "/s", "", [], None)
            assert resp.headers["X-Endpoint"] == "b"
            resp.release()
        assert a.count() == before
    finally:
        await served.close()
        await mirrored.close()


async def test_a_reload_that_changes_the_endpoints_takes_effect(pool_proxy: MakePoolProxy,
                                                                pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = pair
    proxy = await pool_proxy({"legacy": {"endpoints": [endpoint(a.url, "a")]}})
    assert await proxy.get("/before") == (200, "a")
    reloaded = load_config_text(f'{{"upstreams": {{"legacy": {{"endpoints": [{{"url": "{b.url}", "zone": "b"}}]}}}}}}')
    proxy.runtime.apply(config=reloaded)
    assert await proxy.get("/after") == (200, "b")
    # the removed endpoint is no longer exported; the old pool closes after its grace time
    assert proxy.runtime.registry.get_sample_value(
        "strangler_endpoint_requests_total", {"upstream": "legacy", "endpoint": a.url, "zone": "a"}) is None
    assert proxy.metric("strangler_endpoint_requests_total", upstream="legacy", endpoint=b.url, zone="b") == 1
