"""Rollouts between replicas on one PostgreSQL: the lease, versioned writes, one active rollout
per route, the migration up and down -- and a driving replica that dies mid-rollout, whose
rollout another replica finishes with no step repeated."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from strangler_proxy import migrate
from strangler_proxy.config import Mode
from strangler_proxy.control.rollout_store import RolloutConflict, RolloutStore
from strangler_proxy.control.rollouts import EventDraft, RolloutError, RolloutSpec, State, parse_target
from strangler_proxy.control.state_store import StateStore
from strangler_proxy.databases import make_engine
from strangler_proxy.routing.router import RouteState
from strangler_proxy.server import ProxyServer

from .test_rollout_server import DEADLINE_S, admin, audit_rows, rollout_config, start_body, traffic, wait_for_state

pytestmark = pytest.mark.postgres

SPEC = RolloutSpec("ratings", parse_target("extracted"), (("c1",), ("c2", "c3")), (), 1.0, 60.0, None, "rollback")
SHADOW = RouteState(Mode.SHADOW, 0.0)


async def test_the_lease_versions_and_one_active_rollout_per_route(pg_database) -> None:
    state = StateStore(await pg_database())
    await state.upgrade()
    store = RolloutStore(state)
    try:
        r = await store.create(SPEC, who="ops", global_before=SHADOW)
        with pytest.raises(RolloutError, match=f"rollout #{r.id} is still active"):
            await store.create(SPEC, who="ops", global_before=SHADOW)

        # One holder at a time; the other gets it once the lease expired, and is told from whom.
        assert await store.acquire(r.id, "a", now=100.0, lease_s=5) == (True, None)
        assert await store.acquire(r.id, "b", now=104.0, lease_s=5) == (False, None)
        assert await store.acquire(r.id, "a", now=104.0, lease_s=5) == (True, None)  # renewed to 109
        assert await store.acquire(r.id, "b", now=108.0, lease_s=5) == (False, None)
        assert await store.acquire(r.id, "b", now=110.0, lease_s=5) == (True, "a")
        await store.release(r.id, "a")  # not a's any more: nothing happens
        assert (await store.get(r.id)).lease_holder == "b"  # type: ignore[union-attr]

        # A write needs the version it read -- and, for a driver, the lease.
        r = await store.get(r.id)  # type: ignore[assignment]
        assert r is not None
        with pytest.raises(RolloutConflict, match="lease"):
            await store.save(r, who="a", holder="a", now=111.0, step=1)
        moved = await store.save(r, who="b", holder="b", now=111.0, step=1,
                                 events=[EventDraft("step-applied", "c1: extracted", step=0)])
        assert (moved.step, moved.version) == (1, r.version + 1)
        with pytest.raises(RolloutConflict, match="changed meanwhile"):
            await store.save(r, who="ops", state=State.PAUSED)  # based on the stale read

        # Finished: the route is free again, and nobody holds the lease.
        done = await store.save(moved, who="b", state=State.COMPLETED, message="completed")
        assert (done.active, done.lease_holder) == (False, None)
        assert await store.acquire(r.id, "a", now=200.0, lease_s=5) == (False, None)
        again = await store.create(SPEC, who="ops", global_before=SHADOW)
        assert [x.id for x in await store.listing(active_only=True)] == [again.id]
        assert [e.kind for e in await store.events(r.id)] == ["started", "step-applied"]
    finally:
        await state.close()


async def test_the_rollout_migration_goes_down_and_up_on_postgresql(pg_database) -> None:
    url = await pg_database()
    await migrate.upgrade(migrate.CONTROL, url)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            assert {"rollout", "rollout_event"} <= await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        await migrate.downgrade(migrate.CONTROL, url, "control_0002")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert not {"rollout", "rollout_event"} & tables and "route_state" in tables
        await migrate.upgrade(migrate.CONTROL, url)
    finally:
        await engine.dispose()


async def test_killing_the_driving_replica_hands_the_rollout_to_the_other(
        tmp_path: Path, catch_all, pg_database, monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_rollout_server import cell_upstreams

    url = await pg_database()
    path = tmp_path / "strangler.yaml"
    path.write_text(rollout_config(await cell_upstreams(catch_all)))
    a = ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False)
    b = ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False)
    await a.start()
    await b.start()
    servers = {a.rollouts.holder: a, b.rollouts.holder: b}
    stop = asyncio.Event()
    load: asyncio.Task[int] | None = None
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await admin(client, a, "POST", "/rollouts", json=start_body())
            assert r.status_code == 201, r.text
            rollout_id = r.json()["id"]
            started = time.monotonic()
            while (holder := (await a.rollouts.get(rollout_id)).lease_holder) is None:  # type: ignore[union-attr]
                assert time.monotonic() - started < 5
                await asyncio.sleep(0.02)
            dying = servers[holder]
            survivor = b if dying is a else a
            load = asyncio.create_task(traffic(lambda: survivor.url, stop))
            # Let it get half-way (wave 1 done, wave 2 not yet passed), then the holder dies without a
            # word: its lease is not released, it must expire.
            while (await survivor.rollouts.get(rollout_id)).step < 2:  # type: ignore[union-attr]
                assert time.monotonic() - started < DEADLINE_S
                await asyncio.sleep(0.02)

            async def no_release(rollout_id: int, holder: str) -> None:
                return None

            monkeypatch.setattr(dying.rollouts.store, "release", no_release)
            died = time.monotonic()
            await dying.stop()
            body = await wait_for_state(client, survivor, rollout_id, {"completed", "rolled_back", "paused"})
            assert body["state"] == "completed", body["message"]
    finally:
        stop.set()
        if load is not None:
            await load
    try:
        history = await survivor.rollouts.events(rollout_id)
        takeover = next(e for e in history if e.kind == "lease" and "took over from" in e.message)
        assert takeover.who == survivor.rollouts.holder and dying.rollouts.holder in takeover.message
        assert takeover.at.timestamp() - (time.time() - (time.monotonic() - died)) < 5.0  # within a few seconds
        # No step applied (or passed) twice, none skipped; the audit has each flip once.
        assert [e.step for e in history if e.kind == "step-applied"] == [0, 1, 2, 3]
        assert [e.step for e in history if e.kind == "gate-passed"] == [0, 1, 2, 3]
        rows = audit_rows(await survivor.flips.audit(limit=100), f"rollout:{rollout_id}")
        assert len(rows) == len(set(rows))
        assert rows[:6] == [
            ("ratings@c1", "rollout", "shadow", "canary 50%"), ("ratings@c1", "rollout", "canary 50%", "extracted"),
            ("ratings@c2", "rollout", "shadow", "canary 50%"), ("ratings@c3", "rollout", "shadow", "canary 50%"),
            ("ratings@c2", "rollout", "canary 50%", "extracted"), ("ratings@c3", "rollout", "canary 50%", "extracted"),
        ]
        assert survivor.runtime.table.get("ratings").mode is Mode.EXTRACTED
        print("takeover after (s):", round(takeover.at.timestamp() - (time.time() - (time.monotonic() - died)), 2))
    finally:
        await survivor.stop()
