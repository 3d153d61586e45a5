"""A client's ``X-Strangler-Dry-Run`` never decides what a service stores.

Through the real proxy to the real ratings service (and the real monolith), on
SQLite files: the proxy drops the client's control headers, so an extracted
write is stored although the client asked for a dry run, and a mirrored write
stays a dry run although the client asked it to commit. The service itself
accepts a dry run only as the proxy sends it and refuses anything else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from extracted_services.common.dryrun import DRY_RUN_HEADER
from extracted_services.common.registry import service_spec
from extracted_services.ratings import RatingsSettings, Rounding, create_app
from extracted_services.ratings import models as rm
from legacy_monolith import models as mm
from strangler_proxy.config import load_config_text
from strangler_proxy.datamove.backfill import backfill
from strangler_proxy.dataplane.handler import start_proxy
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import ShadowDispatcher
from strangler_proxy.diff.comparator import DiffComparator
from tests.dataplane.conftest import Collector
from tests.services.conftest import ServeFn

TITLE = "tt0000005"
VOTES = f"/api/titles/{TITLE}/ratings"


@dataclass
class Stack:
    proxy: str
    monolith: AsyncEngine
    ratings: AsyncEngine
    ratings_client: TestClient
    shadow: ShadowDispatcher
    results: Collector


async def count(engine: AsyncEngine, table: object, **where: str) -> int:
    query = select(func.count()).select_from(table)  # type: ignore[arg-type]
    for column, value in where.items():
        query = query.where(table.c[column] == value)  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def service_rows(engine: AsyncEngine) -> tuple[int, int]:
    """(votes, outbox entries) in the ratings service's database."""
    return await count(engine, rm.votes), await count(engine, rm.outbox)


MakeStack = Callable[[str], Awaitable[Stack]]


@pytest.fixture
async def make_stack(
    monolith_url: str, monolith: TestClient, service_db: Callable[[str], Awaitable[str]],
    engines: Callable[[str], AsyncEngine], serve: ServeFn,
) -> AsyncIterator[MakeStack]:
    """``await make_stack(route_yaml)``: monolith, ratings service and the proxy in front."""
    started: list[tuple[object, ShadowDispatcher]] = []

    async def make(route: str) -> Stack:
        url = await service_db("ratings")
        ratings = engines(url)
        await backfill(service_spec("ratings").datamove.backfill, engines(monolith_url), ratings)
        service = await serve(create_app(RatingsSettings(url, Rounding.LEGACY)))
        config = load_config_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{monolith.port}", timeout_s: 5}}
  ratings: {{url: "http://127.0.0.1:{service.port}", timeout_s: 5}}
routes:
  - {{name: ratings-vote, path: "/api/titles/{{id}}/ratings", methods: [POST], target: ratings, {route}}}
""")
        runtime = ProxyRuntime(config)
        results = Collector()
        dispatcher = ShadowDispatcher(config.shadow, DiffComparator(), [results], runtime)
        await dispatcher.start()
        runner, port = await start_proxy(runtime, dispatcher, "127.0.0.1", 0)
        started.append((runner, dispatcher))
        return Stack(f"http://127.0.0.1:{port}", engines(monolith_url), ratings, service, dispatcher, results)

    yield make
    for runner, dispatcher in started:
        await runner.cleanup()  # type: ignore[attr-defined]
        await dispatcher.stop()


@pytest.mark.parametrize("value", ["1", "true", "yes", "on"])
async def test_an_extracted_write_is_stored_whatever_dry_run_header_the_client_sends(
    make_stack: MakeStack, value: str,
) -> None:
    stack = await make_stack("mode: extracted")
    before = await service_rows(stack.ratings)
    async with aiohttp.ClientSession() as session, session.post(
        stack.proxy + VOTES, json={"user_id": "client-dry", "value": 7}, headers={DRY_RUN_HEADER: value},
    ) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        assert DRY_RUN_HEADER not in resp.headers  # the service did not roll it back
    assert body["title_id"] == TITLE and body["num_votes"] >= 1
    # the vote is stored, with the outbox entries (the vote, the title's aggregate)
    # the reverse sync carries to the monolith
    assert await service_rows(stack.ratings) == (before[0] + 1, before[1] + 2)
    assert await count(stack.ratings, rm.votes, user_id="client-dry") == 1


async def test_a_mirrored_write_stays_a_dry_run_when_the_client_asks_to_commit(make_stack: MakeStack) -> None:
    stack = await make_stack('mode: shadow, shadow_writes: "dry-run"')
    before = await service_rows(stack.ratings)
    in_monolith = await count(stack.monolith, mm.votes, user_id="client-commit")
    async with aiohttp.ClientSession() as session, session.post(
        stack.proxy + VOTES, json={"user_id": "client-commit", "value": 6}, headers={DRY_RUN_HEADER: "0"},
    ) as resp:
        assert resp.status == 201, await resp.text()  # the monolith serves and stores it
    await stack.shadow.drain()
    [result] = stack.results.results
    # the candidate ran the mirror as a proper dry run (not refused, not committed)
    assert result.candidate_status == 201 and result.legacy_status == 201
    assert await service_rows(stack.ratings) == before
    assert await count(stack.ratings, rm.votes, user_id="client-commit") == 0
    assert await count(stack.monolith, mm.votes, user_id="client-commit") == in_monolith + 1


# What the service refuses: only exactly one "X-Strangler-Dry-Run: 1" is a dry run.
REFUSED = [
    [(DRY_RUN_HEADER, "true")],
    [(DRY_RUN_HEADER, "0")],
    [(DRY_RUN_HEADER, "yes")],
    [(DRY_RUN_HEADER, "on")],
    [(DRY_RUN_HEADER, "")],
    [(DRY_RUN_HEADER, "1"), (DRY_RUN_HEADER, "1")],
    [(DRY_RUN_HEADER, "0"), (DRY_RUN_HEADER, "1")],
    [(DRY_RUN_HEADER, "1, 0")],
]


@pytest.mark.parametrize("headers", REFUSED, ids=lambda h: "+".join(v or "empty" for _, v in h))
async def test_the_service_refuses_any_other_dry_run_header_and_stores_nothing(
    make_stack: MakeStack, headers: list[tuple[str, str]],
) -> None:
    stack = await make_stack("mode: extracted")
    service = stack.ratings_client
    assert (await service.post(VOTES, json={"user_id": "kept", "value": 5})).status == 201
    before = await service_rows(stack.ratings)
    for method, path, kw in (
        ("POST", VOTES, {"json": {"user_id": "refused", "value": 4}}),
        ("POST", VOTES, {"json": {"user_id": "kept", "value": 9}}),  # an update
        ("DELETE", f"{VOTES}/kept", {}),
    ):
        resp = await service.request(method, path, headers=CIMultiDict(headers), **kw)
        assert resp.status == 400, (method, path, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == "bad_request" and DRY_RUN_HEADER in error["message"]
        assert DRY_RUN_HEADER not in resp.headers
    assert await service_rows(stack.ratings) == before
    assert await count(stack.ratings, rm.votes, user_id="refused") == 0
    async with stack.ratings.connect() as conn:
        value = (await conn.execute(select(rm.votes.c.value).where(rm.votes.c.user_id == "kept"))).scalar_one()
    assert value == 5
