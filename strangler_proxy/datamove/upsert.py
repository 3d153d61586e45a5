"""``INSERT .. ON CONFLICT DO UPDATE`` for SQLite and PostgreSQL alike.

Upserts are what make backfill and sync idempotent: applying the same row
twice leaves the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect, Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert


def upsert_statement(conn: AsyncConnection, table: Table) -> Insert:
    """An upsert of ``table`` keyed on its primary key, in ``conn``'s dialect."""
    return upsert_statement_for(conn.dialect, table)


def upsert_statement_for(dialect: Dialect, table: Table) -> Insert:
    name = dialect.name
    if name == "sqlite":
        stmt: Any = sqlite.insert(table)
    elif name == "postgresql":
        stmt = postgresql.insert(table)
    else:  # pragma: no cover - the project supports exactly these two
        raise NotImplementedError(f"upsert on {name}")
    keys = [c.name for c in table.primary_key.columns]
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=keys)  # type: ignore[no-any-return]
    return stmt.on_conflict_do_update(index_elements=keys, set_=updates)  # type: ignore[no-any-return]


async def upsert_rows(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(upsert_statement(conn, table), list(rows))


async def catch_up_serial(conn: AsyncConnection, table: Table) -> None:
    """After rows were written with explicit ids, move a PostgreSQL serial past
    them, so the next ordinary insert does not collide. (SQLite picks
    ``max(rowid) + 1`` by itself.) The sequence never moves backwards."""
    if conn.dialect.name != "postgresql":
        return
    (pk,) = table.primary_key.columns
    seq = (await conn.execute(select(func.pg_get_serial_sequence(table.name, pk.name)))).scalar()
    if seq is None:
        return
    top = (await conn.execute(select(func.coalesce(func.max(pk), 0)))).scalar_one()
    # is_called=false after setval(seq, n) would hand out n next; with true, n + 1.
    last = (await conn.execute(text(f"SELECT last_value, is_called FROM {seq}"))).one()
    current = last.last_value if last.is_called else last.last_value - 1
    if top > current:
        await conn.execute(select(func.setval(seq, top, True)))
