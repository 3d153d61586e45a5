"""Fixtures of the extracted-services tests: a seeded monolith database, the
services' own databases, and real servers on loopback port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from extracted_services.common.migrations import service_migrations
from legacy_monolith.app import create_app as create_monolith
from legacy_monolith.migrations import MIGRATIONS as MONOLITH_MIGRATIONS
from legacy_monolith.seed import SeedPlan, load
from strangler_proxy.databases import make_engine
from strangler_proxy.migrate import upgrade

SEED_TITLES = 60
ServeFn = Callable[[web.Application], Awaitable[TestClient]]


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def make_monolith_db(path: Path, titles: int = SEED_TITLES, seed: int = 7) -> str:
    url = sqlite_url(path)
    await upgrade(MONOLITH_MIGRATIONS, url)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await load(conn, SeedPlan(titles=titles, seed=seed))
    finally:
        await engine.dispose()
    return url


async def make_service_db(service: str, path: Path) -> str:
    url = sqlite_url(path)
    await upgrade(service_migrations(service), url)
    return url


@pytest.fixture
async def monolith_url(tmp_path: Path) -> str:
    return await make_monolith_db(tmp_path / "monolith.sqlite3")


@pytest.fixture
def service_db(tmp_path: Path) -> Callable[[str], Awaitable[str]]:
    async def make(service: str) -> str:
        return await make_service_db(service, tmp_path / f"{service}.sqlite3")

    return make


@pytest.fixture
async def engines() -> AsyncIterator[Callable[[str], AsyncEngine]]:
    made: list[AsyncEngine] = []

    def make(url: str) -> AsyncEngine:
        engine = make_engine(url)
        made.append(engine)
        return engine

    yield make
    for e in made:
        await e.dispose()


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """Start an app on 127.0.0.1 port 0; returns a client bound to it."""
    clients: list[TestClient] = []

    async def start(app: web.Application) -> TestClient:
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()


@pytest.fixture
async def monolith(monolith_url: str, serve: ServeFn) -> TestClient:
    return await serve(create_monolith(monolith_url))
