"""The monolith as an aiohttp application.

    >>> app = create_app("sqlite+aiosqlite:///data/monolith.sqlite3")
    >>> sorted({r.resource.canonical for r in app.router.routes()})[:2]
    ['/api/people/{id}', '/api/people/{id}/known-for']

The engine is made on start-up and disposed on clean-up (``cleanup_ctx``);
handlers reach it through typed ``AppKey`` s in :mod:`legacy_monolith.db`.
The schema must already exist: run ``strangler db upgrade`` first (``strangler
up`` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from legacy_monolith import graphql_view, rest
from legacy_monolith.db import ENGINE, SESSIONS, WRITE_LOCK, make_sessions
from legacy_monolith.errors import error_middleware
from legacy_monolith.quirks import request_id_middleware
from strangler_proxy.databases import make_engine

DATABASE_URL = web.AppKey("monolith_database_url", str)
MAX_BODY_BYTES = 64 * 1024  # a vote is a few dozen bytes; a GraphQL query rarely more than a few KB


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = make_engine(app[DATABASE_URL])
    app[ENGINE] = engine
    app[SESSIONS] = make_sessions(engine)
    app[WRITE_LOCK] = asyncio.Lock()
    try:
        yield
    finally:
        await engine.dispose()


def create_app(database_url: str) -> web.Application:
    """The film-catalogue monolith serving ``database_url`` (REST, GraphQL, /healthz)."""
    app = web.Application(middlewares=[request_id_middleware, error_middleware], client_max_size=MAX_BODY_BYTES)
    app[DATABASE_URL] = database_url
    app.cleanup_ctx.append(_database)
    rest.add_routes(app)
    graphql_view.add_routes(app)
    return app
