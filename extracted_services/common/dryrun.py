"""Dry-run writes: ``X-Strangler-Dry-Run: 1`` makes a write roll back.

The proxy mirrors a write to a candidate only with this header (route option
``shadow_writes: dry-run``). Every write path of a service runs inside
:func:`write_transaction`, so the handler computes exactly the response the
real write would have produced -- and then nothing persists: the rows, the
aggregate and the service's own outbox row all go with the rollback.

The header is read strictly, failing closed: exactly one copy whose value is
exactly ``1`` (what the proxy sends) is a dry run; no header is a normal
write; anything else (``true``, ``0``, ``yes``, several copies) is refused
with a 400 before the transaction starts, so an ambiguous request neither
commits nor silently rolls back.

    async def vote(request):
        async with write_transaction(request) as conn:
            ...  # inserts, updates, reads back the new aggregate
        return json_response(body, status=201)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from extracted_services.common.db import ENGINE, WRITE_LOCK, uses_sqlite
from extracted_services.common.responses import Handler, bad_request

DRY_RUN_HEADER = "X-Strangler-Dry-Run"
# Echoed on the response so a caller (and a test) can see the rollback happened.
DRY_RUN_ECHO = "rolled-back"
_DRY_RUN_KEY = web.RequestKey("strangler_dry_run", bool)
DRY_RUN_VALUE = "1"  # the only value the proxy sends, and the only one accepted


def is_dry_run(request: web.Request) -> bool:
    """True for exactly one ``X-Strangler-Dry-Run: 1``, False without the header;
    any other use of it is refused (400), never guessed at."""
    values = request.headers.getall(DRY_RUN_HEADER, ())
    if not values:
        return False
    if len(values) == 1 and values[0] == DRY_RUN_VALUE:
        return True
    raise bad_request(
        f"{DRY_RUN_HEADER} must be sent once with the value {DRY_RUN_VALUE!r} (got {list(values)}); "
        "send no such header for a real write"
    )


@asynccontextmanager
async def write_transaction(request: web.Request) -> AsyncIterator[AsyncConnection]:
    """One transaction for one write: committed, or rolled back when the request
    is a dry run (or the body raises). A malformed dry-run header is refused
    here, before anything is written."""
    dry_run = is_dry_run(request)
    app = request.app
    engine = app[ENGINE]
    lock: AbstractAsyncContextManager[object] = app[WRITE_LOCK] if uses_sqlite(engine) else nullcontext()
    async with lock, engine.connect() as conn:
        trans = await conn.begin()
        if uses_sqlite(engine):
            # Take the write lock up front: a deferred transaction that reads
            # and then writes fails with SQLITE_BUSY if another writer got in.
            await conn.execute(text("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            await trans.rollback()
            raise
        if dry_run:
            await trans.rollback()
            request[_DRY_RUN_KEY] = True
        else:
            await trans.commit()


@web.middleware
async def dry_run_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.get(_DRY_RUN_KEY):
        response.headers[DRY_RUN_HEADER] = DRY_RUN_ECHO
    return response
