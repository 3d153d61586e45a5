"""What an app of the stack hands the toolkit: the contract of ``stack.apps``.

``strangler up``, ``strangler service``, ``backfill``, ``sync``, ``seed`` and
``db upgrade`` never import a monolith or a service by name: each app is
named in ``strangler.yaml`` (``stack.apps[].app: module:attribute``) and that
attribute is an :class:`AppSpec`. The demo's monolith and services plug in
exactly this way (``legacy_monolith/stack.py``, ``extracted_services/*/spec.py``);
so does yours.

    >>> from aiohttp import web
    >>> spec = AppSpec(create_app=lambda url: web.Application(), default_port=8300)
    >>> spec.datamove is None and spec.seed is None
    True
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from strangler_proxy.datamove.plan import DataMove
from strangler_proxy.migrate import MigrationEnv

SeedProgress = Callable[[int], None]  # units (e.g. titles) just written


@dataclass(frozen=True, slots=True)
class SeedRequest:
    """What ``strangler seed`` (and ``strangler up`` on an empty database) asks for."""

    size: int  # how many top-level records (titles, in the demo)
    seed: int  # the same seed, the same data
    replace: bool = False  # delete existing data first
    if_empty: bool = False  # do nothing when there is data


class Seeder(Protocol):
    """Fills an app's database with deterministic data; returns rows per table,
    or None when it left the database as it was (``if_empty``)."""

    def __call__(
        self, url: str, request: SeedRequest, progress: SeedProgress | None
    ) -> Awaitable[Mapping[str, int] | None]: ...


@dataclass(frozen=True)
class AppSpec:
    """One program of the stack, as the toolkit runs it."""

    create_app: Callable[[str], web.Application]  # its database URL -> the aiohttp app
    default_port: int  # when no upstream in the config says where it listens
    migrations: MigrationEnv | None = None  # migrated to head before it serves
    seed: Seeder | None = None  # `strangler seed`; `strangler up` seeds an empty database
    datamove: DataMove | None = None  # a service carved out of another app's database
