"""A vote through the monolith races a shadowed read of the same title, with the ratings service
fed by a real sync worker: the read's mismatch is replication lag, asked again and stored as
``transient``. With the service's one-decimal rounding the same race stays a mismatch.

Everything is real and on loopback: the seeded monolith, the ratings service on its own SQLite
file (backfilled, then followed by a :class:`SyncWorker` polling the outbox), and a whole
:class:`ProxyServer` with its results store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from extracted_services.common.registry import service_spec
from extracted_services.ratings import RatingsSettings, Rounding, create_app
from strangler_proxy.databases import make_engine
from strangler_proxy.datamove.backfill import backfill
from strangler_proxy.datamove.sync import SyncWorker
from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.server import ProxyServer
from strangler_proxy.store import KeySummary, ResultsReader
from tests.services.conftest import ServeFn

SYNC_POLL_S = 0.2  # the sync worker's poll: a read right after a vote sees the service behind
RACES = 4  # titles voted on, each read at once through the proxy

CONFIG = """
upstreams:
  monolith: {{url: "http://127.0.0.1:{monolith}"}}
  ratings: {{url: "http://127.0.0.1:{ratings}"}}
proxy: {{default_upstream: monolith}}
store: {{url: "{store}", flush_interval_s: 0.1}}
compare: {{ignore: ["$..generated_at", "$..request_id"]}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", methods: [GET], target: ratings, mode: shadow}}
"""


class Collector:
    def __init__(self) -> None:
        self.results: list[ShadowResult] = []

    def observe(self, result: ShadowResult) -> None:
        self.results.append(result)


@dataclass
class Race:
    summary: KeySummary  # what the results store holds for the route
    results: list[ShadowResult]  # what the shadow path published
    rechecks: dict[str, float]  # strangler_rechecks_total by outcome
    lag_p99_s: float | None  # the sync worker's


@asynccontextmanager
async def _worker(worker: SyncWorker) -> AsyncIterator[SyncWorker]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _uneven_vote(http: aiohttp.ClientSession, monolith_ratings: str) -> int | None:
    """A vote after which the title's average has more than one decimal (the service's rounding
    shows), or None when there is none (a title without votes gets a whole average)."""
    async with http.get(monolith_ratings) as got:
        before = await got.json()
    total, n = (before["average_rating"] or 0.0) * before["num_votes"], before["num_votes"]
    uneven = [v for v in range(10, 0, -1) if round((total + v) / (n + 1), 1) != round((total + v) / (n + 1), 6)]
    return uneven[0] if uneven else None


async def _race(tmp_path: Path, monolith_url: str, service_db, engines, serve: ServeFn, monolith,
                rounding: Rounding) -> Race:
    spec = service_spec("ratings")
    service_url = await service_db("ratings")
    src, dst = engines(monolith_url), engines(service_url)
    await backfill(spec.datamove.backfill, src, dst)
    worker = SyncWorker("ratings", spec.datamove.streams[0], src, dst, poll_interval_s=SYNC_POLL_S)
    await worker.prepare()
    await worker.drain()  # caught up before the race starts: only the votes below are behind
    ratings = await serve(create_app(RatingsSettings(service_url, rounding)))
    store = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    config = tmp_path / "strangler.yaml"
    config.write_text(CONFIG.format(monolith=monolith.server.port, ratings=ratings.server.port, store=store))
    collector = Collector()
    raced = 0
    async with _worker(worker), ProxyServer(config, port=0, admin_port=0, state_url=store, watch=False) as proxy, \
            aiohttp.ClientSession() as http:
        proxy.shadow.add_listener(collector)
        for title in (f"tt{i:07d}" for i in range(1, 30)):
            value = await _uneven_vote(http, f"http://127.0.0.1:{monolith.server.port}/api/titles/{title}/ratings")
            if value is None:
                continue
            async with http.post(f"{proxy.url}/api/titles/{title}/ratings",
                                 json={"user_id": "racer", "value": value}) as voted:  # no route: the monolith
                assert voted.status == 201, await voted.text()
                votes = (await voted.json())["num_votes"]
            async with http.get(f"{proxy.url}/api/titles/{title}/ratings") as read:
                assert (await read.json())["num_votes"] == votes  # the client always gets the monolith's answer
            raced += 1
            if raced == RACES:
                break
        assert raced == RACES
        await proxy.shadow.drain()
        registry = proxy.runtime.registry
        rechecks = {o: registry.get_sample_value("strangler_rechecks_total", {"route": "ratings", "outcome": o}) or 0.0
                    for o in ("transient", "mismatch", "error", "over_budget")}
    engine = make_engine(store)  # the proxy has stopped: its writer flushed everything
    try:
        [summary] = await ResultsReader(engine).summaries(["ratings"])
    finally:
        await engine.dispose()
    return Race(summary, collector.results, rechecks, worker.lag_percentile(99))


async def test_a_vote_racing_a_shadowed_read_is_transient_not_a_mismatch(
    tmp_path: Path, monolith_url: str, service_db, engines, serve: ServeFn, monolith
) -> None:
    race = await _race(tmp_path, monolith_url, service_db, engines, serve, monolith, Rounding.LEGACY)
    counts = race.summary.counts
    # The sync caught up within the recheck delay (the 0.5 s default sits above its p99)...
    assert race.lag_p99_s is not None and race.lag_p99_s < 0.5
    # ...so no read is a mismatch; those the race caught behind are transient, in the store too.
    assert counts.mismatch == 0 and counts.transient >= 1, counts
    assert counts.match + counts.transient == RACES and counts.compared == counts.match
    transient = [r for r in race.results if r.verdict is Verdict.TRANSIENT]
    assert len(transient) == counts.transient
    for r in transient:  # what differed at first is the vote the service had not received yet
        assert {d.path for d in r.differences} <= {"$.num_votes", "$.average_rating"}
        assert "$.num_votes" in {d.path for d in r.differences}
        assert r.differences[0].legacy != r.differences[0].candidate
    assert race.rechecks == {"transient": counts.transient, "mismatch": 0, "error": 0, "over_budget": 0}
    assert [p.path for p in race.summary.top_paths] == []  # nothing for anyone to investigate


@pytest.mark.parametrize("rounding", [Rounding.ONE_DECIMAL])
async def test_a_real_divergence_in_the_same_race_is_still_a_mismatch(
    tmp_path: Path, monolith_url: str, service_db, engines, serve: ServeFn, monolith, rounding: Rounding
) -> None:
    race = await _race(tmp_path, monolith_url, service_db, engines, serve, monolith, rounding)
    counts = race.summary.counts
    # Every vote leaves an average with more decimals: each read differs, before and after the recheck.
    assert counts.mismatch == RACES and counts.transient == 0, counts
    # Recorded as first seen: the rounding, and the vote too where the read caught the service behind.
    assert race.summary.top_paths[0].path == "$.average_rating" and race.summary.top_paths[0].count == RACES
    assert {p.path for p in race.summary.top_paths} <= {"$.average_rating", "$.num_votes"}
    assert race.rechecks["mismatch"] == RACES and race.rechecks["transient"] == 0
    assert all(r.verdict is Verdict.MISMATCH and r.extra["recheck"] == "mismatch" for r in race.results)
