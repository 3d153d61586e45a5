"""Backfill: counts and checksums equal, a second run changes nothing, a run
killed between batches resumes where it stopped, and rows the monolith lost
are pruned."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update

from extracted_services.common import monolith_tables as mono
from extracted_services.common.registry import service_spec
from extracted_services.ratings import models as ratings_models
from strangler_proxy.datamove.backfill import backfill, copy_table, count_remaining, verify


class Killed(Exception):
    """Stands for the process dying right after a batch committed."""


@pytest.mark.parametrize("name", ["ratings", "credits", "images"])
async def test_backfill_copies_every_table_exactly(name, monolith_url, service_db, engines):
    spec = service_spec(name)
    src, dst = engines(monolith_url), engines(await service_db(name))
    reports = await backfill(spec.datamove.backfill, src, dst, batch_size=37)
    assert all(r.rows > 0 for r in reports)
    checks = await verify(spec.datamove.backfill, src, dst)
    assert [c.table for c in checks] == [t.name for t in spec.datamove.backfill.tables]
    assert all(c.ok and c.source_count > 0 for c in checks), checks


async def test_second_run_gives_the_same_result(monolith_url, service_db, engines):
    spec = service_spec("ratings")
    src, dst = engines(monolith_url), engines(await service_db("ratings"))
    await backfill(spec.datamove.backfill, src, dst, batch_size=50)
    first = await verify(spec.datamove.backfill, src, dst)
    again = await backfill(spec.datamove.backfill, src, dst, batch_size=50)
    assert [r.resumed for r in again] == [False] * 3  # a finished run starts over...
    assert await verify(spec.datamove.backfill, src, dst) == first  # ...and lands on the same data
    assert all(c.ok for c in first)


async def test_verify_notices_a_changed_row(monolith_url, service_db, engines):
    spec = service_spec("ratings")
    src, dst = engines(monolith_url), engines(await service_db("ratings"))
    await backfill(spec.datamove.backfill, src, dst)
    async with dst.begin() as conn:
        votes = ratings_models.votes
        await conn.execute(update(votes).where(votes.c.id == 3).values(value=votes.c.value % 10 + 1))
    bad = {c.table: c for c in await verify(spec.datamove.backfill, src, dst)}
    assert not bad["votes"].ok and bad["votes"].source_count == bad["votes"].target_count
    assert bad["ratings"].ok


async def test_a_killed_run_resumes_after_the_last_committed_batch(monolith_url, service_db, engines):
    spec = service_spec("ratings")
    votes_copy = spec.datamove.backfill.tables[2]
    src, dst = engines(monolith_url), engines(await service_db("ratings"))
    total = (await count_remaining(spec.datamove.backfill, src, dst))["votes"]
    batches = 0

    def die_after_three(_table: str, _n: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise Killed

    with pytest.raises(Killed):
        await copy_table(votes_copy, spec.datamove.backfill.state, src, dst, batch_size=40, progress=die_after_three)
    async with dst.connect() as conn:
        state = (await conn.execute(select(spec.datamove.backfill.state).where(spec.datamove.backfill.state.c.table_name == "votes"))).one()
        copied = (await conn.execute(select(func.count()).select_from(ratings_models.votes))).scalar_one()
    assert state.finished_at is None and state.rows_copied == 120 and copied == 120
    assert (await count_remaining(spec.datamove.backfill, src, dst))["votes"] == total - 120

    report = await copy_table(votes_copy, spec.datamove.backfill.state, src, dst, batch_size=40)
    assert report.resumed and report.rows == total - 120
    checks = {c.table: c for c in await verify(spec.datamove.backfill, src, dst)}
    assert checks["votes"].ok and checks["votes"].target_count == total


async def test_rows_gone_from_the_monolith_are_pruned(monolith_url, service_db, engines):
    spec = service_spec("images")
    src, dst = engines(monolith_url), engines(await service_db("images"))
    await backfill(spec.datamove.backfill, src, dst)
    async with src.begin() as conn:
        gone = (await conn.execute(select(mono.images.c.id).order_by(mono.images.c.id).limit(2))).scalars().all()
        await conn.execute(delete(mono.images).where(mono.images.c.id.in_(gone)))
    reports = {r.table: r for r in await backfill(spec.datamove.backfill, src, dst)}
    assert reports["images"].deleted == 2
    assert all(c.ok for c in await verify(spec.datamove.backfill, src, dst))
