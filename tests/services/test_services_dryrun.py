"""X-Strangler-Dry-Run: 1 -- the service answers what the write would have
answered, and nothing persists: no vote, no aggregate change, no outbox row."""

from __future__ import annotations

from sqlalchemy import func, select

from extracted_services.common.dryrun import DRY_RUN_ECHO, DRY_RUN_HEADER
from extracted_services.common.registry import service_spec
from extracted_services.ratings import RatingsSettings, Rounding, create_app
from extracted_services.ratings import models as rm
from strangler_proxy.datamove.backfill import backfill
from tests.services.helpers import answer

DRY = {DRY_RUN_HEADER: "1"}


async def _snapshot(engine) -> tuple[object, ...]:
    async with engine.connect() as conn:
        counts = [
            (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (rm.votes, rm.ratings, rm.outbox)
        ]
        rows = (await conn.execute(select(rm.votes).order_by(rm.votes.c.id))).all()
        aggs = (await conn.execute(select(rm.ratings).order_by(rm.ratings.c.title_id))).all()
    return tuple(counts), tuple(rows), tuple(aggs)


async def test_dry_run_answers_like_the_write_and_keeps_nothing(monolith_url, service_db, engines, serve):
    url = await service_db("ratings")
    engine = engines(url)
    await backfill(service_spec("ratings").datamove.backfill, engines(monolith_url), engine)
    service = await serve(create_app(RatingsSettings(url, Rounding.LEGACY)))
    before = await _snapshot(engine)

    requests = [
        ("POST", "/api/titles/tt0000005/ratings", {"json": {"user_id": "new-user", "value": 4}}),  # insert
        ("POST", "/api/titles/tt0000005/ratings", {"json": {"user_id": "new-user", "value": 4}}),  # insert again: still new
        ("DELETE", "/api/titles/tt0000001/ratings/nobody", {}),  # 404 either way
    ]
    dry_answers = []
    for method, path, kw in requests:
        resp = await service.request(method, path, headers=DRY, **kw)
        if resp.status < 400:
            assert resp.headers[DRY_RUN_HEADER] == DRY_RUN_ECHO
        dry_answers.append(await answer(service, method, path, headers=DRY, **kw))
    assert dry_answers[0][0] == dry_answers[1][0] == 201
    assert await _snapshot(engine) == before  # nothing persisted

    # The real writes answer exactly what the dry runs said.
    assert await answer(service, *requests[0][:2], **requests[0][2]) == dry_answers[0]
    assert await answer(service, *requests[2][:2], **requests[2][2]) == dry_answers[2]
    after_write = await _snapshot(engine)
    assert after_write[0] == (before[0][0] + 1, before[0][1] + (0 if dry_answers[0][1]["num_votes"] > 1 else 1), before[0][2] + 2)

    # A dry-run retraction of a real vote: 204, and the vote is still there.
    assert (await service.delete("/api/titles/tt0000005/ratings/new-user", headers=DRY)).status == 204
    assert await _snapshot(engine) == after_write


async def test_without_the_header_writes_persist(monolith_url, service_db, engines, serve):
    url = await service_db("ratings")
    engine = engines(url)
    await backfill(service_spec("ratings").datamove.backfill, engines(monolith_url), engine)
    service = await serve(create_app(RatingsSettings(url, Rounding.LEGACY)))
    resp = await service.post("/api/titles/tt0000005/ratings", json={"user_id": "x", "value": 4})
    assert resp.status == 201 and DRY_RUN_HEADER not in resp.headers
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(rm.votes).where(rm.votes.c.user_id == "x"))).scalar_one() == 1
