"""Transient results (a mismatch gone when both sides were asked again) in the store: counted in
their own column, never a differing path, never sampled, never a readiness sample -- and the
column's migration up and down on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from strangler_proxy import migrate
from strangler_proxy.config import ReadinessConfig, StoreSettings
from strangler_proxy.control.readiness import evaluate
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.store import ResultsReader, ResultWriter
from strangler_proxy.store.counts import VerdictCounts
from strangler_proxy.store.models import RESULTS_METADATA
from tests.store.factory import BASE_T, migrated_sqlite, result

VERSION_TABLE = "alembic_version_results"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(await migrated_sqlite(tmp_path))
    yield eng
    await eng.dispose()


async def test_transients_are_counted_apart_and_judged_never(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(samples_per_path=5))
    for i in range(400):
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + i * 0.1))
    for i in range(300):  # reads that raced writes: they first differed at $.num_votes
        writer.observe(result("ratings", Verdict.TRANSIENT, BASE_T + i * 0.1, diffs=(("$.num_votes", 8, 7),),
                              extra={"recheck": "transient"}))
    writer.observe(result("ratings", Verdict.MISMATCH, BASE_T + 5, diffs=(("$.average_rating", 7.33, 7.3),),
                          extra={"recheck": "mismatch"}))
    await writer.flush()
    reader = ResultsReader(engine)
    [summary] = await reader.summaries()
    c = summary.counts
    assert (c.match, c.mismatch, c.transient, c.compared, c.total) == (400, 1, 300, 401, 701)
    assert sum(p.counts.transient for p in summary.timeline) == 300
    # Only the real mismatch is a differing path, and only it is an example.
    assert [(p.path, p.count) for p in summary.top_paths] == [("$.average_rating", 1)]
    assert [s.verdict for s in await reader.samples("ratings", limit=10)] == ["mismatch"]
    # 300 transients do not drag readiness down: 1 mismatch in 401 samples.
    readiness = evaluate(c, summary.legacy_latency.quantile(0.99), summary.candidate_latency.quantile(0.99),
                         ReadinessConfig(min_samples=100, max_mismatch_rate=0.02))
    assert readiness.samples == 401 and readiness.ready, readiness.label
    as_mismatches = VerdictCounts(match=400, mismatch=301)
    assert not evaluate(as_mismatches, 0.01, 0.01, ReadinessConfig(max_mismatch_rate=0.02)).ready


async def _columns(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("result_buckets")})


async def _roundtrip(url: str) -> None:
    """0002 with a row in it -> head (the row reads transient=0, the schema matches
    the models) -> back to 0002 (the row and its other counts kept) -> head again."""
    await migrate.downgrade(migrate.RESULTS, url, "base")
    await migrate.upgrade(migrate.RESULTS, url, "results_0002")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO result_buckets (key, bucket_start, match, mismatch, candidate_error, legacy_error, "
                "skipped, served, legacy_latency, candidate_latency) VALUES ('old', 60, 7, 2, 0, 0, 0, 3, '[]', '[]')"
            ))
        assert "transient" not in await _columns(engine)
        await migrate.upgrade(migrate.RESULTS, url)
        [old] = await ResultsReader(engine).summaries()
        assert (old.key, old.counts.match, old.counts.served, old.counts.transient) == ("old", 7, 3, 0)
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"version_table": VERSION_TABLE}), RESULTS_METADATA))
        assert diff == []
        writer = ResultWriter(engine, StoreSettings())
        writer.observe(result("old", Verdict.TRANSIENT, 61, diffs=(("$.n", 1, 2),)))
        await writer.flush()
        [old] = await ResultsReader(engine).summaries()
        assert (old.counts.mismatch, old.counts.transient) == (2, 1)
        await migrate.downgrade(migrate.RESULTS, url, "results_0002")
        assert "transient" not in await _columns(engine)
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT key, match, mismatch, served FROM result_buckets"))).all()
        assert [tuple(r) for r in kept] == [("old", 7, 2, 3)]
        await migrate.upgrade(migrate.RESULTS, url)
        assert "transient" in await _columns(engine)
    finally:
        await engine.dispose()


async def test_transient_column_migrates_up_and_down_on_sqlite(tmp_path: Path) -> None:
    await _roundtrip(await migrated_sqlite(tmp_path, "transient"))


@pytest.mark.postgres
async def test_transient_column_migrates_up_and_down_on_postgres(pg_database: Callable[[], Awaitable[str]]) -> None:
    url = await pg_database()
    await migrate.upgrade(migrate.RESULTS, url)
    await _roundtrip(url)
