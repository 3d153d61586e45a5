"""Prometheus metrics of the proxy, on a dedicated registry per runtime.

Each :class:`~strangler_proxy.dataplane.runtime.ProxyRuntime` owns one
:class:`ProxyMetrics` (and so one ``CollectorRegistry``): two proxies in one
process (tests) never share or collide, and nothing lands on the global
default registry. The admin API serves ``runtime.registry``.

The hot path never calls ``.labels()`` (a lock and a tuple build per call):
children are created once per label set and cached in plain dicts.

    >>> m = ProxyMetrics()
    >>> m.request("r", "legacy", "legacy", 200, 0.001)
    >>> m.registry.get_sample_value("strangler_proxy_requests_total",
    ...     {"route": "r", "mode": "legacy", "upstream": "legacy", "status": "200", "cell": ""})
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

DEFAULT_ROUTE_LABEL = "_default"  # requests that matched no route
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RouteCounters:
    """Live per-route counts for the admin API (plain ints, no locking needed
    on one event loop)."""

    __slots__ = ("requests", "legacy", "target", "errors", "fallbacks", "shadowed", "shadow_dropped", "shadow_skipped")

    def __init__(self) -> None:
        self.requests = 0
        self.legacy = 0
        self.target = 0
        self.errors = 0
        self.fallbacks = 0
        self.shadowed = 0
        self.shadow_dropped = 0
        self.shadow_skipped = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class EndpointSample:
    """One upstream endpoint at scrape time (the endpoint board's counters)."""

    upstream: str
    endpoint: str  # its URL (config-bounded)
    zone: str
    healthy: bool
    drained: bool
    in_flight: int
    requests: int
    latency_buckets: tuple[int, ...]  # per LATENCY_BUCKETS bound, then +Inf (not cumulative)
    latency_sum: float


class _EndpointCollector(Collector):
    """Per-endpoint series read from the pools' plain counters when scraped, so the
    hot path pays an int increment instead of a Prometheus child per endpoint."""

    def __init__(self, samples: Callable[[], Iterable[EndpointSample]],
                 levels: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.samples = samples
        self.levels = levels

    def describe(self) -> list[Any]:
        return []  # names are fixed; nothing to check against the registry's others

    def collect(self) -> Iterator[Any]:
        labels = ["upstream", "endpoint", "zone"]
        healthy = GaugeMetricFamily("strangler_endpoint_healthy",
                                    "1 when the endpoint may serve (not ejected, active checks passing)", labels=labels)
        drained = GaugeMetricFamily("strangler_endpoint_drained", "1 when an operator drained the endpoint",
                                    labels=labels)
        in_flight = GaugeMetricFamily("strangler_endpoint_in_flight", "Requests the endpoint is serving now",
                                      labels=labels)
        requests = CounterMetricFamily("strangler_endpoint_requests",
                                       "Answers from the endpoint (served, shadow and GraphQL paths)", labels=labels)
        latency = HistogramMetricFamily("strangler_endpoint_latency_seconds",
                                        "Time to the endpoint's response headers", labels=labels)
        bounds = [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for s in self.samples():
            values = [s.upstream, s.endpoint, s.zone]
            healthy.add_metric(values, 1.0 if s.healthy else 0.0)
            drained.add_metric(values, 1.0 if s.drained else 0.0)
            in_flight.add_metric(values, float(s.in_flight))
            requests.add_metric(values, float(s.requests))
            cumulative, running = [], 0
            for bound, count in zip(bounds, s.latency_buckets, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            latency.add_metric(values, cumulative, s.latency_sum)
        level = GaugeMetricFamily("strangler_upstream_serving_priority",
                                  "The priority level the upstream serves from (above 0: failed over)",
                                  labels=["upstream"])
        for upstream, priority in self.levels():
            level.add_metric([upstream], float(priority))
        yield from (healthy, drained, in_flight, requests, latency, level)


class ProxyMetrics:
    """Every metric of the data plane (and the control plane's flip counters)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests_total = Counter(
            "strangler_proxy_requests", "Client requests by route, mode, serving upstream, status and cell "
            "(empty without cells)",
            ("route", "mode", "upstream", "status", "cell"), registry=r,
        )
        self.client_latency = Histogram(
            "strangler_proxy_client_latency_seconds", "Time from request to last response byte, per route and cell",
            ("route", "cell"), buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_latency = Histogram(
            "strangler_proxy_upstream_latency_seconds",
            "Time to upstream response headers; side is legacy or target, path is served or shadow",
            ("route", "side", "path"), buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "strangler_proxy_upstream_errors", "Upstream failures by kind (connect, timeout, reset)",
            ("upstream", "kind"), registry=r,
        )
        self.fallbacks = Counter(
            "strangler_proxy_fallbacks", "Safe requests served by legacy because the target failed", ("route",),
            registry=r,
        )
        self.shadow_queue_depth = Gauge(
            "strangler_shadow_queue_depth", "Mirrored requests waiting for a shadow worker", registry=r,
        )
        self.shadow_submitted = Counter(
            "strangler_shadow_submitted", "Mirrored requests queued", ("route",), registry=r,
        )
        self.shadow_dropped = Counter(
            "strangler_shadow_dropped", "Mirrored requests dropped because the queue was full", ("route",),
            registry=r,
        )
        self.shadow_skipped = Counter(
            "strangler_shadow_skipped", "Requests not mirrored (body over the limit, ...)", ("route", "reason"),
            registry=r,
        )
        self.verdicts = Counter(
            "strangler_shadow_verdicts", "Comparison verdicts", ("route", "verdict"), registry=r,
        )
        self.listener_errors = Counter(
            "strangler_shadow_listener_errors", "Result listeners or comparators that raised", registry=r,
        )
        self.rechecks = Counter(
            "strangler_rechecks",
            "Mismatches on reads asked again, per result: transient, mismatch, error or over_budget (not asked)",
            ("route", "outcome"), registry=r,
        )
        # Used by the control plane.
        self.flips_total = Counter("strangler_flips", "Applied flips by route and new mode", ("route", "mode"), registry=r)
        self.rollbacks_total = Counter("strangler_rollbacks", "Automatic rollbacks by route", ("route",), registry=r)
        self.failovers_total = Counter(
            "strangler_failovers", "Operator failovers by upstream and the zone pinned to (auto: health decides)",
            ("upstream", "zone"), registry=r,
        )
        self.drains_total = Counter(
            "strangler_drains", "Operator drains and undrains of endpoints by upstream", ("upstream", "action"),
            registry=r,
        )

        # Upstream endpoints (the pools, dataplane/pool.py and health.py); per-endpoint
        # health, load and latency come from track_endpoints' collector.
        self.ejections = Counter(
            "strangler_endpoint_ejections", "Endpoints ejected by outlier detection (connect failures or 5xx in a row)",
            ("upstream", "endpoint"), registry=r,
        )
        self.retries = Counter(
            "strangler_upstream_retries", "Requests sent again to another endpoint of the upstream", ("upstream",),
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "strangler_upstream_retry_budget_exhausted",
            "Retries not made because the upstream's retry budget was spent", ("upstream",), registry=r,
        )
        self._endpoints: _EndpointCollector | None = None

        self._req: dict[tuple[str, str, str, int, str], Any] = {}
        self._client: dict[tuple[str, str], Any] = {}
        self._upstream: dict[tuple[str, str, str], Any] = {}
        self._simple: dict[tuple[int, tuple[str, ...]], Any] = {}

    # ------------------------------------------------------------ hot path
    def request(self, route: str, mode: str, upstream: str, status: int, duration_s: float, cell: str = "") -> None:
        """One client request; ``cell`` is one of the configured cells (bounded), or empty."""
        key = (route, mode, upstream, status, cell)
        child = self._req.get(key)
        if child is None:
            child = self._req[key] = self.requests_total.labels(route, mode, upstream, str(status), cell)
        child.inc()
        hist = self._client.get((route, cell))
        if hist is None:
            hist = self._client[(route, cell)] = self.client_latency.labels(route, cell)
        hist.observe(duration_s)

    def upstream(self, route: str, side: str, path: str, latency_s: float) -> None:
        key = (route, side, path)
        hist = self._upstream.get(key)
        if hist is None:
            hist = self._upstream[key] = self.upstream_latency.labels(route, side, path)
        hist.observe(latency_s)

    def inc(self, metric: Counter, *labels: str) -> None:
        """Increment a labelled counter through the child cache."""
        key = (id(metric), labels)
        child = self._simple.get(key)
        if child is None:
            child = self._simple[key] = metric.labels(*labels)
        child.inc()

    def track_queue(self, depth: Callable[[], int]) -> None:
        self.shadow_queue_depth.set_function(depth)

    def track_endpoints(self, samples: Callable[[], Iterable[EndpointSample]],
                        levels: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Export every upstream endpoint's health, load and latency, and each upstream's
        serving priority level (read from ``samples`` and ``levels`` when scraped)."""
        if self._endpoints is None:
            self._endpoints = _EndpointCollector(samples, levels)
            self.registry.register(self._endpoints)
        else:
            self._endpoints.samples, self._endpoints.levels = samples, levels
