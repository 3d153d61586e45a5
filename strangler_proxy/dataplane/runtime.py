"""The one mutable reference of a running proxy.

Config and route table live together in one immutable snapshot that is
replaced in a single assignment, so a request reads ``runtime.snapshot`` once
and sees a consistent pair even if a flip lands mid-request. The operators'
upstream switches (a zone pinned, endpoints drained) are another immutable
mapping, swapped whole by the control plane (:meth:`ProxyRuntime.set_switches`)
and pushed to whatever follows them: the endpoint board every pool registry
reads -- the served path's, the shadow path's and the GraphQL gateway's.

    >>> from strangler_proxy.config import load_config_text
    >>> rt = ProxyRuntime(load_config_text('upstreams: {legacy: {url: "http://127.0.0.1:8001"}}'))
    >>> rt.table.routes
    ()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from prometheus_client import CollectorRegistry

from strangler_proxy.config import StranglerConfig
from strangler_proxy.dataplane.accesslog import AccessLog
from strangler_proxy.dataplane.health import EndpointBoard
from strangler_proxy.diff.redaction import QueryRedaction, configured_query_names
from strangler_proxy.metrics import ProxyMetrics, RouteCounters
from strangler_proxy.routing.cells import CellTable, Tables, build_tables
from strangler_proxy.routing.endpoints import UpstreamSwitch
from strangler_proxy.routing.router import RouteState, RouteTable

log = logging.getLogger("strangler.runtime")

Switches = Mapping[str, UpstreamSwitch]  # upstream name -> its switches; absent: none set
SwitchSink = Callable[[Switches], None]
NO_SWITCHES: Switches = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: StranglerConfig
    table: RouteTable  # every cell's unless it has its own in tables.by_cell
    overrides: Mapping[str, RouteState]  # by route name, and by route@cell for one cell
    tables: Tables
    cells: CellTable | None  # None: no cells: section

    @classmethod
    def build(cls, config: StranglerConfig, overrides: Mapping[str, RouteState]) -> Snapshot:
        tables = build_tables(config, overrides)
        return cls(config, tables.table, overrides, tables, CellTable.build(config.cells))


class ProxyRuntime:
    """Config + route table of a running proxy, swapped whole by :meth:`apply`.

    Also owns what lives as long as the proxy: metrics (one registry per
    runtime), the access log, the live per-route counters and the endpoint
    board (every upstream endpoint's health and load, ``strangler upstreams``).
    """

    def __init__(self, config: StranglerConfig, overrides: Mapping[str, RouteState] | None = None) -> None:
        frozen = MappingProxyType(dict(overrides or {}))
        self.snapshot = Snapshot.build(config, frozen)
        self.metrics = ProxyMetrics()
        self.access_log = AccessLog(config.proxy.access_log, QueryRedaction(configured_query_names(config)))
        self._counters: dict[str, RouteCounters] = {}
        self.switches: Switches = NO_SWITCHES
        self._switch_sinks: list[SwitchSink] = []
        # Every upstream endpoint's health, load and switches, shared by the pools of the
        # served path, the shadow path and the GraphQL gateway (dataplane/health.py).
        self.endpoints = EndpointBoard(self.metrics)
        self.follow_switches(self.endpoints.set_switches)

    @property
    def config(self) -> StranglerConfig:
        return self.snapshot.config

    @property
    def table(self) -> RouteTable:
        return self.snapshot.table

    @property
    def overrides(self) -> Mapping[str, RouteState]:
        return self.snapshot.overrides

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def apply(
        self, config: StranglerConfig | None = None, overrides: Mapping[str, RouteState] | None = None
    ) -> None:
        """Validate and swap in a new config and/or overrides; on error keep the old ones.

        Raises FlipError (bad override) or ConfigError (bad route template).
        """
        current = self.snapshot
        new_config = config if config is not None else current.config
        new_overrides = MappingProxyType(dict(overrides)) if overrides is not None else current.overrides
        self.snapshot = Snapshot.build(new_config, new_overrides)
        self.access_log.enabled = new_config.proxy.access_log
        if config is not None:
            self.access_log.query = QueryRedaction(configured_query_names(new_config))

    def set_switches(self, switches: Switches) -> None:
        """Swap in the operators' switches (one immutable mapping, drained endpoints by
        their URL in the file) and push it to every follower."""
        self.switches = switches if isinstance(switches, MappingProxyType) else MappingProxyType(dict(switches))
        for sink in self._switch_sinks:
            self._push(sink)

    def follow_switches(self, sink: SwitchSink) -> None:
        """Call ``sink`` with the switches now and after every change (the endpoint board's
        ``set_switches``)."""
        self._switch_sinks.append(sink)
        self._push(sink)

    def _push(self, sink: SwitchSink) -> None:
        try:
            sink(self.switches)
        except Exception:  # noqa: BLE001 -- one failing follower must not keep the others on old switches
            log.exception("an upstream switches follower failed")

    def counters(self, route: str) -> RouteCounters:
        c = self._counters.get(route)
        if c is None:
            c = self._counters[route] = RouteCounters()
        return c

    def route_counters(self) -> dict[str, dict[str, int]]:
        """Live per-route counters (routes of the current table, plus any seen before)."""
        out = {name: c.as_dict() for name, c in self._counters.items()}
        for route in self.table.routes:
            out.setdefault(route.name, RouteCounters().as_dict())
        return out
