"""The same data movement on the real PostgreSQL: PostgreSQL -> PostgreSQL
(the driver-level fast path), SQLite -> PostgreSQL (typed path), sync and the
service's own write path."""

from __future__ import annotations

import pytest

from extracted_services.common.migrations import service_migrations
from extracted_services.common.registry import service_spec
from extracted_services.ratings import RatingsSettings, Rounding, create_app
from legacy_monolith.app import create_app as create_monolith
from legacy_monolith.migrations import MIGRATIONS as MONOLITH_MIGRATIONS
from legacy_monolith.seed import SeedPlan, load
from strangler_proxy.datamove.backfill import backfill, verify
from strangler_proxy.datamove.sync import SyncWorker
from strangler_proxy.migrate import upgrade
from tests.services.helpers import answer

pytestmark = pytest.mark.postgres


async def test_backfill_sync_and_votes_on_postgres(pg_database, monolith_url, engines, serve):
    mono_pg, ratings_pg, credits_pg = await pg_database(), await pg_database(), await pg_database()
    await upgrade(MONOLITH_MIGRATIONS, mono_pg)
    async with engines(mono_pg).begin() as conn:
        await load(conn, SeedPlan(titles=40, seed=7))
    for name, url in (("ratings", ratings_pg), ("credits", credits_pg)):
        await upgrade(service_migrations(name), url)

    ratings = service_spec("ratings")
    src, dst = engines(mono_pg), engines(ratings_pg)
    await backfill(ratings.datamove.backfill, src, dst, batch_size=64)
    assert all(c.ok for c in await verify(ratings.datamove.backfill, src, dst))

    # SQLite monolith -> PostgreSQL service goes through the typed path.
    credits = service_spec("credits")
    await backfill(credits.datamove.backfill, engines(monolith_url), engines(credits_pg))
    assert all(c.ok for c in await verify(credits.datamove.backfill, engines(monolith_url), engines(credits_pg)))

    monolith = await serve(create_monolith(mono_pg))
    for i in range(8):
        r = await monolith.post(f"/api/titles/tt{i % 2 + 1:07d}/ratings", json={"user_id": f"p{i % 3}", "value": i + 1})
        assert r.status in (200, 201)
    assert (await monolith.delete("/api/titles/tt0000001/ratings/p0")).status == 204
    worker = SyncWorker("ratings", ratings.datamove.streams[0], src, dst)
    assert await worker.drain() == 18
    assert all(c.ok for c in await verify(ratings.datamove.backfill, src, dst))

    service = await serve(create_app(RatingsSettings(ratings_pg, Rounding.LEGACY)))
    for tid in ("tt0000001", "tt0000002", "tt0000003"):
        assert await answer(service, "GET", f"/api/titles/{tid}/ratings") == await answer(
            monolith, "GET", f"/api/titles/{tid}/ratings"
        )
    body = {"user_id": "pg", "value": 6}
    dry = await answer(service, "POST", "/api/titles/tt0000003/ratings", json=body, headers={"X-Strangler-Dry-Run": "1"})
    assert await answer(service, "POST", "/api/titles/tt0000003/ratings", json=body) == dry
    reverse = SyncWorker("ratings", ratings.datamove.reverse, dst, src)
    await reverse.prepare()
    assert await reverse.drain() == 2
    assert all(c.ok for c in await verify(ratings.datamove.backfill, src, dst))
