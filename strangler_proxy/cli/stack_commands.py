"""`strangler up` (the whole local stack) and `strangler monolith`.

``up`` runs a list of :class:`Component` s in one asyncio loop: each is
started in order (its ``start`` returns the URL it serves), the URLs are
printed, and on Ctrl-C (or SIGTERM) they are stopped in reverse order. A
component that fails to start stops the ones already running. To add a part
of the stack, append a component in :func:`stack_components`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from yarl import URL

from strangler_proxy.cli.db_commands import (
    DEFAULT_CONFIG,
    ConfigOption,
    CreateDatabasesOption,
    configured_url,
    ensure_databases,
    err_console,
    print_error,
    shown_url,
)
from strangler_proxy.config import load_config
from strangler_proxy.databases import data_dir
from strangler_proxy.errors import StranglerError
from strangler_proxy.logs import configure_logging

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MONOLITH_PORT = 8001
DEFAULT_UP_TITLES = 2_000
DEFAULT_UP_SEED = 42
ACCESS_LOG_NAME = "access.log"

console = Console()


@dataclass(frozen=True, slots=True)
class Component:
    """One part of the running stack.

    >>> async def start() -> str: return "http://127.0.0.1:1"
    >>> async def stop() -> None: pass
    >>> Component("demo", start, stop).name
    'demo'
    """

    name: str
    start: Callable[[], Awaitable[str]]  # returns the URL it serves
    stop: Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StackOptions:
    """What ``strangler up`` was asked for. Ports not given here come from
    ``strangler.yaml``: each upstream's URL is where that component listens,
    ``proxy.listen`` / ``proxy.admin`` are the proxy's."""

    host: str | None = None  # None: 127.0.0.1, and the proxy's listen.host from the file
    monolith_port: int | None = None
    proxy_port: int | None = None
    admin_port: int | None = None
    titles: int = DEFAULT_UP_TITLES
    seed: int = DEFAULT_UP_SEED
    config: str = DEFAULT_CONFIG
    with_services: bool = True
    with_proxy: bool = True


def upstream_port(config: str, upstream: str, default: int) -> int:
    """The port of ``upstream``'s URL in ``config`` (``default`` without a file or that upstream)."""
    path = Path(config)
    if not path.is_file():
        return default
    found = load_config(path).upstreams.get(upstream)
    if found is None:
        return default
    return URL(found.url).port or default


def proxy_component(options: StackOptions) -> Component:
    """The strangler proxy (and its admin API) in front of everything."""
    from strangler_proxy.server import ProxyServer

    # The admin API keeps its own (loopback) address whatever --host says.
    proxy = ProxyServer(
        options.config, port=options.proxy_port, admin_port=options.admin_port, host=options.host, sighup=True
    )

    async def start() -> str:
        url = await proxy.start()
        return f"{url}  (admin API {proxy.admin_url})"

    return Component("proxy", start, proxy.stop)


def monolith_component(database_url: str, *, host: str, port: int, titles: int | None, seed: int) -> Component:
    """The legacy monolith: migrated, seeded when empty (if ``titles``), served."""
    from legacy_monolith.seed import SeedPlan, seed_database
    from legacy_monolith.server import MonolithServer

    server = MonolithServer(database_url, host=host, port=port)

    async def start() -> str:
        if titles:
            await seed_database(database_url, SeedPlan(titles=titles, seed=seed), if_empty=True)
        else:
            from strangler_proxy import migrate

            await migrate.upgrade("monolith", database_url)
        return await server.start()

    return Component("monolith", start, server.stop)


def stack_databases(options: StackOptions) -> list[str]:
    """The databases the stack migrates: the monolith's, the services', the proxy's."""
    names = ["monolith"]
    if options.with_services:
        from extracted_services.common.registry import SERVICE_NAMES

        names += list(SERVICE_NAMES)
    if options.with_proxy:
        names.append("control")
    return names


def stack_components(options: StackOptions) -> list[Component]:
    """Everything ``strangler up`` runs, in start order: the monolith, the
    extracted services and their sync workers, then the proxy in front."""
    from strangler_proxy.cli.service_commands import service_components

    monolith_port = options.monolith_port or upstream_port(options.config, "legacy", DEFAULT_MONOLITH_PORT)
    components = [
        monolith_component(
            configured_url("monolith", options.config),
            host=options.host or DEFAULT_HOST,
            port=monolith_port,
            titles=options.titles,
            seed=options.seed,
        ),
    ]
    if options.with_services:
        components += service_components(options.config, options.host or DEFAULT_HOST)
    if options.with_proxy:
        components.append(proxy_component(options))
    return components


async def run_stack(
    components: list[Component],
    stop: asyncio.Event,
    on_ready: Callable[[list[tuple[str, str]]], None] | None = None,
) -> list[tuple[str, str]]:
    """Start ``components`` in order, wait for ``stop``, stop them in reverse.

    Returns ``(name, url)`` of every component that was started.
    """
    started: list[tuple[Component, str]] = []
    try:
        for component in components:
            url = await component.start()
            started.append((component, url))
        if on_ready is not None:
            on_ready([(c.name, url) for c, url in started])
        await stop.wait()
    finally:
        for component, _url in reversed(started):
            try:
                await component.stop()
            except Exception as exc:  # keep stopping the others
                err_console.print(f"[yellow]warning:[/yellow] stopping {component.name} failed: {exc}")
    return [(c.name, url) for c, url in started]


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
    except StranglerError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    except OSError as exc:  # e.g. the port is taken
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    console.print("stopped")


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        host: str | None = typer.Option(
            None, help="Interface the monolith, services and proxy listen on [default: 127.0.0.1 / the file's]"
        ),
        monolith_port: int | None = typer.Option(None, help="Port of the monolith [default: from strangler.yaml]"),
        proxy_port: int | None = typer.Option(None, help="Port of the proxy [default: proxy.listen.port]"),
        admin_port: int | None = typer.Option(None, help="Port of the admin API [default: proxy.admin.port]"),
        titles: int = typer.Option(
            DEFAULT_UP_TITLES, min=0, help="Titles to seed when the catalogue is empty (0: none)"
        ),
        seed: int = typer.Option(DEFAULT_UP_SEED, help="Seed of the generated catalogue"),
        services: bool = typer.Option(True, help="Start the extracted services and their sync workers"),
        proxy: bool = typer.Option(True, help="Start the proxy"),
        create_databases: bool = CreateDatabasesOption,
        config: str = ConfigOption,
    ) -> None:
        """Start the whole local stack (migrated, seeded if empty) until Ctrl-C."""
        options = StackOptions(
            host=host,
            monolith_port=monolith_port,
            proxy_port=proxy_port,
            admin_port=admin_port,
            titles=titles,
            seed=seed,
            config=config,
            with_services=services,
            with_proxy=proxy,
        )
        try:
            ensure_databases(stack_databases(options), config, create=create_databases)
            components = stack_components(options)
        except StranglerError as exc:
            print_error(exc)
            raise typer.Exit(code=1) from exc
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
        port: int = typer.Option(DEFAULT_MONOLITH_PORT, "--port", "-p", help="Port to listen on"),
        host: str = typer.Option(DEFAULT_HOST, "--host", help="Interface to listen on"),
        config: str = ConfigOption,
    ) -> None:
        """Serve the legacy monolith (its database is migrated first, not seeded)."""
        try:
            url = configured_url("monolith", config)
        except StranglerError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=1) from exc
        console.print(f"monolith database: {shown_url(url)}")
        _run([monolith_component(url, host=host, port=port, titles=None, seed=DEFAULT_UP_SEED)])
