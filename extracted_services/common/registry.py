"""Which services exist and how each one's data moves.

Each service package has a ``spec`` module exposing ``SPEC``: its app
factory, its backfill plan and its sync streams. The CLI and ``strangler up``
look services up here by name.

    >>> service_spec("ratings").default_port
    8101
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from extracted_services.common.backfill import BackfillPlan
from extracted_services.common.sync import Stream
from strangler_proxy.errors import ConfigError

SERVICE_NAMES = ("ratings", "credits", "images")


@dataclass(frozen=True)
class ServiceSpec:
    """One extracted service: how to run it and how its data moves."""

    name: str
    default_port: int
    create_app: Callable[[str], web.Application]  # database URL -> app
    backfill: BackfillPlan
    # outboxes -> service, the monolith's first (empty: the service is backfill-only)
    streams: tuple[Stream, ...] = ()
    # service outbox -> monolith, after the write path is cut over
    reverse: Stream | None = None

    def stream(self, *, reverse: bool, source: str | None = None) -> Stream | None:
        """The reverse stream, or the forward one draining ``source`` (default: the first)."""
        if reverse:
            return self.reverse
        if source is None:
            return self.streams[0] if self.streams else None
        return next((s for s in self.streams if s.source == source), None)


def service_spec(name: str) -> ServiceSpec:
    if name not in SERVICE_NAMES:
        raise ConfigError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}", field="service")
    module = importlib.import_module(f"extracted_services.{name}.spec")
    spec: ServiceSpec = module.SPEC
    return spec
