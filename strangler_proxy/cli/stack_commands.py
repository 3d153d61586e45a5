"""`strangler up` (the whole local stack) and `strangler monolith` (the legacy app alone).

The apps come from ``stack.apps`` in strangler.yaml (see
:mod:`strangler_proxy.stack.components`); the proxy goes in front of them.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import typer
from rich.table import Table

from strangler_proxy import migrate
from strangler_proxy.cli.common import (
    ConfigOption,
    config_and_stack,
    console,
    fail,
    shown_url,
)
from strangler_proxy.cli.db_commands import CreateDatabasesOption, ensure_databases
from strangler_proxy.databases import data_dir
from strangler_proxy.errors import StranglerError
from strangler_proxy.logs import configure_logging
from strangler_proxy.migrate import MigrationEnv
from strangler_proxy.stack.components import (
    DEFAULT_HOST,
    DEFAULT_UP_SEED,
    DEFAULT_UP_SIZE,
    Component,
    StackOptions,
    app_component,
    run_stack,
    stack_components,
    started_apps,
)

ACCESS_LOG_NAME = "access.log"


def proxy_component(config: str, *, host: str | None, port: int | None, admin_port: int | None) -> Component:
    """The strangler proxy (and its admin API) in front of everything."""
    from strangler_proxy.server import ProxyServer

    # The admin API keeps its own (loopback) address whatever --host says.
    proxy = ProxyServer(config, port=port, admin_port=admin_port, host=host, sighup=True)

    async def start() -> str:
        url = await proxy.start()
        return f"{url}  (admin API {proxy.admin_url})"

    return Component("proxy", start, proxy.stop)


def up_migrations(config: str, options: StackOptions, *, with_proxy: bool = True) -> list[MigrationEnv]:
    """The databases ``strangler up`` migrates: its apps', and the proxy's control database."""
    _loaded, stack = config_and_stack(config)
    envs = [a.spec.migrations for a in started_apps(stack, options)
            if a.spec is not None and a.spec.migrations is not None]
    return envs + ([migrate.CONTROL] if with_proxy else [])


def up_components(
    config: str, options: StackOptions, *, with_proxy: bool = True, proxy_host: str | None = None,
    proxy_port: int | None = None, admin_port: int | None = None,
) -> list[Component]:
    """Everything ``strangler up`` runs, in start order: the stack's apps and
    sync workers (``stack_components``), then the proxy in front."""
    loaded, stack = config_and_stack(config)
    components = stack_components(stack, loaded, options)
    if with_proxy:
        components.append(proxy_component(config, host=proxy_host, port=proxy_port, admin_port=admin_port))
    return components


def _print_urls(rows: list[tuple[str, str]]) -> None:
    table = Table("component", "url")
    for name, url in rows:
        table.add_row(name, url)
    console.print(table)
    console.print("Ctrl-C stops everything.")
    from strangler_proxy.server import freeze_startup_objects  # heavy import: only once running

    freeze_startup_objects()  # everything is up: keep it out of the cyclic GC's scans


async def _serve_until_signal(components: list[Component]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_stack(components, stop, _print_urls)


def _run(components: list[Component]) -> None:
    import uvloop  # the proxy's hot path runs on this loop: uvloop, as `strangler proxy` uses

    try:
        uvloop.run(_serve_until_signal(components))
    except (StranglerError, OSError) as exc:  # OSError: e.g. the port is taken
        raise fail(exc) from exc
    console.print("stopped")


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        host: str | None = typer.Option(
            None, help="Interface the apps and the proxy listen on [default: 127.0.0.1 / the file's]"
        ),
        monolith_port: int | None = typer.Option(None, help="Port of the monolith [default: from strangler.yaml]"),
        proxy_port: int | None = typer.Option(None, help="Port of the proxy [default: proxy.listen.port]"),
        admin_port: int | None = typer.Option(None, help="Port of the admin API [default: proxy.admin.port]"),
        titles: int = typer.Option(
            DEFAULT_UP_SIZE, min=0, help="Titles (records) to seed when the monolith's database is empty (0: none)"
        ),
        seed: int = typer.Option(DEFAULT_UP_SEED, help="Seed of the generated data"),
        services: bool = typer.Option(True, help="Start the other apps of the stack and their sync workers"),
        proxy: bool = typer.Option(True, help="Start the proxy"),
        create_databases: bool = CreateDatabasesOption,
        config: str = ConfigOption,
    ) -> None:
        """Start the whole local stack (migrated, seeded if empty) until Ctrl-C."""
        options = StackOptions(host=host or DEFAULT_HOST, legacy_port=monolith_port, size=titles, seed=seed,
                               with_services=services, config_path=config)
        try:
            # PostgreSQL databases must exist first: created with --create-databases, else named.
            ensure_databases(up_migrations(config, options, with_proxy=proxy), config, create=create_databases)
            components = up_components(config, options, with_proxy=proxy, proxy_host=host, proxy_port=proxy_port,
                                       admin_port=admin_port)
        except StranglerError as exc:
            raise fail(exc) from exc
        # The terminal keeps the table of URLs; warnings go to stderr and the
        # proxy's JSON access lines to a file beside the databases.
        access_log = data_dir() / ACCESS_LOG_NAME
        access_log.parent.mkdir(parents=True, exist_ok=True)
        handler = configure_logging(str(access_log), level=logging.WARNING)
        logging.getLogger("strangler").setLevel(logging.INFO)  # reloads, flips, rollbacks: say so
        console.print(f"proxy access log: {access_log}")
        try:
            _run(components)
        finally:
            if handler is not None:
                handler.close()

    @app.command("monolith")
    def monolith(
        port: int | None = typer.Option(None, "--port", "-p", help="Port [default: its upstream's in strangler.yaml]"),
        host: str = typer.Option(DEFAULT_HOST, "--host", help="Interface to listen on"),
        config: str = ConfigOption,
    ) -> None:
        """Serve the legacy app (the one behind proxy.default_upstream; migrated first, not seeded)."""
        try:
            loaded, stack = config_and_stack(config)
            legacy = stack.legacy()
            component = app_component(legacy, loaded, host=host, port=port)
        except StranglerError as exc:
            raise fail(exc) from exc
        console.print(f"{legacy.name} database: {shown_url(loaded.database_url_of(legacy.database))}")
        _run([component])

