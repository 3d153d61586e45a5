"""``strangler up``: the stack's apps, their sync workers and the proxy, started in order.

:func:`run_stack` runs a list of :class:`Component` s in one asyncio loop:
each is started in order (its ``start`` returns the URL it serves), and they
are stopped in reverse order when ``stop`` is set. A component that fails to
start stops the ones already running. :func:`stack_components` builds the list
from the registry (``stack.apps`` in strangler.yaml): the legacy app first,
then the others with their sync workers, then the proxy. With a ``cells:``
section, :func:`cells_components` does so once per cell, each cell's copy of
the stack on its own ports and databases.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from strangler_proxy.config import StranglerConfig
from strangler_proxy.databases import make_engine
from strangler_proxy.datamove.sync import SyncWorker
from strangler_proxy.errors import ConfigError
from strangler_proxy.stack.apps import AppSpec, SeedRequest
from strangler_proxy.stack.registry import RegisteredApp, Stack, cell_database_url, load_stack
from strangler_proxy.stack.runners import SYNC_METRICS_PORT_OFFSET, AppServer, CommandApp, SyncRunner

log = logging.getLogger("strangler.stack")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_UP_SIZE = 2_000  # seeded into an empty legacy database (titles, in the demo)
DEFAULT_UP_SEED = 42
REVERSE_METRICS_OFFSET = 10  # reverse workers' /metrics: app port + 1000 + 10
DEFAULT_SYNC_BATCH = 500
DEFAULT_SYNC_POLL_S = 0.05
DEFAULT_CONFIG_PATH = "strangler.yaml"
# A further copy of a Python app is this toolkit's own `strangler service NAME`, in a process of its own.
SERVE_COPY = (sys.executable, "-m", "strangler_proxy.cli.main", "service")


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
    ``strangler.yaml``: each app listens where its upstream's URL points."""

    host: str = DEFAULT_HOST
    legacy_port: int | None = None
    size: int = DEFAULT_UP_SIZE  # 0: do not seed
    seed: int = DEFAULT_UP_SEED
    with_services: bool = True
    config_path: str = DEFAULT_CONFIG_PATH  # what the further copies of a Python app are started with


def sync_metrics_port(app_port: int, *, reverse: bool) -> int:
    """Where a sync worker serves ``/metrics``: app port + 1000 (+ 10 when reverse)."""
    return app_port + SYNC_METRICS_PORT_OFFSET + (REVERSE_METRICS_OFFSET if reverse else 0)


def sync_worker(
    stack: Stack, config: StranglerConfig, name: str, *, reverse: bool, source: str | None = None,
    batch_size: int = DEFAULT_SYNC_BATCH, poll_interval_s: float = DEFAULT_SYNC_POLL_S,
) -> SyncWorker:
    """The worker that drains one of service ``name``'s streams (see DataMove.stream); in a
    cell's stack, between that cell's databases (its metrics say ``service="ratings@c1"``)."""
    app, spec = stack.service(name)
    assert spec.datamove is not None
    stream = spec.datamove.stream(reverse=reverse, source=source)
    if stream is None:
        what = "reverse sync stream" if reverse else f"sync stream from {source or spec.datamove.source}"
        known = ", ".join(s.source for s in spec.datamove.streams) or "none: it is backfill-only"
        raise ConfigError(f"service {name!r} has no {what} (forward sources: {known})", field="service")
    target = spec.datamove.source if reverse else name
    return SyncWorker(
        app.label, stream,
        make_engine(stack.database_url(config, stream.source)), make_engine(stack.database_url(config, target)),
        batch_size=batch_size, poll_interval_s=poll_interval_s,
    )


def app_component(
    app: RegisteredApp, config: StranglerConfig, *, host: str, port: int | None = None,
    seed: SeedRequest | None = None, backfill: bool = False,
) -> Component:
    """One app (its first copy): a Python app (migrated, seeded or backfilled as asked) or a command.
    In a cell's stack it uses that cell's databases."""
    port = port if port is not None else app.port
    label = f"{app.label} ({app.zones[0]})" if len(app.ports) > 1 else app.label
    if app.spec is None:
        assert app.entry.command is not None
        command = CommandApp(app.label, app.entry.command, host=host, port=port, health=app.entry.health)
        return Component(label, command.start, command.stop)
    datamove = app.spec.datamove
    server = AppServer(
        app.label, app.spec, cell_database_url(config, app.database, app.cell), host=host, port=port, seed=seed,
        backfill_from=cell_database_url(config, datamove.source, app.cell) if backfill and datamove else None,
    )
    return Component(label, server.start, server.stop)


def copy_components(app: RegisteredApp, *, host: str, config_path: str) -> list[Component]:
    """The further copies of an app whose upstream lists several endpoints (one
    per endpoint port after the first), each in a process of its own: one can
    be killed while the others serve (a failover drill), as in production.

    They share the first copy's database, which ``strangler up`` has migrated
    and seeded by then (``--no-migrate``): once per database, not per copy. A
    command app is simply run again on each port.
    """
    components = []
    in_cell = ("--cell", app.cell) if app.cell is not None else ()
    for port, zone in zip(app.ports[1:], app.zones[1:], strict=True):
        argv = app.entry.command or (*SERVE_COPY, app.name, "--no-migrate", "--host", "{host}", "--port", "{port}",
                                     "--config", config_path, *in_cell)
        command = CommandApp(app.label, argv, host=host, port=port, health=app.entry.health)
        components.append(Component(f"{app.label} ({zone})", _with_pid(command), command.stop))
    return components


def _with_pid(command: CommandApp) -> Callable[[], Awaitable[str]]:
    async def start() -> str:
        url = await command.start()
        return f"{url}  (pid {command.pid})"

    return start


def sync_plan(app: RegisteredApp, spec: AppSpec) -> list[tuple[bool, str | None, int | None]]:
    """A service's sync workers as ``(reverse, source, metrics port)``: every
    worker's metrics are on one registry, so the extra forward streams need no
    endpoint of their own."""
    assert spec.datamove is not None
    plan: list[tuple[bool, str | None, int | None]] = [
        (False, s.source, sync_metrics_port(app.port, reverse=False) if i == 0 else None)
        for i, s in enumerate(spec.datamove.streams)
    ]
    if spec.datamove.reverse is not None:
        plan.append((True, None, sync_metrics_port(app.port, reverse=True)))
    return plan


def stack_ports(stack: Stack) -> list[tuple[int, str]]:
    """``(port, what listens there)`` for every copy of every app and every sync
    worker's ``/metrics`` that ``strangler up`` (with services) starts."""
    ports = [(port, app.label + (f" ({zone})" if len(app.ports) > 1 else ""))
             for app in stack.apps for port, zone in zip(app.ports, app.zones, strict=True)]
    for app, spec in stack.services():
        ports += [(port, f"sync {app.label}" + (" (reverse) /metrics" if reverse else " /metrics"))
                  for reverse, _source, port in sync_plan(app, spec) if port is not None]
    return ports


def sync_components(stack: Stack, config: StranglerConfig, host: str) -> list[Component]:
    """Every service's sync workers, both directions.

    Forward (source outbox -> service) carries the source's writes while it is
    the writer; reverse (service outbox -> source) carries the service's writes
    once its write route is extracted. Neither applier writes an outbox row, so
    nothing echoes back; with writes flipped in one step each row has one
    writer at a time (docs/services.md).
    """
    components = []
    for app, spec in stack.services():
        assert spec.datamove is not None
        for reverse, source, metrics_port in sync_plan(app, spec):
            worker = sync_worker(stack, config, app.name, reverse=reverse, source=source)
            runner = SyncRunner(worker, host=host, metrics_port=metrics_port)
            label = f"sync {app.label}" + (
                " (reverse)" if reverse else "" if source == spec.datamove.source else f" (from {source})"
            )
            components.append(Component(label, runner.start, runner.stop))
    return components


def started_apps(stack: Stack, options: StackOptions) -> list[RegisteredApp]:
    """The apps ``strangler up`` starts: the legacy one, then (with services) the others."""
    legacy = stack.legacy()
    return [legacy] + ([a for a in stack.apps if a is not legacy] if options.with_services else [])


def stack_components(stack: Stack, config: StranglerConfig, options: StackOptions) -> list[Component]:
    """The legacy app (seeded when empty), then -- with services -- every other
    app (backfilled on first start) and the sync workers. The proxy is the
    caller's to append. An app whose upstream lists several endpoints is
    started once per endpoint (:func:`copy_components`)."""
    legacy, *others = started_apps(stack, options)
    seed = SeedRequest(size=options.size, seed=options.seed, if_empty=True) if options.size else None
    components = [app_component(legacy, config, host=options.host, port=options.legacy_port, seed=seed)]
    components += copy_components(legacy, host=options.host, config_path=options.config_path)
    for app in others:
        components.append(app_component(app, config, host=options.host, backfill=True))
        components += copy_components(app, host=options.host, config_path=options.config_path)
    if options.with_services:
        components += sync_components(stack, config, options.host)
    return components


def cells_components(config: StranglerConfig, options: StackOptions) -> list[Component]:
    """:func:`stack_components` once per cell of ``config.cells``, in the file's
    order: each cell's apps on the ports of its copies of their upstreams, with
    databases of its own (seeded, backfilled) and sync workers of its own."""
    if config.cells is None:
        raise ConfigError("the file has no cells: section (strangler up --cells N writes one)", field="cells")
    if options.legacy_port is not None:
        raise ConfigError("each cell's monolith listens where the cell's copy of its upstream points; "
                          "a single port cannot be given", field="monolith_port")
    components = []
    for cell in config.cells.names:
        components += stack_components(load_stack(config, cell), config, options)
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
                log.warning("stopping %s failed: %s", component.name, exc)
    return [(c.name, url) for c, url in started]
