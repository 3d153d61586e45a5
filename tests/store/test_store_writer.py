"""ResultWriter end to end on real SQLite files: batching, bounded buffer,
retention by count and age, quantile merge across buckets, truncation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from strangler_proxy import migrate
from strangler_proxy.config import StoreSettings
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.store import LatencyHistogram, ResultsReader, ResultWriter
from strangler_proxy.store.models import DiffPath, ResultBucket, Sample
from tests.store.factory import BASE_T, migrated_sqlite, result


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(await migrated_sqlite(tmp_path))
    yield eng
    await eng.dispose()


def _count_commits(engine: AsyncEngine) -> list[int]:
    commits = [0]

    @event.listens_for(engine.sync_engine, "commit")
    def _on_commit(_conn) -> None:  # type: ignore[no-untyped-def]
        commits[0] += 1

    return commits


async def _scalar(engine: AsyncEngine, stmt) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one() or 0)


def test_results_are_registered_with_the_migration_registry() -> None:
    assert migrate.RESULTS in migrate.TOOLKIT_MIGRATIONS
    assert migrate.RESULTS.version_table == "alembic_version_results" and migrate.RESULTS.database == "control"


async def test_migrations_upgrade_and_downgrade(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path, "roundtrip")
    eng = make_engine(url)
    try:
        async with eng.connect() as conn:
            names = set((await conn.execute(text("select name from sqlite_master where type='table'"))).scalars())
        assert {"result_buckets", "diff_paths", "samples", "noise", "alembic_version_results"} <= names
        await migrate.downgrade(migrate.RESULTS, url, "base")
        async with eng.connect() as conn:
            names = set((await conn.execute(text("select name from sqlite_master where type='table'"))).scalars())
        assert not names & {"result_buckets", "diff_paths", "samples", "noise"}
    finally:
        await eng.dispose()


async def test_many_results_are_written_in_few_transactions(engine: AsyncEngine) -> None:
    commits = _count_commits(engine)
    writer = ResultWriter(engine, StoreSettings(batch_size=1000))
    verdicts = [Verdict.MATCH] * 7 + [Verdict.MISMATCH, Verdict.CANDIDATE_ERROR, Verdict.SKIPPED]
    for i in range(3000):
        v = verdicts[i % 10]
        diffs = (("$.rating", 1, 2),) if v is Verdict.MISMATCH else ()
        writer.observe(result("ratings", v, BASE_T + i * 0.05, diffs=diffs))  # 150 s: 3 buckets
    assert writer.pending == 3000  # observe only buffers
    assert await writer.flush() == 3000
    assert commits[0] == 1  # one transaction for the whole batch
    b = ResultBucket.__table__
    assert await _scalar(engine, select(func.count()).select_from(b)) == 3  # one row per key+bucket
    assert await _scalar(engine, select(func.sum(b.c.match))) == 2100
    assert await _scalar(engine, select(func.sum(b.c.mismatch))) == 300
    assert await _scalar(engine, select(func.sum(b.c.skipped))) == 300
    p = DiffPath.__table__
    assert await _scalar(engine, select(func.sum(p.c["count"]))) == 300
    # A second batch into the same buckets adds up rather than overwriting.
    for i in range(10):
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + i))
    await writer.flush()
    assert commits[0] == 2
    assert await _scalar(engine, select(func.sum(b.c.match))) == 2110
    assert writer.stats.written == 3010 and writer.stats.flushes == 2


async def test_background_task_flushes_on_interval_and_batch_size(engine: AsyncEngine) -> None:
    commits = _count_commits(engine)
    writer = ResultWriter(engine, StoreSettings(batch_size=100, flush_interval_s=0.1))
    await writer.start()
    try:
        for i in range(3):
            writer.observe(result("ratings", Verdict.MATCH, BASE_T + i))
        deadline = time.monotonic() + 5
        while writer.stats.written < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert writer.stats.written == 3
        for i in range(450):
            writer.observe(result("ratings", Verdict.MATCH, BASE_T + i))
        deadline = time.monotonic() + 5
        while writer.stats.written < 453 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await writer.close()
    assert writer.stats.written == 453
    assert commits[0] <= 8  # batched, not one transaction per result


async def test_full_buffer_drops_and_counts_instead_of_blocking(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(), max_buffer=100)
    started = time.perf_counter()
    for i in range(250):
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + i))
    assert time.perf_counter() - started < 0.5
    assert writer.pending == 100
    assert writer.stats.dropped == 150 and writer.stats.observed == 250
    await writer.close()  # the final flush writes what was kept
    assert await _scalar(engine, select(func.sum(ResultBucket.__table__.c.match))) == 100


async def test_samples_are_bounded_per_key_and_path_keeping_the_newest(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(samples_per_path=5, batch_size=10_000))
    s = Sample.__table__
    for flush_round in range(3):
        for i in range(20):
            at = BASE_T + flush_round * 100 + i
            writer.observe(result("ratings", Verdict.MISMATCH, at, diffs=(("$.a", 1, 2),)))
            writer.observe(result("ratings", Verdict.MISMATCH, at, diffs=(("$.b", 1, 2),)))
            writer.observe(result("credits", Verdict.CANDIDATE_ERROR, at))
            writer.observe(result("credits", Verdict.MATCH, at))  # matches are counted, not sampled
        await writer.flush()
    async with engine.connect() as conn:
        rows = (await conn.execute(select(s.c.key, s.c.path, func.count(), func.min(s.c.at)).group_by(s.c.key, s.c.path))).all()
    got = {(k, p): (n, lo) for k, p, n, lo in rows}
    newest_five = BASE_T + 200 + 15
    assert got == {
        ("ratings", "$.a"): (5, newest_five),
        ("ratings", "$.b"): (5, newest_five),
        ("credits", "<candidate-error>"): (5, newest_five),
    }
    assert writer.stats.pruned_samples == 30  # rounds 2 and 3 each pushed 5 out of 3 groups


async def test_retention_by_age(engine: AsyncEngine) -> None:
    day = 86_400.0
    writer = ResultWriter(engine, StoreSettings(retention_days=2))
    for age_days in (5, 3, 1, 0):
        at = BASE_T - age_days * day
        writer.observe(result("ratings", Verdict.MISMATCH, at, diffs=(("$.x", 1, 2),)))
    await writer.flush()
    deleted = await writer.apply_retention(now=BASE_T + 10)
    assert deleted == 2
    cutoff = BASE_T + 10 - 2 * day
    for table, column in ((Sample.__table__, "at"), (ResultBucket.__table__, "bucket_start"), (DiffPath.__table__, "bucket_start")):
        assert await _scalar(engine, select(func.count()).select_from(table)) == 2
        assert await _scalar(engine, select(func.count()).select_from(table).where(table.c[column] < cutoff)) == 0


async def test_latency_quantiles_merge_across_buckets_in_the_store(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(bucket_s=60))
    fast = [0.005 + i * 0.0001 for i in range(90)]
    slow = [0.300 + i * 0.001 for i in range(10)]
    # Fast results in one bucket, slow ones two buckets later, flushed separately.
    for s in fast:
        writer.observe(result("ratings", Verdict.MATCH, BASE_T, legacy_s=s, candidate_s=s))
    await writer.flush()
    for s in slow:
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + 125, legacy_s=0.01, candidate_s=s))
    await writer.flush()
    [summary] = await ResultsReader(engine).summaries()
    expected = LatencyHistogram.of(fast + slow)
    assert summary.candidate_latency == expected
    assert summary.candidate_latency.total == 100
    p99 = summary.candidate_latency.quantile(0.99)
    p50 = summary.candidate_latency.quantile(0.50)
    assert p99 is not None and 0.29 < p99 < 0.33  # the slow bucket shows in the merged p99
    assert p50 is not None and 0.0045 < p50 < 0.0105
    assert len(summary.timeline) == 2 and [p.counts.match for p in summary.timeline] == [90, 10]
    # each point covers whole buckets: it ends where its last 60 s bucket ends
    b0 = BASE_T // 60 * 60  # the first result's bucket
    assert [(p.start - b0, p.end - b0) for p in summary.timeline] == [(0, 60), (120, 180)]


async def test_a_timeline_point_of_one_small_bucket_ends_with_it(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(bucket_s=10))
    writer.observe(result("ratings", Verdict.MATCH, BASE_T + 3))
    await writer.flush()
    [summary] = await ResultsReader(engine, bucket_s=10).summaries()
    assert [(p.start - BASE_T, p.end - BASE_T) for p in summary.timeline] == [(0, 10)]


async def test_bodies_are_truncated_to_the_limit(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(body_limit=64))
    big = b'{"items": [' + b",".join(b'"%d"' % i for i in range(500)) + b"]}"
    writer.observe(result("ratings", Verdict.MISMATCH, diffs=(("$.items[3]", "3", "4"),), legacy_body=big, candidate_body=big))
    await writer.flush()
    [sample] = await ResultsReader(engine).samples("ratings")
    assert sample.legacy_body == big[:64] and sample.candidate_body == big[:64]


async def test_close_loses_nothing_even_mid_flush(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings(batch_size=200, flush_interval_s=0.05), max_buffer=100_000)
    await writer.start()
    for i in range(20_000):
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + i * 0.01))
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the flush task start batches while we feed
        if i == 10_000:  # half fed: wait (bounded) for the flush task's first batch, however fast the feeding
            for _ in range(200):
                if writer.stats.flushes:
                    break
                await asyncio.sleep(0.01)
    await writer.close()
    assert writer.stats.flushes >= 2
    assert writer.stats.written == 20_000
    assert await _scalar(engine, select(func.sum(ResultBucket.__table__.c.match))) == 20_000


async def test_noise_is_counted_with_its_source(engine: AsyncEngine) -> None:
    writer = ResultWriter(engine, StoreSettings())
    for i in range(3):
        writer.observe(
            result(
                "ratings",
                Verdict.MATCH,
                BASE_T + i,
                noise=("$.generated_at", "$.request_id", "$.generated_at"),
                extra={"noise_sources": ["learned", "rule", "learned"]},
            )
        )
    await writer.flush()
    [summary] = await ResultsReader(engine).summaries()
    assert {(e.path, e.count, e.source) for e in summary.noise} == {
        ("$.generated_at", 3, "learned"),
        ("$.request_id", 3, "rule"),
    }
