"""Rechecks through the running proxy: a read that raced a write is asked again on both sides
(the side that served it included) after the answer went out, and recorded as transient;
a real divergence, a write and an exhausted budget stay mismatches -- all counted in /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from strangler_proxy.config import load_config_text
from strangler_proxy.dataplane.handler import start_proxy
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import ShadowDispatcher
from strangler_proxy.diff.comparator import DiffComparator
from strangler_proxy.diff.recheck import EXTRA_KEY
from strangler_proxy.diff.result import Verdict
from tests.dataplane.conftest import Collector

LAG_S = 0.2  # how long the copy that did not take the write is behind
RECHECK_AFTER_S = 0.5


@dataclass
class Copy:
    """One side's copy of the vote counts, and who asked it what."""

    votes: dict[str, int] = field(default_factory=dict)
    reads: list[tuple[str, bool]] = field(default_factory=list)  # (title, marked as shadow traffic)
    rounding: bool = False  # a real divergence: answers an average with one decimal


@dataclass
class Catalogue:
    """A writer copy and a follower copy; a write reaches the other copy LAG_S later (an outbox sync)."""

    writer: Copy = field(default_factory=Copy)
    follower: Copy = field(default_factory=Copy)

    def app(self, side: Copy) -> web.Application:
        other = self.follower if side is self.writer else self.writer

        def answer(title: str, votes: int, status: int = 200) -> web.Response:
            average = round(22 / 3, 1) if side.rounding else 22 / 3
            return web.json_response({"title": title, "votes": votes, "average": average}, status=status)

        async def read(request: web.Request) -> web.Response:
            title = request.match_info["id"]
            side.reads.append((title, "X-Strangler-Shadow" in request.headers))
            return answer(title, side.votes.get(title, 7))

        async def vote(request: web.Request) -> web.Response:
            title = request.match_info["id"]
            votes = side.votes.get(title, 7) + 1
            if "X-Strangler-Dry-Run" not in request.headers:  # a dry run is rolled back
                side.votes[title] = votes
                asyncio.get_running_loop().call_later(LAG_S, other.votes.__setitem__, title, votes)
            return answer(title, votes, 201)

        app = web.Application()
        app.router.add_get("/api/titles/{id}/ratings", read)
        app.router.add_post("/api/titles/{id}/ratings", vote)
        return app


@dataclass
class Running:
    url: str
    catalogue: Catalogue
    results: Collector
    shadow: ShadowDispatcher
    runtime: ProxyRuntime

    def metric(self, name: str, **labels: str) -> float:
        return self.runtime.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def proxy_for() -> AsyncIterator:
    """``await proxy_for(route_yaml, shadow=..., legacy_writes=True)``: the writer copy behind
    ``legacy`` (or behind ``target``, after a cut-over), the follower behind the other."""
    started: list = []

    async def make(route: str, *, shadow: str = "{}", legacy_writes: bool = True, rounding: bool = False) -> Running:
        catalogue = Catalogue()
        catalogue.follower.rounding = rounding
        legacy_copy, target_copy = ((catalogue.writer, catalogue.follower) if legacy_writes
                                    else (catalogue.follower, catalogue.writer))
        servers = [TestServer(catalogue.app(c), host="127.0.0.1", port=0) for c in (legacy_copy, target_copy)]
        for s in servers:
            await s.start_server()
        config = load_config_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{servers[0].port}"}}
  target: {{url: "http://127.0.0.1:{servers[1].port}"}}
shadow: {shadow}
compare: {{recheck_after_s: {RECHECK_AFTER_S}}}
routes:
  - {route}
""")
        runtime = ProxyRuntime(config)
        results = Collector()
        shadow_path = ShadowDispatcher(config.shadow, DiffComparator(), [results], runtime)
        await shadow_path.start()
        runner, port = await start_proxy(runtime, shadow_path, "127.0.0.1", 0)
        started.append((runner, shadow_path, servers))
        return Running(f"http://127.0.0.1:{port}", catalogue, results, shadow_path, runtime)

    yield make
    for runner, shadow_path, servers in started:
        await runner.cleanup()
        await shadow_path.stop()
        for s in servers:
            await s.close()


SHADOWED = '{name: ratings, path: "/api/titles/{id}/ratings", methods: [GET], target: target, mode: shadow}'


async def test_a_read_racing_a_write_is_transient_and_the_client_never_waits(proxy_for) -> None:
    p = await proxy_for(SHADOWED)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{p.url}/api/titles/tt1/ratings") as voted:  # no route: legacy takes the write
            assert voted.status == 201
        start = time.monotonic()
        async with http.get(f"{p.url}/api/titles/tt1/ratings") as read:
            assert (await read.json())["votes"] == 8
        answered = time.monotonic() - start
    await asyncio.sleep(0.1)
    assert answered < RECHECK_AFTER_S / 2 and p.results.results == []  # the recheck waits off the client's path
    await p.shadow.drain()
    [result] = p.results.results
    assert result.verdict is Verdict.TRANSIENT and result.extra[EXTRA_KEY] == "transient"
    assert [d.path for d in result.differences] == ["$.votes"]  # what differed at first, kept as evidence
    # Both sides were asked again, the one that served the client included, as shadow traffic.
    assert p.catalogue.writer.reads == [("tt1", False), ("tt1", True)]
    assert p.catalogue.follower.reads == [("tt1", True), ("tt1", True)]
    assert p.metric("strangler_rechecks_total", route="ratings", outcome="transient") == 1
    assert p.metric("strangler_shadow_verdicts_total", route="ratings", verdict="transient") == 1
    assert p.metric("strangler_shadow_verdicts_total", route="ratings", verdict="mismatch") == 0


async def test_a_real_divergence_is_still_a_mismatch_after_the_recheck(proxy_for) -> None:
    p = await proxy_for(SHADOWED, rounding=True)
    async with aiohttp.ClientSession() as http, http.get(f"{p.url}/api/titles/tt2/ratings") as read:
        assert read.status == 200
    await p.shadow.drain()
    [result] = p.results.results
    assert result.verdict is Verdict.MISMATCH and result.extra[EXTRA_KEY] == "mismatch"
    assert [d.path for d in result.differences] == ["$.average"]
    assert len(p.catalogue.follower.reads) == 2  # it was asked again, and still disagreed
    assert p.metric("strangler_rechecks_total", route="ratings", outcome="mismatch") == 1
    assert p.metric("strangler_rechecks_total", route="ratings", outcome="transient") == 0


async def test_a_reverse_shadow_asks_the_target_that_served_and_legacy_again(proxy_for) -> None:
    # After the cut-over the service takes the writes and the monolith follows through the reverse sync.
    route = ('{name: ratings, path: "/api/titles/{id}/ratings", methods: [GET, POST], target: target,'
             ' mode: extracted, reverse_shadow: true}')
    p = await proxy_for(route, legacy_writes=False)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{p.url}/api/titles/tt3/ratings") as voted:
            assert voted.status == 201
        async with http.get(f"{p.url}/api/titles/tt3/ratings") as read:
            assert (await read.json())["votes"] == 8  # the target served it
    await p.shadow.drain()
    # The POST is not mirrored in extracted (only recorded as served): the read is what was compared.
    [result] = [r for r in p.results.results if r.verdict is not Verdict.SERVED]
    assert result.verdict is Verdict.TRANSIENT
    assert p.catalogue.writer.reads == [("tt3", False), ("tt3", True)]  # the target: served, then asked again
    assert p.catalogue.follower.reads == [("tt3", True), ("tt3", True)]  # legacy: mirrored, then asked again


async def test_writes_and_routes_that_opt_out_are_never_asked_again(proxy_for) -> None:
    p = await proxy_for('{name: ratings, path: "/api/titles/{id}/ratings", methods: [GET, POST], target: target,'
                        ' mode: shadow, shadow_writes: dry-run, compare: {recheck_after_s: 0}}', rounding=True)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{p.url}/api/titles/tt4/ratings") as read:
            assert read.status == 200
    await p.shadow.drain()
    [result] = p.results.results
    assert result.verdict is Verdict.MISMATCH and EXTRA_KEY not in result.extra
    assert len(p.catalogue.follower.reads) == 1
    assert p.metric("strangler_rechecks_total", route="ratings", outcome="mismatch") == 0


async def test_a_dry_run_write_that_differs_is_a_mismatch_at_once(proxy_for) -> None:
    p = await proxy_for('{name: ratings, path: "/api/titles/{id}/ratings", methods: [POST], target: target,'
                        ' mode: shadow, shadow_writes: dry-run}', rounding=True)
    async with aiohttp.ClientSession() as http, http.post(f"{p.url}/api/titles/tt5/ratings") as voted:
        assert voted.status == 201
    await p.shadow.drain()
    [result] = p.results.results  # the candidate rounds: a write is never asked again (it would vote twice)
    assert result.verdict is Verdict.MISMATCH and EXTRA_KEY not in result.extra
    assert p.catalogue.follower.votes == {} and p.catalogue.writer.votes == {"tt5": 8}


async def test_over_the_budget_mismatches_are_recorded_at_once_and_counted(proxy_for) -> None:
    # Half a recheck a second: one second's worth holds one, the next comes two seconds later.
    p = await proxy_for(SHADOWED, shadow="{recheck_budget_per_s: 0.5}", rounding=True)
    reads = 8
    async with aiohttp.ClientSession() as http:
        for i in range(reads):
            async with http.get(f"{p.url}/api/titles/tt{i}/ratings") as read:
                assert read.status == 200
    await p.shadow.drain()
    outcomes = [r.extra[EXTRA_KEY] for r in p.results.results]
    assert len(outcomes) == reads and {r.verdict for r in p.results.results} == {Verdict.MISMATCH}
    assert outcomes.count("over_budget") == reads - 1 and outcomes.count("mismatch") == 1
    assert len(p.catalogue.follower.reads) == reads + 1  # the mirrors, and the one recheck
    assert p.metric("strangler_rechecks_total", route="ratings", outcome="over_budget") == reads - 1
    assert p.metric("strangler_rechecks_total", route="ratings", outcome="mismatch") == 1
    assert p.metric("strangler_shadow_verdicts_total", route="ratings", verdict="mismatch") == reads
