"""`strangler db create|upgrade|downgrade` and `strangler seed`.

Database URLs follow :func:`strangler_proxy.databases.database_url`: the
environment first, then ``databases:`` in strangler.yaml (when the file
exists), then the embedded SQLite default. On PostgreSQL the databases must
exist before they are migrated: ``db create`` (or ``--create-databases``)
makes them, see :mod:`strangler_proxy.provision`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url

from strangler_proxy import migrate, provision
from strangler_proxy.config import load_config
from strangler_proxy.databases import database_url
from strangler_proxy.errors import StranglerError

DEFAULT_CONFIG = "strangler.yaml"

console = Console()
err_console = Console(stderr=True)

ConfigOption = typer.Option(
    DEFAULT_CONFIG, "--config", "-c", help="strangler.yaml to read databases: from (if it exists)"
)


def configured_url(name: str, config: str = DEFAULT_CONFIG) -> str:
    """The URL of database ``name``, honouring ``databases:`` in ``config`` if present."""
    path = Path(config)
    return load_config(path).database_url_of(name) if path.is_file() else database_url(name)


def shown_url(url: str) -> str:
    """A URL safe to print (password hidden)."""
    return make_url(url).render_as_string(hide_password=True)


def databases_of(names: list[str], config: str = DEFAULT_CONFIG) -> list[provision.Database]:
    """The databases behind migration names (``results`` lives in ``control``), once each."""
    return provision.group({name: configured_url(migrate.database_of(name), config) for name in names})


def ensure_databases(names: list[str], config: str, *, create: bool, quiet: bool = False) -> None:
    """Before migrating: create the missing databases (``create``) or fail naming them all."""
    done = asyncio.run(provision.ensure(databases_of(names, config), create_missing=create))
    for row in done:
        if row.status == "created" and not quiet:
            err_console.print(f"created database {row.database.label} on {row.database.server}", highlight=False)


CreateDatabasesOption = typer.Option(
    False, "--create-databases", help="Create the PostgreSQL databases that do not exist yet (as `db create` does)"
)


def print_error(exc: StranglerError) -> None:
    """``error: ...`` on stderr, lines never wrapped (they may be commands to copy)."""
    err_console.print("[red]error:[/red]", Text(str(exc)), soft_wrap=True)


def _fail(exc: StranglerError) -> typer.Exit:
    print_error(exc)
    return typer.Exit(code=1)


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
            names = database or list(migrate.known_databases())
            done = asyncio.run(provision.create(databases_of(names, config)))
        except StranglerError as exc:
            raise _fail(exc) from exc
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
        names = database or list(migrate.known_databases())
        done: list[dict[str, str]] = []
        try:
            ensure_databases(names, config, create=create_databases, quiet=as_json)
            for name in names:
                url = configured_url(migrate.database_of(name), config)
                asyncio.run(migrate.upgrade(name, url, revision))
                done.append({"database": name, "url": shown_url(url), "revision": revision})
        except StranglerError as exc:
            raise _fail(exc) from exc
        if as_json:
            typer.echo(json.dumps(done))
            return
        table = Table("database", "url", "now at")
        for row in done:
            table.add_row(row["database"], row["url"], row["revision"])
        console.print(table)

    @db.command("downgrade")
    def downgrade(
        name: str = typer.Argument(..., help=f"Database name: {', '.join(migrate.known_databases())}"),
        revision: str = typer.Argument(..., help="Target revision, e.g. 0001, -1 or base"),
        config: str = ConfigOption,
    ) -> None:
        """Take one database down to REVISION."""
        try:
            url = configured_url(migrate.database_of(name), config)
            asyncio.run(migrate.downgrade(name, url, revision))
        except StranglerError as exc:
            raise _fail(exc) from exc
        console.print(f"{name} ({shown_url(url)}) is now at {revision}")

    @app.command("seed")
    def seed(
        titles: int = typer.Option(2_000, "--titles", "-n", min=1, max=10_000_000, help="How many titles"),
        seed_value: int = typer.Option(42, "--seed", "-s", help="Random seed: the same seed, the same catalogue"),
        replace: bool = typer.Option(False, "--replace", help="Delete an existing catalogue first"),
        if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing if the catalogue has titles"),
        config: str = ConfigOption,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    ) -> None:
        """Fill the monolith database with a deterministic, realistic catalogue."""
        from legacy_monolith.seed import SeedPlan, seed_database

        plan = SeedPlan(titles=titles, seed=seed_value)
        try:
            url = configured_url("monolith", config)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                disable=as_json,
            ) as bar:
                task = bar.add_task("seeding titles", total=titles)

                def advance(table: str, rows: int) -> None:
                    if table == "titles":
                        bar.advance(task, rows)

                stats = asyncio.run(seed_database(url, plan, replace=replace, if_empty=if_empty, progress=advance))
        except StranglerError as exc:
            raise _fail(exc) from exc
        if as_json:
            rows = stats.rows if stats else {}
            typer.echo(json.dumps({"url": shown_url(url), "seeded": stats is not None, "rows": rows}))
            return
        if stats is None:
            console.print(f"{shown_url(url)} already has a catalogue; left as is")
            return
        console.print(f"seeded {shown_url(url)} with seed {seed_value}")
        table = Table("table", "rows")
        for name, count in stats.rows.items():
            table.add_row(name, f"{count:,}")
        console.print(table)
