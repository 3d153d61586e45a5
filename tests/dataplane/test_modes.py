"""Each mode end to end: who serves, what is mirrored, what the comparator gets."""

from __future__ import annotations

import asyncio

import pytest

from strangler_proxy.config import Mode
from strangler_proxy.diff.result import Verdict
from strangler_proxy.routing.router import RouteState
from tests.dataplane.conftest import MakeProxy, Proxy
from tests.dataplane.rawhttp import RawResponse, RawUpstream, raw_request


def req(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    h = {"Host": "films.example", "Connection": "close", **(headers or {})}
    if body:
        h["Content-Length"] = str(len(body))
    return (f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body


async def get(proxy: Proxy, target: str, **headers: str) -> RawResponse:
    return await raw_request(proxy.port, req("GET", target, headers))


ROUTE = '[{{name: ratings, path: "/api/titles/{{id}}/ratings", target: target, mode: {mode}, {extra}}}]'


async def test_legacy_mode_never_touches_target(make_proxy: MakeProxy, target: RawUpstream) -> None:
    proxy = await make_proxy(ROUTE.format(mode="legacy", extra=""))
    resp = await get(proxy, "/api/titles/tt1/ratings")
    assert resp.header("X-Upstream") == "legacy"
    await proxy.shadow.drain()
    assert target.seen == [] and proxy.results.results == []
    assert proxy.runtime.route_counters()["ratings"]["legacy"] == 1


async def test_shadow_serves_legacy_and_compares(make_proxy: MakeProxy, target: RawUpstream) -> None:
    proxy = await make_proxy(ROUTE.format(mode="shadow", extra='rewrite: "/v1/ratings/{id}"'))
    resp = await get(proxy, "/api/titles/tt1/ratings?x=1")
    assert resp.status == 200 and resp.header("X-Upstream") == "legacy"
    await proxy.shadow.drain()
    mirrored = target.seen[0]
    assert mirrored.target == "/v1/ratings/tt1?x=1"
    assert ("X-Strangler-Shadow", "1") in mirrored.headers
    assert mirrored.headers[0] == ("Host", "films.example")  # the original Host
    [result] = proxy.results.results
    assert result.key == "ratings" and result.mode == "shadow"
    # the echo bodies differ (upstream name, target), so the byte comparator says mismatch
    assert result.verdict is Verdict.MISMATCH
    assert result.legacy_status == 200 and result.candidate_status == 200
    assert result.target == "/api/titles/tt1/ratings?x=1"
    counters = proxy.runtime.route_counters()["ratings"]
    assert counters["shadowed"] == 1 and counters["legacy"] == 1


async def test_shadow_identical_bodies_match(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy('[{name: c, path: "/_cookies", target: target, mode: shadow}]')
    await get(proxy, "/_cookies")
    await proxy.shadow.drain()
    assert [r.verdict for r in proxy.results.results] == [Verdict.MATCH]


async def test_writes_not_mirrored_unless_dry_run(make_proxy: MakeProxy, target: RawUpstream) -> None:
    never = await make_proxy(ROUTE.format(mode="shadow", extra="methods: [GET, POST]"))
    await raw_request(never.port, req("POST", "/api/titles/tt1/ratings", body=b'{"value": 3}'))
    await never.shadow.drain()
    assert target.seen == []
    dry = await make_proxy(ROUTE.format(mode="shadow", extra='methods: [GET, POST], shadow_writes: "dry-run"'))
    await raw_request(dry.port, req("POST", "/api/titles/tt1/ratings", body=b'{"value": 3}'))
    await dry.shadow.drain()
    [mirrored] = target.seen
    assert ("X-Strangler-Dry-Run", "1") in mirrored.headers and mirrored.body == b'{"value": 3}'
    assert dry.results.results[0].method == "POST"


async def test_body_over_limit_is_skipped(make_proxy: MakeProxy, legacy: RawUpstream, target: RawUpstream) -> None:
    proxy = await make_proxy(ROUTE.format(mode="shadow", extra='methods: [PUT], shadow_writes: "dry-run"'),
                             shadow="{body_limit: 10}")
    resp = await raw_request(proxy.port, req("PUT", "/api/titles/tt1/ratings", body=b"x" * 100))
    assert resp.status == 200 and resp.json()["body_len"] == 100  # passed through whole
    await asyncio.sleep(0.05)
    await proxy.shadow.drain()
    assert target.seen == []
    assert [(r.verdict, r.reason) for r in proxy.results.results] == [(Verdict.SKIPPED, "request-body-over-limit")]
    assert proxy.runtime.route_counters()["ratings"]["shadow_skipped"] == 1


async def test_sample_rate_zero_mirrors_nothing(make_proxy: MakeProxy, target: RawUpstream) -> None:
    proxy = await make_proxy(ROUTE.format(mode="shadow", extra="sample_rate: 0"))
    for _ in range(5):
        await get(proxy, "/api/titles/tt1/ratings")
    await proxy.shadow.drain()
    assert target.seen == []


async def test_canary_sticky_by_header(make_proxy: MakeProxy, target: RawUpstream) -> None:
    proxy = await make_proxy(ROUTE.format(mode="canary", extra='percent: 50, partition_key: "header:X-Customer-Id"'))
    sides: dict[str, set[str]] = {}
    for i in range(20):
        for _ in range(3):
            resp = await get(proxy, "/api/titles/tt1/ratings", **{"X-Customer-Id": f"c{i}"})
            sides.setdefault(f"c{i}", set()).add(resp.header("X-Upstream") or "")
    assert all(len(s) == 1 for s in sides.values())  # the same key always lands on the same side
    assert {"legacy", "target"} == set().union(*sides.values())
    await proxy.shadow.drain()
    legacy_served = sum(1 for s in sides.values() if s == {"legacy"}) * 3
    # legacy-served canary requests are shadowed to the target and compared;
    # target-served ones are not compared, only recorded as SERVED
    compared = [r for r in proxy.results.results if r.verdict is not Verdict.SERVED]
    served = [r for r in proxy.results.results if r.verdict is Verdict.SERVED]
    assert len(compared) == legacy_served
    assert len(served) == 60 - legacy_served
    assert all(r.mode == "canary" for r in proxy.results.results)


async def test_extracted_with_reverse_shadow(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy(ROUTE.format(mode="extracted", extra='reverse_shadow: true, rewrite: "/r/{id}"'))
    resp = await get(proxy, "/api/titles/tt9/ratings")
    assert resp.header("X-Upstream") == "target" and resp.json()["target"] == "/r/tt9"
    await proxy.shadow.drain()
    assert legacy.seen[-1].target == "/api/titles/tt9/ratings"  # legacy gets the original path
    [result] = proxy.results.results
    assert result.mode == "extracted" and result.legacy_status == 200
    assert proxy.runtime.route_counters()["ratings"]["target"] == 1


async def test_flip_applies_to_next_request(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(ROUTE.format(mode="legacy", extra=""))
    assert (await get(proxy, "/api/titles/tt1/ratings")).header("X-Upstream") == "legacy"
    proxy.runtime.apply(overrides={"ratings": RouteState(Mode.EXTRACTED, 100)})
    assert (await get(proxy, "/api/titles/tt1/ratings")).header("X-Upstream") == "target"


async def test_fallback_to_legacy_when_target_fails(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy('[{name: r, path: "/_500", target: target, mode: extracted, fallback: true}]')
    resp = await get(proxy, "/_500")
    # the legacy echo also answers /_500 with 500, so use the marker and counters
    assert resp.header("X-Strangler-Fallback") == "1" and resp.header("X-Upstream") == "legacy"
    assert proxy.runtime.route_counters()["r"]["fallbacks"] == 1


async def test_fallback_when_target_down(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(ROUTE.format(mode="extracted", extra="fallback: true, methods: [GET, POST]"),
                             target_port=1)
    resp = await get(proxy, "/api/titles/tt1/ratings")
    assert resp.status == 200 and resp.header("X-Upstream") == "legacy"
    assert resp.header("X-Strangler-Fallback") == "1"
    # a write is never retried on legacy: the client gets the 502
    post = await raw_request(proxy.port, req("POST", "/api/titles/tt1/ratings", body=b"{}"))
    assert post.status == 502 and post.json()["upstream"] == "target"


@pytest.mark.parametrize("fallback", [True, False])
async def test_a_failing_target_is_recorded_even_when_reverse_shadowed(make_proxy: MakeProxy, fallback: bool) -> None:
    """Extracted with reverse shadow: a dead target leaves nothing to compare, but the
    failure still reaches the listeners (guardrails) as a candidate error."""
    extra = f"reverse_shadow: true, fallback: {str(fallback).lower()}"
    proxy = await make_proxy(ROUTE.format(mode="extracted", extra=extra), target_port=1)
    resp = await get(proxy, "/api/titles/tt1/ratings")
    assert resp.status == (200 if fallback else 502)
    await proxy.shadow.drain()
    await asyncio.sleep(0)  # results reach the listeners on the next loop iteration
    [result] = proxy.results.results
    assert (result.verdict, result.reason) == (Verdict.CANDIDATE_ERROR, "candidate: connect")
    assert result.candidate_latency_s is not None and result.candidate_latency_s > 0


async def test_queue_full_drops_and_counts(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(ROUTE.format(mode="shadow", extra=""), shadow="{queue_size: 1, workers: 1}",
                             target_port=None)
    # stop the workers so the queue stays full
    for task in proxy.shadow._workers:
        task.cancel()
    for _ in range(4):
        assert (await get(proxy, "/api/titles/tt1/ratings")).status == 200
    counters = proxy.runtime.route_counters()["ratings"]
    assert counters["shadowed"] == 1 and counters["shadow_dropped"] == 3
    assert proxy.runtime.registry.get_sample_value("strangler_shadow_dropped_total", {"route": "ratings"}) == 3


async def test_listener_that_raises_breaks_nothing(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(ROUTE.format(mode="shadow", extra=""))

    class Bad:
        def observe(self, result: object) -> None:
            raise RuntimeError("listener bug")

    proxy.shadow.listeners.insert(0, Bad())
    assert (await get(proxy, "/api/titles/tt1/ratings")).status == 200
    await proxy.shadow.drain()
    assert len(proxy.results.results) == 1  # the next listener still got it
    assert proxy.runtime.registry.get_sample_value("strangler_shadow_listener_errors_total") == 1


async def test_metrics_and_access_log(make_proxy: MakeProxy, caplog) -> None:  # type: ignore[no-untyped-def]
    import json
    import logging

    proxy = await make_proxy(ROUTE.format(mode="shadow", extra=""))
    with caplog.at_level(logging.INFO, logger="strangler.access"):
        await get(proxy, "/api/titles/tt1/ratings")
        await get(proxy, "/other")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "strangler.access"]
    assert [(x["route"], x["mode"], x["upstream"], x["status"]) for x in lines] == [
        ("ratings", "shadow", "legacy", 200), (None, "legacy", "legacy", 200)]
    assert lines[0]["duration_ms"] > 0
    reg = proxy.runtime.registry
    assert reg.get_sample_value("strangler_proxy_requests_total",
                                {"route": "ratings", "mode": "shadow", "upstream": "legacy", "status": "200", "cell": ""}) == 1
    assert reg.get_sample_value("strangler_proxy_requests_total",
                                {"route": "_default", "mode": "legacy", "upstream": "legacy", "status": "200", "cell": ""}) == 1
    await proxy.shadow.drain()
    assert reg.get_sample_value("strangler_shadow_verdicts_total", {"route": "ratings", "verdict": "mismatch"}) == 1
