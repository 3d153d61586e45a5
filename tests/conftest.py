"""Shared fixtures: real PostgreSQL databases made and dropped per test run.

PostgreSQL lives at ``STRANGLER_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it is unreachable the
PostgreSQL tests are skipped locally, but fail loudly when ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

PG_ADMIN_DSN = os.environ.get("STRANGLER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _asyncpg_dsn(dsn: str, database: str) -> str:
    base = dsn.rsplit("/", 1)[0]
    return f"{base}/{database}"


async def _pg_reachable() -> str | None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return str(exc)
    await conn.close()
    return None


@pytest.fixture
async def pg_database() -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Factory: each call creates a fresh PostgreSQL database and returns its
    SQLAlchemy async URL; all are dropped when the test ends."""
    problem = await _pg_reachable()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_DSN}: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    created: list[str] = []

    async def make() -> str:
        name = f"strangler_t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return _asyncpg_dsn(PG_ADMIN_DSN, name).replace("postgresql://", "postgresql+asyncpg://", 1)

    yield make
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """Point STRANGLER_DATA_DIR at a fresh directory for SQLite files."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(d))
    return str(d)


LoopbackHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def catch_all() -> AsyncIterator[Callable[[LoopbackHandler], Awaitable[int]]]:
    """``port = await catch_all(handle)``: ``handle`` answers every method and path on a
    free loopback port; every such server stops when the test ends."""
    servers: list[TestServer] = []

    async def serve(handle: LoopbackHandler) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return int(server.port)  # type: ignore[arg-type]

    yield serve
    for server in servers:
        await server.close()
