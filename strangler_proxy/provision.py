"""Creating the databases the configured URLs name, before anything migrates them.

With ``STRANGLER_DATABASE_URL`` every database of the project is a database of
its own on one PostgreSQL server (``.../monolith``, ``.../control``, ...; see
:mod:`strangler_proxy.databases`), and a fresh server has none of them.
:func:`missing` finds those that do not exist; :func:`create` creates them from
the server's maintenance database (``postgres``, else ``template1``) when the
role may, and otherwise raises :class:`~strangler_proxy.errors.MissingDatabasesError`
naming every missing database with the exact commands that create it. SQLite
needs nothing: the file is made on first use (its directory here).

    >>> [db.names for db in group({"control": "sqlite+aiosqlite:///c.db", "results": "sqlite+aiosqlite:///c.db"})]
    [('control', 'results')]
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from strangler_proxy.databases import is_sqlite
from strangler_proxy.errors import MissingDatabasesError, StoreError

# SQLSTATEs of PostgreSQL (asyncpg raises InvalidCatalogNameError,
# InsufficientPrivilegeError, DuplicateDatabaseError for them).
INVALID_CATALOG_NAME = "3D000"
INSUFFICIENT_PRIVILEGE = "42501"
DUPLICATE_DATABASE = "42P04"
# Databases every PostgreSQL server has, to connect to when creating others.
MAINTENANCE_DATABASES = ("postgres", "template1")
DEFAULT_PG_PORT = 5432
# Who the printed commands run as: the conventional superuser of a server.
ADMIN_ROLE = "postgres"
CREATE_HINT = (
    "run `strangler db create` to create {them} (or pass --create-databases to `strangler up` or `strangler db upgrade`)"
)

Status = Literal["exists", "created", "sqlite"]


@dataclass(frozen=True, slots=True)
class Database:
    """One database on a server and the project's names that live in it
    (``control`` holds ``control`` and ``results``)."""

    names: tuple[str, ...]
    url: str

    @property
    def sqlite(self) -> bool:
        return is_sqlite(self.url)

    @property
    def name(self) -> str:
        """Its name on the server."""
        return make_url(self.url).database or ""

    @property
    def server(self) -> str:
        """``host:port`` (the default port left out), as messages show it."""
        url = make_url(self.url)
        host = url.host or "localhost"
        return host if url.port in (None, DEFAULT_PG_PORT) else f"{host}:{url.port}"

    @property
    def label(self) -> str:
        """``monolith``, or ``strangler_x (monolith)`` when the server's name differs."""
        return self.name if self.name in self.names else f"{self.name} ({', '.join(self.names)})"


@dataclass(frozen=True, slots=True)
class Provisioned:
    """What :func:`create` found or did for one database."""

    database: Database
    status: Status


def group(urls: Mapping[str, str]) -> list[Database]:
    """Project name -> URL, as one :class:`Database` per distinct URL (in order)."""
    by_url: dict[str, list[str]] = {}
    for name, url in urls.items():
        by_url.setdefault(url, []).append(name)
    return [Database(tuple(names), url) for url, names in by_url.items()]


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, wherever SQLAlchemy wrapped it."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; never loop on a cycle
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str):
            return code
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def driver_message(exc: BaseException) -> str:
    """What the database said, without SQLAlchemy's statement echo and help link.

    >>> driver_message(OSError("connection refused"))
    'connection refused'
    """
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig).strip() or type(exc.orig).__name__
    return str(exc).split("\n(Background on this error", 1)[0].strip() or type(exc).__name__


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, always quoted (any name is safe in CREATE DATABASE).

    >>> print(quote_ident('my"db'))
    "my""db"
    """
    return '"' + name.replace('"', '""') + '"'


def missing_error(dbs: Sequence[Database]) -> MissingDatabasesError:
    """Databases that do not exist, for a caller not asked to create them.

    >>> print(missing_error([Database(("monolith",), "postgresql+asyncpg://pg@db.local/monolith")]))
    database monolith does not exist on db.local yet
    run `strangler db create` to create it (or pass --create-databases to `strangler up` or `strangler db upgrade`)
    """
    servers: dict[str, list[str]] = {}
    for db in dbs:
        servers.setdefault(db.server, []).append(db.label)
    if len(dbs) == 1:
        first = f"database {dbs[0].label} does not exist on {dbs[0].server} yet"
    else:
        where = "; ".join(f"on {server}: {', '.join(labels)}" for server, labels in servers.items())
        first = f"these databases do not exist yet {where}"
    hint = CREATE_HINT.format(them="it" if len(dbs) == 1 else "them")
    return MissingDatabasesError(f"{first}\n{hint}", databases=tuple(db.name for db in dbs))


def create_commands(db: Database, owner: str | None) -> tuple[str, str]:
    """The ``createdb`` line and the ``psql`` line that create ``db`` (owned by ``owner``).

    >>> createdb, psql = create_commands(Database(("monolith",), "postgresql+asyncpg://app@127.0.0.1/monolith"), "app")
    >>> print(createdb)
    createdb -h 127.0.0.1 -U postgres -O app monolith
    >>> print(psql)
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE "monolith" OWNER "app"'
    """
    url = make_url(db.url)
    where: list[str] = []
    if url.host:
        where += ["-h", url.host]
    if url.port not in (None, DEFAULT_PG_PORT):
        where += ["-p", str(url.port)]
    where += ["-U", ADMIN_ROLE]
    own = ["-O", owner] if owner and owner != ADMIN_ROLE else []
    sql = f"CREATE DATABASE {quote_ident(db.name)}" + (
        f" OWNER {quote_ident(owner)}" if owner and owner != ADMIN_ROLE else ""
    )
    createdb = shlex.join(["createdb", *where, *own, db.name])
    psql = shlex.join(["psql", *where, "-d", "postgres", "-c", sql])
    return createdb, psql


def _cannot_create(
    dbs: Sequence[Database], owners: Mapping[str, str | None], reasons: Mapping[str, str]
) -> MissingDatabasesError:
    lines: list[str] = []
    by_server: dict[str, list[Database]] = {}
    for db in dbs:
        by_server.setdefault(db.server, []).append(db)
    for server, group_ in by_server.items():
        owner = owners.get(server)
        who = f'role "{owner}"' if owner else "this role"
        lines.append(
            f"{who} may not create databases on {server} ({reasons[server]}); "
            f"these do not exist: {', '.join(db.label for db in group_)}"
        )
    commands = [create_commands(db, owners.get(db.server)) for db in dbs]
    lines.append(f"ask someone who may (e.g. the {ADMIN_ROLE} superuser) to run:")
    lines += [f"  {createdb}" for createdb, _ in commands]
    lines.append("or, in SQL:")
    lines += [f"  {psql}" for _, psql in commands]
    lines.append("then run `strangler db upgrade`")
    return MissingDatabasesError(
        "\n".join(lines),
        databases=tuple(db.name for db in dbs),
        commands=tuple(c for pair in commands for c in pair),
    )


async def exists(db: Database) -> bool:
    """Whether ``db`` exists (SQLite: always, its file is made on first use)."""
    if db.sqlite:
        return True
    engine = create_async_engine(db.url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except (SQLAlchemyError, OSError) as exc:
        if sqlstate(exc) == INVALID_CATALOG_NAME:
            return False
        raise StoreError(f"cannot connect to database {db.label} on {db.server}: {driver_message(exc)}") from exc
    finally:
        await engine.dispose()


async def missing(dbs: Sequence[Database]) -> list[Database]:
    """Those of ``dbs`` that do not exist on their server."""
    return [db for db in dbs if not await exists(db)]


def _maintenance_urls(db: Database) -> list[URL]:
    return [make_url(db.url).set(database=name) for name in MAINTENANCE_DATABASES]


async def _on_maintenance(db: Database) -> tuple[AsyncConnection, AsyncEngine]:
    """An AUTOCOMMIT connection (CREATE DATABASE refuses a transaction) to the
    server's maintenance database, and its engine to dispose."""
    last: BaseException | None = None
    for url in _maintenance_urls(db):
        engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            return await engine.connect(), engine
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            if sqlstate(exc) != INVALID_CATALOG_NAME:
                raise
            last = exc
    assert last is not None
    raise last


async def create(dbs: Sequence[Database]) -> list[Provisioned]:
    """Create every one of ``dbs`` that does not exist; raise
    :class:`MissingDatabasesError` with the commands for those the role may not create.

    Idempotent: a database that exists (or that another process creates
    meanwhile) is reported as ``exists``.
    """
    done: list[Provisioned] = []
    todo: dict[str, list[Database]] = {}  # server -> missing databases
    for db in dbs:
        if db.sqlite:
            path = make_url(db.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            done.append(Provisioned(db, "sqlite"))
        elif await exists(db):
            done.append(Provisioned(db, "exists"))
        else:
            todo.setdefault(db.server, []).append(db)
    refused: list[Database] = []
    owners: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for server, group_ in todo.items():
        owners[server] = make_url(group_[0].url).username
        try:
            opened = await _on_maintenance(group_[0])
        except (SQLAlchemyError, OSError) as exc:
            refused += group_
            reasons[server] = f"cannot connect to its maintenance database: {driver_message(exc)}"
            continue
        conn, engine = opened
        try:
            owners[server] = (await conn.execute(text("SELECT current_user"))).scalar_one()
            for db in group_:
                try:
                    await conn.execute(text(f"CREATE DATABASE {quote_ident(db.name)}"))
                except (SQLAlchemyError, OSError) as exc:
                    state = sqlstate(exc)
                    if state == DUPLICATE_DATABASE:  # created meanwhile by someone else
                        done.append(Provisioned(db, "exists"))
                    elif state == INSUFFICIENT_PRIVILEGE:
                        refused.append(db)
                        reasons[server] = "no CREATEDB privilege"
                    else:
                        raise StoreError(f"creating database {db.label} on {server} failed: {driver_message(exc)}") from exc
                else:
                    done.append(Provisioned(db, "created"))
        finally:
            await conn.close()
            await engine.dispose()
    if refused:
        raise _cannot_create(refused, owners, reasons)
    order = {db.url: i for i, db in enumerate(dbs)}
    return sorted(done, key=lambda p: order[p.database.url])


async def ensure(dbs: Sequence[Database], *, create_missing: bool) -> list[Provisioned]:
    """Make sure ``dbs`` exist before migrating: create the missing ones when
    asked, else raise one error naming every missing database and how to create it."""
    if create_missing:
        return await create(dbs)
    absent = await missing(dbs)
    if absent:
        raise missing_error(absent)
    return [Provisioned(db, "sqlite" if db.sqlite else "exists") for db in dbs]
