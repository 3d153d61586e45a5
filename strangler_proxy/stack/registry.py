"""The stack's apps, as ``strangler.yaml`` names them: resolved once, then looked up.

The toolkit never imports a monolith or a service by name. ``stack.apps``
names each one -- a Python :class:`~strangler_proxy.stack.apps.AppSpec`
(``app: module:attribute``) or any program (``command: [...]``) -- and
``stack.traffic`` the plan of ``strangler traffic``. :func:`load_stack` imports
what they name and checks its type, so a typo fails here with the entry's name.

    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text(
    ...     "upstreams: {legacy: {url: 'http://127.0.0.1:8001'}}\\n"
    ...     "stack: {apps: [{name: monolith, command: [./run, '{port}'], upstream: legacy}]}")
    >>> stack = load_stack(cfg)
    >>> stack.legacy().name, stack.legacy().port
    ('monolith', 8001)

An upstream with several endpoints runs its app once per endpoint:

    >>> cfg = load_config_text(
    ...     "upstreams: {legacy: {endpoints: [{url: 'http://127.0.0.1:8001', zone: zone-a},"
    ...     " {url: 'http://127.0.0.1:8002', zone: zone-b}]}}\\n"
    ...     "stack: {apps: [{name: monolith, command: [./run, '{port}'], upstream: legacy}]}")
    >>> load_stack(cfg).legacy().ports, load_stack(cfg).legacy().zones
    ((8001, 8002), ('zone-a', 'zone-b'))

With a ``cells:`` section the stack runs once per cell: ``load_stack(config, cell)``
is that cell's copy -- each app listens where the cell's copy of its upstream
(``legacy@c2``) points and owns the cell's copy of its database
(:func:`cell_database_url`):

    >>> cfg = load_config_text(
    ...     "upstreams: {legacy: {}}\\n"
    ...     "cells: {partition_key: 'header:X-Tenant', cells: ["
    ...     "{name: c1, upstreams: {legacy: 'http://127.0.0.1:10001'}},"
    ...     " {name: c2, upstreams: {legacy: 'http://127.0.0.1:12001'}}]}\\n"
    ...     "stack: {apps: [{name: monolith, command: [./run, '{port}'], upstream: legacy}]}")
    >>> load_stack(cfg, "c2").legacy().port, load_stack(cfg, "c2").legacy().label
    (12001, 'monolith@c2')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.engine import make_url
from yarl import URL

from strangler_proxy import migrate
from strangler_proxy.config import CELL_SEP, DEFAULT_ZONE, StackApp, StranglerConfig
from strangler_proxy.databases import is_sqlite
from strangler_proxy.errors import ConfigError
from strangler_proxy.migrate import MigrationEnv
from strangler_proxy.stack.apps import AppSpec


@dataclass(frozen=True)
class RegisteredApp:
    """One app of the stack: its config entry and, for a Python app, its spec.

    It runs one copy per endpoint of its upstream (``ports``, one per distinct
    port, in the file's order; ``zones`` says each one's zone): the first is
    where ``strangler up`` migrates and seeds, the others share its database.
    In a cell's stack (``cell``) they are that cell's copies.
    """

    entry: StackApp
    spec: AppSpec | None  # None: a command
    ports: tuple[int, ...]  # where its copies listen (its upstream's endpoints' ports, else the spec's default)
    zones: tuple[str, ...] = ()  # the zone of each copy's endpoint
    cell: str | None = None  # the cell whose copy this is (None: the stack has no cells)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def label(self) -> str:
        """How the running stack names it: ``ratings``, or ``ratings@c2`` in a cell."""
        return self.name if self.cell is None else f"{self.name}{CELL_SEP}{self.cell}"

    @property
    def port(self) -> int:
        """Where its first copy listens (``strangler monolith``/``service`` serve this one)."""
        if not self.ports:
            raise ConfigError(f"app {self.name!r} runs once per cell (the file has a cells: section): "
                              "say which cell (--cell NAME)", field="cells")
        return self.ports[0]

    @property
    def database(self) -> str:
        """The database it owns (``STRANGLER_<NAME>_DATABASE_URL``, ``databases.<name>``)."""
        return self.entry.name


@dataclass(frozen=True)
class Stack:
    """Every app of the stack, in start order, and the traffic plan."""

    apps: tuple[RegisteredApp, ...]
    default_upstream: str
    traffic: Any | None  # a strangler_proxy.stack.traffic.PlanFactory
    cell: str | None = None  # the cell whose copy of the stack this is

    def database_url(self, config: StranglerConfig, name: str) -> str:
        """The URL of database ``name`` (an app's) in this stack: its cell's copy in a cell."""
        return cell_database_url(config, name, self.cell)

    def app(self, name: str) -> RegisteredApp:
        for a in self.apps:
            if a.name == name:
                return a
        raise ConfigError(f"unknown app {name!r}; the stack has: {self.names() or 'none (see stack.apps)'}",
                          field="stack.apps")

    def names(self) -> str:
        return ", ".join(a.name for a in self.apps)

    def python_app(self, name: str) -> tuple[RegisteredApp, AppSpec]:
        found = self.app(name)
        if found.spec is None:
            raise ConfigError(f"app {name!r} is a command, not a Python app (stack.apps[].app)", field="stack.apps")
        return found, found.spec

    def legacy(self) -> RegisteredApp:
        """The app behind ``proxy.default_upstream``: the monolith."""
        for a in self.apps:
            if (a.entry.upstream or a.name) == self.default_upstream:
                return a
        raise ConfigError(f"no app of the stack serves the default upstream {self.default_upstream!r} "
                          "(set stack.apps[].upstream)", field="stack.apps")

    def services(self) -> tuple[tuple[RegisteredApp, AppSpec], ...]:
        """The apps whose data is carved out of another's (they have a ``datamove`` plan)."""
        return tuple((a, a.spec) for a in self.apps if a.spec is not None and a.spec.datamove is not None)

    def service(self, name: str) -> tuple[RegisteredApp, AppSpec]:
        found, spec = self.python_app(name)
        if spec.datamove is None:
            known = ", ".join(a.name for a, _ in self.services()) or "none"
            raise ConfigError(f"app {name!r} moves no data (services with a datamove plan: {known})",
                              field="service")
        return found, spec

    def migrations(self) -> tuple[MigrationEnv, ...]:
        """The toolkit's environments, then every app's, in stack order."""
        return migrate.TOOLKIT_MIGRATIONS + tuple(
            a.spec.migrations for a in self.apps if a.spec is not None and a.spec.migrations is not None
        )

    def migration(self, name: str) -> MigrationEnv:
        envs = self.migrations()
        for env in envs:
            if env.name == name:
                return env
        raise ConfigError(f"unknown database {name!r}; known: {', '.join(e.name for e in envs)}", field="database")


def resolve(ref: str, expected: type, where: str) -> Any:
    """Import ``module:attribute`` and check it is an ``expected``."""
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{ref}: cannot import {module_name!r} ({exc})", field=where) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(f"{ref}: {module_name!r} has no {attr!r}", field=where) from exc
    if expected is not object and not isinstance(obj, expected):
        raise ConfigError(f"{ref}: is a {type(obj).__name__}, not a {expected.__name__}", field=where)
    return obj


def cell_database_url(config: StranglerConfig, name: str, cell: str | None) -> str:
    """The URL of database ``name`` in ``cell`` (``name``'s own without a cell).

    ``databases.<name>@<cell>`` in the file wins; else it is derived from the
    URL of ``name`` (environment, ``databases:``, default; see databases.py): a
    SQLite file moves into ``cells/<cell>/`` beside it, a server's database
    gets ``_<cell>`` appended -- every cell has databases of its own.

    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text("upstreams: {legacy: {url: 'http://127.0.0.1:1'}}\\n"
    ...     "databases: {monolith: 'sqlite+aiosqlite:///data/monolith.sqlite3',"
    ...     " ratings: 'postgresql+asyncpg://pg@db/ratings'}")
    >>> cell_database_url(cfg, "monolith", "c1"), cell_database_url(cfg, "ratings", "c1")
    ('sqlite+aiosqlite:///data/cells/c1/monolith.sqlite3', 'postgresql+asyncpg://pg@db/ratings_c1')
    """
    if cell is None:
        return config.database_url_of(name)
    given = config.databases.get(f"{name}{CELL_SEP}{cell}")
    if given:
        return given
    url = make_url(config.database_url_of(name))
    if is_sqlite(str(url)):
        if not url.database or url.database == ":memory:":
            return str(url)  # a memory database is its engine's own
        path = PurePosixPath(url.database)
        return url.set(database=str(path.parent / "cells" / cell / path.name)).render_as_string(hide_password=False)
    return url.set(database=f"{url.database}_{cell}").render_as_string(hide_password=False)


def load_stack(config: StranglerConfig, cell: str | None = None) -> Stack:
    """Resolve ``config.stack``: import each app's spec and the traffic plan.

    ``cell``: the copy of the stack in that cell of ``config.cells``. Without
    one, an app whose upstream the cells give has no port of its own
    (:attr:`RegisteredApp.port` says to name a cell)."""
    cells = config.cells
    if cell is not None and (cells is None or cell not in cells.names):
        known = ", ".join(cells.names) if cells is not None else "none: the file has no cells: section"
        raise ConfigError(f"no such cell {cell!r} (cells: {known})", field="cell")
    given = {name for c in cells.cells for name in c.upstreams} if cells is not None else set()
    apps = []
    for i, entry in enumerate(config.stack.apps):
        spec = resolve(entry.app, AppSpec, f"stack.apps[{i}].app") if entry.app is not None else None
        base = entry.upstream or entry.name
        if base in given and cell is None:
            apps.append(RegisteredApp(entry, spec, (), ()))
            continue
        upstream = config.upstreams.get(f"{base}{CELL_SEP}{cell}" if base in given else base)
        if base in given and upstream is None:
            raise ConfigError(f"app {entry.name!r}: cell {cell!r} gives no URL for its upstream {base!r}",
                              field=f"stack.apps[{i}].upstream")
        copies: dict[int, str] = {}  # port -> zone: endpoints on other hosts but the same port are one copy here
        for endpoint in upstream.endpoint_list if upstream is not None else ():
            port = URL(endpoint.url).port
            if port is not None:
                copies.setdefault(port, endpoint.zone)
        if not copies:
            if spec is None:
                raise ConfigError(f"app {entry.name!r}: its upstream has no port", field=f"stack.apps[{i}].upstream")
            copies[spec.default_port] = DEFAULT_ZONE
        apps.append(RegisteredApp(entry, spec, tuple(copies), tuple(copies.values()), cell))
    traffic = resolve(config.stack.traffic, object, "stack.traffic") if config.stack.traffic else None
    if traffic is not None and not callable(traffic):
        raise ConfigError(f"{config.stack.traffic}: a traffic plan factory must be callable", field="stack.traffic")
    return Stack(tuple(apps), config.proxy.default_upstream, traffic, cell)


def one_stack(config: StranglerConfig, cell: str | None) -> Stack:
    """The stack a command that runs one copy of it addresses (``strangler service``,
    ``backfill``, ``sync``, ``monolith``): ``cell``'s, which a file with cells must name."""
    if cell is None and config.cells is not None:
        raise ConfigError(f"the file has cells ({', '.join(config.cells.names)}): say which with --cell",
                          field="cell")
    return load_stack(config, cell)
