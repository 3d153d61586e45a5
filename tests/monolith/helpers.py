"""Direct SQL reads the tests use to check what the HTTP answers claim."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from strangler_proxy.databases import make_engine


async def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def scalar(url: str, sql: str, **params: Any) -> Any:
    rows = await query(url, sql, **params)
    return rows[0][0]
