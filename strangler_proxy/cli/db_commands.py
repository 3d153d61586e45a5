"""`strangler db create|upgrade|downgrade` and `strangler seed`.

The databases are the toolkit's own (``control``, and ``results`` in it) and
every app's of the stack (``stack.apps`` in strangler.yaml, each app's
``AppSpec.migrations``); ``seed`` fills the legacy app's database with its
``AppSpec.seed``. URLs: see :mod:`strangler_proxy.cli.common`. On PostgreSQL
the databases must exist before they are migrated: ``db create`` (or
``--create-databases``) makes them, see :mod:`strangler_proxy.provision`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from strangler_proxy import migrate, provision
from strangler_proxy.cli.common import (
    ConfigOption,
    config_and_stack,
    configured_url,
    console,
    err_console,
    fail,
    shown_url,
)
from strangler_proxy.errors import ConfigError, StranglerError
from strangler_proxy.migrate import MigrationEnv
from strangler_proxy.stack.apps import SeedRequest


def _migrations(config: str) -> tuple[MigrationEnv, ...]:
    """Every environment: the toolkit's, plus the stack's when the file exists."""
    if not Path(config).is_file():
        return migrate.TOOLKIT_MIGRATIONS
    return config_and_stack(config)[1].migrations()


def _migration(name: str, config: str) -> MigrationEnv:
    envs = _migrations(config)
    for env in envs:
        if env.name == name:
            return env
    raise ConfigError(f"unknown database {name!r}; known: {', '.join(e.name for e in envs)}", field="database")


def selected_migrations(names: list[str] | None, config: str) -> list[MigrationEnv]:
    """The environments named (every one when ``names`` is empty)."""
    return [_migration(n, config) for n in names] if names else list(_migrations(config))


def databases_of(envs: list[MigrationEnv], config: str) -> list[provision.Database]:
    """The databases behind migration environments (``results`` lives in ``control``), once each."""
    return provision.group({env.name: configured_url(env.database, config) for env in envs})


def ensure_databases(envs: list[MigrationEnv], config: str, *, create: bool, quiet: bool = False) -> None:
    """Before migrating: create the missing databases (``create``) or fail naming them all."""
    done = asyncio.run(provision.ensure(databases_of(envs, config), create_missing=create))
    for row in done:
        if row.status == "created" and not quiet:
            err_console.print(f"created database {row.database.label} on {row.database.server}", highlight=False)


CreateDatabasesOption = typer.Option(
    False, "--create-databases", help="Create the PostgreSQL databases that do not exist yet (as `db create` does)"
)


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Create and migrate every database the project knows.", no_args_is_help=True)
    app.add_typer(db, name="db")

    @db.command("create")
    def create(
        database: list[str] = typer.Option(None, "--database", "-d", help="Only this database (repeatable)"),
        config: str = ConfigOption,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    ) -> None:
        """Create the PostgreSQL databases that do not exist yet (SQLite needs nothing).

        Without the privilege to create databases, names every missing one and
        prints the createdb / psql commands an administrator can run.
        """
        try:
            done = asyncio.run(provision.create(databases_of(selected_migrations(database, config), config)))
        except StranglerError as exc:
            raise fail(exc) from exc
        rows = [
            {"database": p.database.name, "names": list(p.database.names), "url": shown_url(p.database.url),
             "status": p.status}
            for p in done
        ]
        if as_json:
            typer.echo(json.dumps(rows))
            return
        table = Table("database", "used by", "url", "status")
        for row in rows:
            table.add_row(row["database"], ", ".join(row["names"]), row["url"], row["status"])
        console.print(table)
        if not any(row["status"] == "created" for row in rows):
            console.print("nothing to create: every database exists (SQLite files are made on first use)")

    @db.command("upgrade")
    def upgrade(
        database: list[str] = typer.Option(None, "--database", "-d", help="Only this database (repeatable)"),
        revision: str = typer.Option("head", help="Target revision"),
        create_databases: bool = CreateDatabasesOption,
        config: str = ConfigOption,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    ) -> None:
        """Run the migrations of every known database (or only --database)."""
        done: list[dict[str, str]] = []
        try:
            envs = selected_migrations(database, config)
            ensure_databases(envs, config, create=create_databases, quiet=as_json)
            for env in envs:
                url = configured_url(env.database, config)
                asyncio.run(migrate.upgrade(env, url, revision))
                done.append({"database": env.name, "url": shown_url(url), "revision": revision})
        except StranglerError as exc:
            raise fail(exc) from exc
        if as_json:
            typer.echo(json.dumps(done))
            return
        table = Table("database", "url", "now at")
        for row in done:
            table.add_row(row["database"], row["url"], row["revision"])
        console.print(table)

    @db.command("downgrade")
    def downgrade(
        name: str = typer.Argument(..., help="Database name: control, results, or an app's of the stack"),
        revision: str = typer.Argument(..., help="Target revision, e.g. 0001, -1 or base"),
        config: str = ConfigOption,
    ) -> None:
        """Take one database down to REVISION."""
        try:
            env = _migration(name, config)
            url = configured_url(env.database, config)
            asyncio.run(migrate.downgrade(env, url, revision))
        except StranglerError as exc:
            raise fail(exc) from exc
        console.print(f"{name} ({shown_url(url)}) is now at {revision}")

    @app.command("seed")
    def seed(
        titles: int = typer.Option(2_000, "--titles", "-n", min=1, max=10_000_000,
                                   help="How many titles (the seeder's top-level records)"),
        seed_value: int = typer.Option(42, "--seed", "-s", help="Random seed: the same seed, the same catalogue"),
        replace: bool = typer.Option(False, "--replace", help="Delete an existing catalogue first"),
        if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing if the catalogue has titles"),
        config: str = ConfigOption,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    ) -> None:
        """Fill the legacy app's database with deterministic, realistic data (its AppSpec.seed)."""
        request = SeedRequest(size=titles, seed=seed_value, replace=replace, if_empty=if_empty)
        try:
            loaded, stack = config_and_stack(config)
            legacy = stack.legacy()
            if legacy.spec is None or legacy.spec.seed is None:
                raise ConfigError(f"app {legacy.name!r} has no seeder (AppSpec.seed)", field="stack.apps")
            seeder = legacy.spec.seed
            url = loaded.database_url_of(legacy.database)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                disable=as_json,
            ) as bar:
                task = bar.add_task("seeding", total=titles)
                rows = asyncio.run(seeder(url, request, lambda n: bar.advance(task, n)))
        except StranglerError as exc:
            raise fail(exc) from exc
        if as_json:
            typer.echo(json.dumps({"url": shown_url(url), "seeded": rows is not None, "rows": dict(rows or {})}))
            return
        if rows is None:
            console.print(f"{shown_url(url)} already has a catalogue; left as is")
            return
        console.print(f"seeded {shown_url(url)} with seed {seed_value}")
        table = Table("table", "rows")
        for name, count in rows.items():
            table.add_row(name, f"{count:,}")
        console.print(table)
