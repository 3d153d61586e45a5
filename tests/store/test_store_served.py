"""Target-served requests (SERVED, and the candidate errors among them) in the
store: counted in their own column, timed in the candidate histogram, never
sampled -- and the column's migration up and down on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from strangler_proxy import migrate
from strangler_proxy.config import StoreSettings
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.store import LatencyHistogram, ResultsReader, ResultWriter
from strangler_proxy.store.models import RESULTS_METADATA
from strangler_proxy.store.writer import VERDICT_COLUMN
from tests.store.factory import BASE_T, migrated_sqlite, result, served

VERSION_TABLE = "alembic_version_results"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(await migrated_sqlite(tmp_path))
    yield eng
    await eng.dispose()


def test_every_verdict_has_a_count_column() -> None:
    # A verdict without a column would make every flush of a batch holding it fail.
    assert set(VERDICT_COLUMN) == set(Verdict)
    assert {c.name for c in RESULTS_METADATA.tables["result_buckets"].columns} >= set(VERDICT_COLUMN.values())


async def test_served_results_are_counted_timed_and_not_sampled(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(samples_per_path=5))
    served_s = [0.020 + i * 0.0002 for i in range(100)]
    for i, s in enumerate(served_s):
        writer.observe(served("ratings", BASE_T + i * 0.5, candidate_s=s))
    for i in range(10):  # compared requests on the same key (a canary's legacy share)
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + i, legacy_s=0.010, candidate_s=0.011))
    writer.observe(served("ratings", BASE_T + 3, status=503, candidate_s=0.004))
    writer.observe(served("ratings", BASE_T + 4, status=None, candidate_s=0.0, error="connect"))
    await writer.flush()
    reader = ResultsReader(engine)
    [summary] = await reader.summaries()
    c = summary.counts
    assert (c.served, c.match, c.candidate_error, c.compared, c.handled, c.total) == (100, 10, 2, 12, 112, 112)
    # The candidate histogram holds the served latencies, the compared ones and
    # the 503's; the connect failure's 0.0 is no measurement and is left out.
    assert summary.candidate_latency == LatencyHistogram.of(served_s + [0.011] * 10 + [0.004])
    assert summary.legacy_latency.total == 10
    # Candidate errors of served traffic are sampled (reason and status are
    # what an operator needs); SERVED and MATCH never are.
    samples = await reader.samples("ratings", limit=10)
    assert {(s.verdict, s.candidate_status, s.reason) for s in samples} == {
        ("candidate-error", 503, "status 503"),
        ("candidate-error", None, "connect"),
    }
    assert all(s.path == "<candidate-error>" and s.legacy_status is None for s in samples)
    assert sum(p.counts.served for p in summary.timeline) == 100


async def _columns(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("result_buckets")})


async def _roundtrip(url: str) -> None:
    """0001 with a row in it -> head (the row reads served=0, the schema
    matches the models) -> back to 0001 (the row is kept) -> head again."""
    await migrate.downgrade(migrate.RESULTS, url, "base")
    await migrate.upgrade(migrate.RESULTS, url, "results_0001")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO result_buckets (key, bucket_start, match, mismatch, candidate_error, legacy_error, "
                "skipped, legacy_latency, candidate_latency) VALUES ('old', 60, 7, 1, 0, 0, 0, '[]', '[]')"
            ))
        assert "served" not in await _columns(engine)
        await migrate.upgrade(migrate.RESULTS, url)
        [old] = await ResultsReader(engine).summaries()
        assert (old.key, old.counts.match, old.counts.served) == ("old", 7, 0)
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"version_table": VERSION_TABLE}), RESULTS_METADATA))
        assert diff == []
        writer = ResultWriter(engine, StoreSettings())
        writer.observe(served("old", 61))
        await writer.flush()
        [old] = await ResultsReader(engine).summaries()
        assert (old.counts.match, old.counts.served) == (7, 1)
        await migrate.downgrade(migrate.RESULTS, url, "results_0001")
        assert "served" not in await _columns(engine)
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT key, match FROM result_buckets"))).all()
        assert [tuple(r) for r in kept] == [("old", 7)]
        await migrate.upgrade(migrate.RESULTS, url)
        assert "served" in await _columns(engine)
    finally:
        await engine.dispose()


async def test_served_column_migrates_up_and_down_on_sqlite(tmp_path: Path) -> None:
    await _roundtrip(await migrated_sqlite(tmp_path, "served"))


@pytest.mark.postgres
async def test_served_column_migrates_up_and_down_on_postgres(pg_database: Callable[[], Awaitable[str]]) -> None:
    url = await pg_database()
    await migrate.upgrade(migrate.RESULTS, url)
    await _roundtrip(url)
