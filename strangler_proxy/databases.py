"""Where each database of the project lives, and how engines are made.

Every database has a short name (``monolith``, ``control``, ``ratings``,
``credits``, ``images``). Its URL is, first match wins:

1. the environment variable ``STRANGLER_<NAME>_DATABASE_URL``;
2. the value passed in (from ``strangler.yaml``'s ``databases:`` section);
3. ``STRANGLER_DATABASE_URL`` with the name appended as the database name
   (one PostgreSQL server, one database per name) -- e.g.
   ``postgresql+asyncpg://postgres@127.0.0.1:5432/`` gives ``.../monolith``;
4. the embedded default: a SQLite file ``<data dir>/<name>.sqlite3``, where the
   data dir is ``STRANGLER_DATA_DIR`` or ``./data``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Dialect, Select, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

# Constraint names every strangler-owned schema uses, so alembic and
# create_all name constraints the same way on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
DEFAULT_DATA_DIR = "data"


def data_dir() -> Path:
    return Path(os.environ.get("STRANGLER_DATA_DIR", DEFAULT_DATA_DIR))


def database_url(name: str, configured: str | None = None) -> str:
    """The SQLAlchemy async URL of database ``name`` (see the module docstring)."""
    env = os.environ.get(f"STRANGLER_{name.upper()}_DATABASE_URL")
    if env:
        return env
    if configured:
        return configured
    base = os.environ.get("STRANGLER_DATABASE_URL")
    if base:
        return str(make_url(base).set(database=name))
    path = data_dir() / f"{name}.sqlite3"
    return f"sqlite+aiosqlite:///{path}"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: object) -> AsyncEngine:
    """An async engine; SQLite files get their directory, WAL and foreign keys."""
    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)  # type: ignore[arg-type]

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------ reads by ids
IDS_PARAM = "ids"  # the expanding parameter of statements given to rows_by_ids
DRIVER_SQL_CACHE_SIZE = 1024  # distinct (statement, dialect, batch size); cleared whole when full
_DRIVER_SQL: dict[tuple[int, type[Dialect], int], str | None] = {}


def _plain_sql(stmt: Select[Any], dialect: Dialect, n: int) -> str | None:
    """``stmt`` as driver SQL for ``n`` ids whose parameters are exactly those ids in
    order; None when a column or parameter needs type conversion (then only
    SQLAlchemy's own path gives the same values). Keyed by ``id(stmt)``: callers pass
    module-level statements, which are never freed."""
    key = (id(stmt), type(dialect), n)
    if key in _DRIVER_SQL:
        return _DRIVER_SQL[key]
    compiled = stmt.compile(dialect=dialect)
    probe = [f"p{i}" for i in range(n)]
    state = compiled.construct_expanded_state({IDS_PARAM: probe})
    plain = (
        all(c.type.result_processor(dialect, None) is None for c in stmt.selected_columns)
        and all(b.type.bind_processor(dialect) is None for b in compiled.binds.values())
        and list(state.positional_parameters) == probe
    )
    if len(_DRIVER_SQL) >= DRIVER_SQL_CACHE_SIZE:
        _DRIVER_SQL.clear()
    sql = _DRIVER_SQL[key] = state.statement if plain else None
    return sql


async def rows_by_ids(
    reader: AsyncConnection | AsyncSession, stmt: Select[Any], ids: Sequence[str]
) -> Sequence[Sequence[Any]]:
    """The rows of ``stmt`` -- a module-level select with an expanding ``ids``
    parameter -- for the distinct ``ids``.

    The hot reads of GraphQL resolvers and entity loaders. On an aiosqlite
    connection a statement whose values need no conversion goes straight to the
    driver: one trip to its worker thread instead of four, and neither
    SQLAlchemy's parameter expansion nor its result set-up (measured ~40 vs
    ~200 µs of CPU for a small read). Same SQL, same rows (tests/test_databases.py
    compares both paths). ORM sessions, PostgreSQL and statements with converted
    types take SQLAlchemy's ordinary path.
    """
    distinct = list(dict.fromkeys(ids))
    if isinstance(reader, AsyncConnection) and reader.dialect.driver == "aiosqlite":
        sql = _plain_sql(stmt, reader.dialect, len(distinct))
        if sql is not None:
            driver = (await reader.get_raw_connection()).driver_connection
            return await driver.execute_fetchall(sql, distinct)  # type: ignore[no-any-return,union-attr]
    return (await reader.execute(stmt, {IDS_PARAM: distinct})).all()
