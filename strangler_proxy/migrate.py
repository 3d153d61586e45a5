"""The migration registry: every database the project knows, and how to move it.

Each database has an async alembic environment under ``migrations/<name>/``
and its own version table (``alembic_version_<name>``), so several
environments can share one PostgreSQL database. The URL is handed to the
environment programmatically -- ``config.attributes["url"]`` and an open
``config.attributes["connection"]`` -- never through an alembic.ini.

    >>> "monolith" in known_databases()
    True
    >>> MIGRATIONS["monolith"].version_table
    'alembic_version_monolith'

To register a database, add one line to :data:`MIGRATIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from strangler_proxy import provision
from strangler_proxy.databases import make_engine
from strangler_proxy.errors import ConfigError, StoreError

MIGRATIONS_ROOT = Path(__file__).resolve().parent.parent / "migrations"


@dataclass(frozen=True, slots=True)
class MigrationEnv:
    """Where one database's alembic environment lives and which table tracks it."""

    name: str
    directory: Path
    version_table: str
    database: str  # the database it migrates (several environments may share one)


def _env(name: str, database: str | None = None) -> MigrationEnv:
    return MigrationEnv(
        name=name,
        directory=MIGRATIONS_ROOT / name,
        version_table=f"alembic_version_{name}",
        database=database or name,
    )


# name -> environment. One line per environment; later issues append theirs.
MIGRATIONS: dict[str, MigrationEnv] = {
    "monolith": _env("monolith"),
    "control": _env("control"),
    "results": _env("results", database="control"),  # the results store shares the control database
    "ratings": _env("ratings"),
    "credits": _env("credits"),
    "images": _env("images"),
}


def known_databases() -> tuple[str, ...]:
    """Names of every migration environment, in registry order."""
    return tuple(MIGRATIONS)


def database_of(name: str) -> str:
    """The database environment ``name`` migrates (``results`` -> ``control``)."""
    return _lookup(name).database


def _lookup(name: str) -> MigrationEnv:
    env = MIGRATIONS.get(name)
    if env is None:
        raise ConfigError(f"unknown database {name!r}; known: {', '.join(known_databases())}", field="database")
    return env


def alembic_config(name: str, url: str) -> Config:
    """An alembic Config for database ``name`` at ``url`` (no ini file)."""
    env = _lookup(name)
    cfg = Config()
    cfg.set_main_option("script_location", str(env.directory))
    cfg.attributes["url"] = url
    cfg.attributes["version_table"] = env.version_table
    return cfg


def head_revision(name: str) -> str | None:
    """The newest revision of database ``name``'s migrations."""
    return ScriptDirectory.from_config(alembic_config(name, "sqlite://")).get_current_head()


async def _run(name: str, url: str, action: str, revision: str) -> None:
    cfg = alembic_config(name, url)

    def run_on(connection: Connection) -> None:
        # env.py sees the open connection and migrates on it, inside our loop.
        cfg.attributes["connection"] = connection
        if action == "upgrade":
            command.upgrade(cfg, revision)
        else:
            command.downgrade(cfg, revision)

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_on)
            await conn.commit()
    except CommandError as exc:
        raise ConfigError(f"{name}: {exc}", field="revision") from exc
    except (SQLAlchemyError, OSError) as exc:
        if provision.sqlstate(exc) == provision.INVALID_CATALOG_NAME:
            raise provision.missing_error([provision.Database((database_of(name),), url)]) from exc
        reason = provision.driver_message(exc)
        raise StoreError(f"migrating database {name!r} ({action} to {revision}) failed: {reason}") from exc
    finally:
        await engine.dispose()


async def upgrade(name: str, url: str, revision: str = "head") -> None:
    """Bring database ``name`` at ``url`` up to ``revision`` (default: the newest)."""
    await _run(name, url, "upgrade", revision)


async def downgrade(name: str, url: str, revision: str) -> None:
    """Take database ``name`` at ``url`` down to ``revision`` (``base``: empty)."""
    await _run(name, url, "downgrade", revision)
