"""Sync: the monolith's writes reach the service in order (inserts, updates,
deletes), a worker killed mid-batch resumes without losing or repeating an
effect, id gaps are waited for, lag is measured, and the reverse stream keeps
the monolith current after cut-over."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select

from extracted_services.common import monolith_tables as mono
from extracted_services.common.registry import service_spec
from extracted_services.ratings import RatingsSettings, Rounding, create_app
from extracted_services.ratings import models as rm
from strangler_proxy.datamove.backfill import backfill, verify
from strangler_proxy.datamove.sync import Change, Stream, SyncWorker
from tests.services.helpers import answer


async def _ratings_synced(monolith_url, service_db, engines):
    spec = service_spec("ratings")
    src, dst = engines(monolith_url), engines(await service_db("ratings"))
    await backfill(spec.datamove.backfill, src, dst)
    worker = SyncWorker("ratings", spec.datamove.streams[0], src, dst, batch_size=7, poll_interval_s=0.01)
    await worker.prepare()
    return spec, src, dst, worker


async def _vote_traffic(monolith) -> int:
    """Inserts, changes and deletes on a few titles; returns outbox rows written."""
    n = 0
    for i in range(12):
        tid = f"tt{(i % 3) + 1:07d}"
        r = await monolith.post(f"/api/titles/{tid}/ratings", json={"user_id": f"u{i % 5}", "value": (i * 7) % 10 + 1})
        assert r.status in (200, 201)
        n += 2
    for tid, user in (("tt0000001", "u0"), ("tt0000002", "u1")):
        r = await monolith.delete(f"/api/titles/{tid}/ratings/{user}")
        assert r.status == 204
        n += 2
    return n


async def test_inserts_updates_and_deletes_arrive_in_order(monolith, monolith_url, service_db, engines):
    spec, src, dst, worker = await _ratings_synced(monolith_url, service_db, engines)
    before = REGISTRY.get_sample_value("strangler_sync_lag_seconds_count", {"service": "ratings", "stream": "monolith"}) or 0
    written = await _vote_traffic(monolith)
    assert await worker.drain() == written
    assert await worker.cursor() == written  # a fresh outbox: ids 1..n
    assert all(c.ok for c in await verify(spec.datamove.backfill, src, dst))
    after = REGISTRY.get_sample_value("strangler_sync_lag_seconds_count", {"service": "ratings", "stream": "monolith"})
    assert after - before == written
    assert 0 <= worker.lag_percentile(99) < 5
    assert await worker.drain() == 0  # nothing applied twice


async def test_a_worker_killed_mid_batch_resumes_without_loss_or_duplicates(monolith, monolith_url, service_db, engines):
    spec, src, dst, worker = await _ratings_synced(monolith_url, service_db, engines)
    written = await _vote_traffic(monolith)
    stream = spec.datamove.streams[0]
    applied_now = 0
    gate = asyncio.Event()

    async def slow_vote(conn, change: Change) -> None:
        nonlocal applied_now
        await stream.appliers["vote"](conn, change)
        applied_now += 1
        if applied_now == 10:  # in the middle of the second batch of 7
            gate.set()
            await asyncio.sleep(30)

    dying = SyncWorker("ratings", Stream(stream.name, stream.outbox, stream.state,
                                         {**stream.appliers, "vote": slow_vote}), src, dst, batch_size=7)
    task = asyncio.create_task(dying.run())
    await asyncio.wait_for(gate.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cursor = await worker.cursor()
    assert cursor % 7 == 0 and 0 < cursor < written  # only whole batches committed
    assert await worker.drain() == written - cursor
    async with dst.connect() as conn:
        state = (await conn.execute(select(rm.sync_state))).one()
    assert state.last_id == written and state.applied == written  # each change applied exactly once
    assert all(c.ok for c in await verify(spec.datamove.backfill, src, dst))


async def test_a_gap_in_outbox_ids_is_waited_for_then_skipped(monolith_url, service_db, engines):
    spec, src, dst, worker = await _ratings_synced(monolith_url, service_db, engines)
    worker.gap_grace_s = 0.3
    rows = [
        {"id": i, "entity": "rating", "entity_id": "tt0000001", "op": "upsert",
         "payload": f'{{"title_id":"tt0000001","average_rating":{i}.0,"num_votes":{i}}}',
         "created_at": mono.outbox.c.created_at.type.python_type.now()}
        for i in (1, 2, 4)
    ]
    async with src.begin() as conn:
        await conn.execute(insert(mono.outbox), rows)
    assert await worker.run_once() == 2  # 3 may still be committing
    assert await worker.run_once() == 0
    await asyncio.sleep(0.35)
    assert await worker.run_once() == 1
    async with dst.connect() as conn:
        assert (await conn.execute(select(rm.ratings.c.num_votes).where(rm.ratings.c.title_id == "tt0000001"))).scalar() == 4


async def test_credits_follows_vote_counts_for_known_for(monolith, monolith_url, service_db, engines, serve):
    spec = service_spec("credits")
    src, dst = engines(monolith_url), engines(await service_db("credits"))
    await backfill(spec.datamove.backfill, src, dst)
    worker = SyncWorker("credits", spec.datamove.streams[0], src, dst)
    # Push one of nm0000001's least-voted titles to the top.
    _, before = await answer(monolith, "GET", "/api/people/nm0000001/known-for")
    async with src.connect() as conn:
        titles = (await conn.execute(select(mono.credits.c.title_id).where(mono.credits.c.person_id == "nm0000001"))).scalars().all()
    assert len(set(titles)) > 4
    loser = sorted(set(titles) - {t["id"] for t in before["titles"]})[0]
    for u in range(70):
        assert (await monolith.post(f"/api/titles/{loser}/ratings", json={"user_id": f"fan{u}", "value": 9})).status == 201
    assert await worker.drain() == 140
    service = await serve(spec.create_app(str(dst.url)))
    legacy = await answer(monolith, "GET", "/api/people/nm0000001/known-for")
    assert legacy[1]["titles"][0]["id"] == loser
    assert await answer(service, "GET", "/api/people/nm0000001/known-for") == legacy
    assert all(c.ok for c in await verify(spec.datamove.backfill, src, dst))


async def test_credits_follows_votes_cast_in_the_ratings_service_after_cut_over(
    monolith, monolith_url, service_db, engines, serve
):
    """After the write routes are extracted, votes happen in the ratings service;
    credits' "known for" follows them through the ratings outbox."""
    credits_spec, ratings_spec = service_spec("credits"), service_spec("ratings")
    mono_db = engines(monolith_url)
    ratings_url = await service_db("ratings")
    ratings_db, credits_db = engines(ratings_url), engines(await service_db("credits"))
    await backfill(ratings_spec.datamove.backfill, mono_db, ratings_db)
    await backfill(credits_spec.datamove.backfill, mono_db, credits_db)
    ratings = await serve(create_app(RatingsSettings(ratings_url, Rounding.LEGACY)))
    credits = await serve(credits_spec.create_app(str(credits_db.url)))
    _, before = await answer(credits, "GET", "/api/people/nm0000001/known-for")
    async with mono_db.connect() as conn:
        titles = (await conn.execute(select(mono.credits.c.title_id).where(mono.credits.c.person_id == "nm0000001"))).scalars().all()
    loser = sorted(set(titles) - {t["id"] for t in before["titles"]})[0]
    for u in range(70):
        assert (await ratings.post(f"/api/titles/{loser}/ratings", json={"user_id": f"fan{u}", "value": 9})).status == 201

    stream = credits_spec.datamove.stream(reverse=False, source="ratings")
    assert stream is not None and stream.source == "ratings"
    follower = SyncWorker("credits", stream, ratings_db, credits_db)
    await follower.prepare()
    assert await follower.drain() == 140  # 70 votes, each a vote and a rating event
    _, after = await answer(credits, "GET", "/api/people/nm0000001/known-for")
    assert after["titles"][0]["id"] == loser


async def test_reverse_sync_keeps_the_monolith_current(monolith, monolith_url, service_db, engines, serve):
    spec = service_spec("ratings")
    src, url = engines(monolith_url), await service_db("ratings")
    dst = engines(url)
    await backfill(spec.datamove.backfill, src, dst)
    service = await serve(create_app(RatingsSettings(url, Rounding.LEGACY)))
    for i in range(6):
        r = await service.post("/api/titles/tt0000004/ratings", json={"user_id": f"r{i % 4}", "value": i + 3})
        assert r.status in (200, 201)
    assert (await service.delete("/api/titles/tt0000004/ratings/r1")).status == 204
    reverse = SyncWorker("ratings", spec.datamove.reverse, dst, src)
    await reverse.prepare()
    assert await reverse.drain() == 14
    assert all(c.ok for c in await verify(spec.datamove.backfill, src, dst))
    assert await answer(monolith, "GET", "/api/titles/tt0000004/ratings") == await answer(
        service, "GET", "/api/titles/tt0000004/ratings"
    )
    async with src.connect() as conn:  # the cursor lives next to the rows it moved
        assert (await conn.execute(select(func.max(mono.reverse_sync_state.c.last_id)))).scalar() == 14
