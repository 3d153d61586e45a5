"""Voting: create, change, retract; the aggregate and the outbox move with it,
in one transaction, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import aiohttp
import pytest

from legacy_monolith.app import create_app
from legacy_monolith.seed import SeedPlan, seed_database
from strangler_proxy.stack.runners import Site
from tests.monolith.conftest import Live
from tests.monolith.helpers import query, scalar

CONCURRENT_VOTERS = 24


@pytest.fixture
async def pg_live(pg_database: Callable[[], Awaitable[str]]) -> AsyncIterator[Live]:
    """The monolith over a fresh, seeded PostgreSQL database."""
    url = await pg_database()
    await seed_database(url, SeedPlan(titles=40, seed=5))
    server = Site(create_app(url), "127.0.0.1", 0)
    base = await server.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        yield Live(base, http, url)
    await server.stop()


async def _title_without_votes(url: str) -> str:
    return await scalar(url, "SELECT id FROM titles WHERE id NOT IN (SELECT title_id FROM ratings) ORDER BY id LIMIT 1")


async def _vote(live: Live, title_id: str, user: str, value: int) -> tuple[int, dict]:
    async with live.http.post(live.url(f"/api/titles/{title_id}/ratings"), json={"user_id": user, "value": value}) as r:
        return r.status, await r.json()


async def _outbox(url: str) -> list[tuple]:
    return await query(url, "SELECT id, entity, entity_id, op, payload FROM outbox ORDER BY id")


async def check_vote_change_and_retract(any_live: Live) -> None:
    live, url = any_live, any_live.database_url
    title = await _title_without_votes(url)

    status, body = await _vote(live, title, "alice", 7)
    assert status == 201
    assert (body["title_id"], body["average_rating"], body["num_votes"]) == (title, 7.0, 1)
    status, body = await _vote(live, title, "bob", 4)
    assert status == 201 and body["num_votes"] == 2 and body["average_rating"] == 5.5

    status, body = await _vote(live, title, "alice", 10)  # a second vote replaces the first
    assert status == 200 and body["num_votes"] == 2 and body["average_rating"] == 7.0
    assert await query(url, "SELECT user_id, value FROM votes WHERE title_id = :t ORDER BY user_id", t=title) == [
        ("alice", 10),
        ("bob", 4),
    ]
    async with live.http.get(live.url(f"/api/titles/{title}/ratings")) as r:
        assert (await r.json())["average_rating"] == 7.0

    async with live.http.delete(live.url(f"/api/titles/{title}/ratings/alice")) as r:
        assert r.status == 204
    async with live.http.get(live.url(f"/api/titles/{title}/ratings")) as r:
        got = await r.json()
        assert (got["num_votes"], got["average_rating"]) == (1, 4.0)
    async with live.http.delete(live.url(f"/api/titles/{title}/ratings/bob")) as r:
        assert r.status == 204
    async with live.http.get(live.url(f"/api/titles/{title}/ratings")) as r:
        got = await r.json()
        assert (got["num_votes"], got["average_rating"]) == (0, None)
    assert await query(url, "SELECT * FROM ratings WHERE title_id = :t", t=title) == []

    events = [(e, eid, op) for _, e, eid, op, _ in await _outbox(url)]
    assert events == [
        ("vote", f"{title}:alice", "upsert"),
        ("rating", title, "upsert"),
        ("vote", f"{title}:bob", "upsert"),
        ("rating", title, "upsert"),
        ("vote", f"{title}:alice", "upsert"),
        ("rating", title, "upsert"),
        ("vote", f"{title}:alice", "delete"),
        ("rating", title, "upsert"),
        ("vote", f"{title}:bob", "delete"),
        ("rating", title, "delete"),
    ]


async def check_outbox_payloads(any_live: Live) -> None:
    live, url = any_live, any_live.database_url
    title = await _title_without_votes(url)
    await _vote(live, title, "carol", 9)
    await _vote(live, title, "dave", 2)
    rows = await _outbox(url)
    vote_payload = json.loads(rows[2][4])
    (vote_id, created_at), = await query(url, "SELECT id, created_at FROM votes WHERE user_id = 'dave'")
    assert vote_payload["id"] == vote_id and vote_payload["user_id"] == "dave" and vote_payload["value"] == 2
    assert datetime.fromisoformat(vote_payload["created_at"]).replace(tzinfo=None) == (
        created_at if isinstance(created_at, datetime) else datetime.fromisoformat(created_at)
    )
    assert json.loads(rows[3][4]) == {"title_id": title, "average_rating": 5.5, "num_votes": 2}
    async with live.http.delete(live.url(f"/api/titles/{title}/ratings/dave")) as r:
        assert r.status == 204
    assert (await _outbox(url))[-2][4] is None  # delete events carry no payload
    ids = [r[0] for r in await _outbox(url)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def check_concurrent_votes(any_live: Live) -> None:
    live, url = any_live, any_live.database_url
    title = await scalar(url, "SELECT title_id FROM ratings ORDER BY title_id LIMIT 1")
    before = await scalar(url, "SELECT num_votes FROM ratings WHERE title_id = :t", t=title)
    results = await asyncio.wait_for(
        asyncio.gather(*(_vote(live, title, f"crowd{i}", 1 + i % 10) for i in range(CONCURRENT_VOTERS))),
        timeout=30,
    )
    assert [s for s, _ in results] == [201] * CONCURRENT_VOTERS
    (count, total), = await query(url, "SELECT count(*), sum(value) FROM votes WHERE title_id = :t", t=title)
    (avg, num), = await query(url, "SELECT average_rating, num_votes FROM ratings WHERE title_id = :t", t=title)
    assert num == count == before + CONCURRENT_VOTERS
    assert avg == total / count
    outbox_ratings = await query(url, "SELECT payload FROM outbox WHERE entity = 'rating' ORDER BY id")
    # In id order, every rating event has one more vote than the one before.
    assert [json.loads(p)["num_votes"] for p, in outbox_ratings] == list(range(before + 1, count + 1))


CHECKS = [check_vote_change_and_retract, check_outbox_payloads, check_concurrent_votes]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_sqlite(live: Live, check: Callable[[Live], Awaitable[None]]) -> None:
    await check(live)


@pytest.mark.postgres
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_postgres(pg_live: Live, check: Callable[[Live], Awaitable[None]]) -> None:
    await check(pg_live)
