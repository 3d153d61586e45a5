"""The same store on the real PostgreSQL, shared by two writers (replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from strangler_proxy import migrate
from strangler_proxy.config import StoreSettings
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.store import ResultsReader, ResultWriter
from tests.store.factory import BASE_T, result

pytestmark = pytest.mark.postgres


async def test_two_replicas_add_up_on_postgres(pg_database: Callable[[], Awaitable[str]]) -> None:
    url = await pg_database()
    await migrate.upgrade(migrate.RESULTS, url)
    engines = [make_engine(url), make_engine(url)]
    writers = [ResultWriter(e, StoreSettings(samples_per_path=4, batch_size=10_000)) for e in engines]
    try:
        # Both replicas hit the same keys and buckets, flushing at the same time, 5 rounds.
        for round_ in range(5):
            for w_i, w in enumerate(writers):
                for i in range(200):
                    v = Verdict.MISMATCH if i % 10 == 0 else Verdict.MATCH
                    diffs = (("$.rating", 1, 2),) if v is Verdict.MISMATCH else ()
                    at = BASE_T + i * 0.5 + round_
                    w.observe(result("ratings", v, at, diffs=diffs, candidate_s=0.02 if w_i else 0.04))
                    w.observe(result("graphql:Title.rating", Verdict.MATCH, at))
            await asyncio.gather(*(w.flush() for w in writers))
        reader = ResultsReader(engines[0])
        summaries = {s.key: s for s in await reader.summaries()}
        ratings = summaries["ratings"]
        assert ratings.counts.match == 2 * 5 * 180 and ratings.counts.mismatch == 2 * 5 * 20
        assert ratings.candidate_latency.total == 2000 and ratings.legacy_latency.total == 2000
        assert summaries["graphql:Title.rating"].counts.match == 2000
        assert ratings.top_paths[0].path == "$.rating" and ratings.top_paths[0].count == 200
        samples = await reader.samples("ratings", limit=100)
        assert len(samples) == 4  # bounded per key and path across replicas
        # Retention by age works on PostgreSQL too.
        assert await writers[0].apply_retention(now=BASE_T + 100 * 86_400) == 4
        assert await reader.summaries() == []
    finally:
        for e in engines:
            await e.dispose()
