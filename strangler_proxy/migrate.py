"""Migrations: one alembic environment per database, handed over explicitly.

Each database has an async alembic environment (a folder with ``env.py`` and
``versions/``) and its own version table (``alembic_version_<name>``), so
several environments can share one PostgreSQL database. The URL is handed to
the environment programmatically -- ``config.attributes["url"]`` and an open
``config.attributes["connection"]`` -- never through an alembic.ini.

The toolkit owns two environments, :data:`CONTROL` (flips, audit) and
:data:`RESULTS` (the results store, in the control database). An app of the
stack brings its own (``AppSpec.migrations``); ``strangler db upgrade`` walks
both (see ``strangler_proxy/stack/registry.py``).

    >>> RESULTS.version_table, RESULTS.database
    ('alembic_version_results', 'control')
    >>> migration_env("orders", Path("/srv/orders/migrations")).directory.name
    'migrations'
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


def migration_env(name: str, directory: Path, *, database: str | None = None) -> MigrationEnv:
    """The environment ``name`` in ``directory``, tracked in ``alembic_version_<name>``."""
    return MigrationEnv(name=name, directory=directory, version_table=f"alembic_version_{name}",
                        database=database or name)


CONTROL = migration_env("control", MIGRATIONS_ROOT / "control")
RESULTS = migration_env("results", MIGRATIONS_ROOT / "results", database="control")  # shares the control database
TOOLKIT_MIGRATIONS: tuple[MigrationEnv, ...] = (CONTROL, RESULTS)


def alembic_config(env: MigrationEnv, url: str) -> Config:
    """An alembic Config for ``env`` at ``url`` (no ini file)."""
    if not (env.directory / "env.py").is_file():
        raise ConfigError(f"migrations of {env.name!r}: no env.py in {env.directory}", field="migrations")
    cfg = Config()
    cfg.set_main_option("script_location", str(env.directory))
    cfg.attributes["url"] = url
    cfg.attributes["version_table"] = env.version_table
    return cfg


def head_revision(env: MigrationEnv) -> str | None:
    """The newest revision of ``env``'s migrations."""
    return ScriptDirectory.from_config(alembic_config(env, "sqlite://")).get_current_head()


async def _run(env: MigrationEnv, url: str, action: str, revision: str) -> None:
    name = env.name
    cfg = alembic_config(env, url)

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
            raise provision.missing_error([provision.Database((env.database,), url)]) from exc
        reason = provision.driver_message(exc)
        raise StoreError(f"migrating database {name!r} ({action} to {revision}) failed: {reason}") from exc
    finally:
        await engine.dispose()


async def upgrade(env: MigrationEnv, url: str, revision: str = "head") -> None:
    """Bring ``env``'s database at ``url`` up to ``revision`` (default: the newest)."""
    await _run(env, url, "upgrade", revision)


async def downgrade(env: MigrationEnv, url: str, revision: str) -> None:
    """Take ``env``'s database at ``url`` down to ``revision`` (``base``: empty)."""
    await _run(env, url, "downgrade", revision)
