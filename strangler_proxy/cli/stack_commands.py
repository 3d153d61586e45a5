"""`strangler up` (the whole local stack) and `strangler monolith` (the legacy app alone).

The apps come from ``stack.apps`` in strangler.yaml (see
:mod:`strangler_proxy.stack.components`); the proxy goes in front of them.

``strangler up --cells N`` writes ``<data dir>/cells/strangler.yaml`` -- the
file with N cells of its stack (:mod:`strangler_proxy.stack.cells`) -- and runs
that: every cell's apps, databases and sync workers, on ports checked free
first, and one proxy in front of them all. ``strangler up -c FILE`` on a file
that has a ``cells:`` section runs its cells the same way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

import typer
from rich.table import Table

from strangler_proxy import migrate, provision
from strangler_proxy.cli.common import (
    ConfigOption,
    config_and_stack,
    console,
    err_console,
    fail,
    shown_url,
)
from strangler_proxy.cli.db_commands import CreateDatabasesOption, ensure_databases
from strangler_proxy.config import StranglerConfig
from strangler_proxy.databases import data_dir
from strangler_proxy.errors import ConfigError, StranglerError
from strangler_proxy.logs import configure_logging
from strangler_proxy.migrate import MigrationEnv
from strangler_proxy.stack.cells import cell_ports, cells_config_text
from strangler_proxy.stack.components import (
    DEFAULT_HOST,
    DEFAULT_UP_SEED,
    DEFAULT_UP_SIZE,
    Component,
    StackOptions,
    app_component,
    cells_components,
    run_stack,
    stack_components,
    started_apps,
)
from strangler_proxy.stack.registry import cell_database_url, load_stack, one_stack

ACCESS_LOG_NAME = "access.log"
CELLS_CONFIG = Path("cells") / "strangler.yaml"  # under the data dir: what `strangler up --cells N` runs


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


def write_cells_config(config: str, cells: int) -> str:
    """``config`` with ``cells`` cells of its stack, written to ``<data dir>/cells/strangler.yaml``; its path."""
    base = Path(config)
    try:
        text = base.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=config) from exc
    generated = cells_config_text(text, cells, file=config)
    path = data_dir() / CELLS_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generated, encoding="utf-8")
    return str(path)


def cell_databases(loaded: StranglerConfig, options: StackOptions) -> dict[str, str]:
    """``name@cell`` -> URL of every database the cells' apps use, for :func:`provision.ensure`."""
    assert loaded.cells is not None
    urls = {}
    for cell in loaded.cells.names:
        for app in started_apps(load_stack(loaded, cell), options):
            if app.spec is not None and app.spec.migrations is not None:
                urls[app.label] = cell_database_url(loaded, app.database, cell)
    return urls


def taken_ports(ports: list[tuple[int, str]], host: str) -> list[str]:
    """The ports of ``ports`` something already listens on (bound to ``host`` or any address)."""
    taken = []
    for port, what in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                taken.append(f"{port} ({what})")
    return taken


def up_components(
    config: str, options: StackOptions, *, with_proxy: bool = True, proxy_host: str | None = None,
    proxy_port: int | None = None, admin_port: int | None = None,
) -> list[Component]:
    """Everything ``strangler up`` runs, in start order: the stack's apps and
    sync workers (``stack_components``; once per cell when the file has
    cells), then the proxy in front."""
    loaded, stack = config_and_stack(config)
    if loaded.cells is not None:
        components = cells_components(loaded, options)
    else:
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
        cells: int | None = typer.Option(
            None, "--cells", min=1, help="Run N copies of the stack as cells c1..cN behind one proxy (writes "
                                         "<data dir>/cells/strangler.yaml from --config and runs it)"
        ),
        create_databases: bool = CreateDatabasesOption,
        config: str = ConfigOption,
    ) -> None:
        """Start the whole local stack (migrated, seeded if empty) until Ctrl-C."""
        try:
            if cells is not None:
                config = write_cells_config(config, cells)
                console.print(f"cells config: {config} (pass it as --config to traffic, backfill, sync and service)",
                              highlight=False)
            options = StackOptions(host=host or DEFAULT_HOST, legacy_port=monolith_port, size=titles, seed=seed,
                                   with_services=services, config_path=config)
            loaded, _stack = config_and_stack(config)
            envs = up_migrations(config, options, with_proxy=proxy)
            if loaded.cells is not None:
                taken = taken_ports(cell_ports(loaded), options.host)
                if taken:
                    raise ConfigError(f"ports already in use: {', '.join(taken)}; stop what listens there, or move "
                                      "the stack's ports in the file (cell k listens on them + k blocks)",
                                      file=config, field="cells")
                _ensure_cell_databases(cell_databases(loaded, options), create=create_databases)
                envs = [migrate.CONTROL] if proxy else []  # the apps' are the cells'
            # PostgreSQL databases must exist first: created with --create-databases, else named.
            ensure_databases(envs, config, create=create_databases)
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
        cell: str | None = typer.Option(None, "--cell", help="The cell's copy (a file with a cells: section)"),
        config: str = ConfigOption,
    ) -> None:
        """Serve the legacy app (the one behind proxy.default_upstream; migrated first, not seeded)."""
        try:
            loaded, _stack = config_and_stack(config)
            stack = one_stack(loaded, cell)
            legacy = stack.legacy()
            component = app_component(legacy, loaded, host=host, port=port)
        except StranglerError as exc:
            raise fail(exc) from exc
        console.print(f"{legacy.label} database: {shown_url(stack.database_url(loaded, legacy.database))}")
        _run([component])


def _ensure_cell_databases(urls: dict[str, str], *, create: bool) -> None:
    """The cells' PostgreSQL databases exist before they are migrated (SQLite needs nothing)."""
    done = asyncio.run(provision.ensure(provision.group(urls), create_missing=create))
    for row in done:
        if row.status == "created":
            err_console.print(f"created database {row.database.label} on {row.database.server}", highlight=False)

