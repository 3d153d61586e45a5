"""Prometheus metrics of the proxy, on a dedicated registry per runtime.

Each :class:`~strangler_proxy.dataplane.runtime.ProxyRuntime` owns one
:class:`ProxyMetrics` (and so one ``CollectorRegistry``): two proxies in one
process (tests) never share or collide, and nothing lands on the global
default registry. The admin API serves ``runtime.registry``.

The counters and histograms the data plane touches on every request are
:class:`HotCounter` and :class:`HotHistogram`: a plain dict entry per label
set, incremented without a lock or a child object (about a tenth of
``prometheus_client``'s ``labels().inc()``/``observe()``), exported through
the registry like the library's own (``<name>_total``; ``_bucket``/``_count``/``_sum``),
as the endpoint series already are.

    >>> m = ProxyMetrics()
    >>> m.request("r", "legacy", "legacy", 200, 0.001)
    >>> m.registry.get_sample_value("strangler_proxy_requests_total",
    ...     {"route": "r", "mode": "legacy", "upstream": "legacy", "status": "200", "cell": ""})
    1.0
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
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


class HotCounter(Collector):
    """A (labelled) counter as a dict of floats by label values; exported as ``<name>_total``.

        >>> r = CollectorRegistry()
        >>> c = HotCounter("hits", "Hits by route", ("route",), r)
        >>> c.inc(("a",)); c.inc(("a",)); c.inc(("b",), 3)
        >>> r.get_sample_value("hits_total", {"route": "a"}), r.get_sample_value("hits_total", {"route": "b"})
        (2.0, 3.0)
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}
        registry.register(self)

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> list[Any]:
        return [self._family()]

    def collect(self) -> Iterator[Any]:
        family = self._family()
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        yield family


class HotHistogram(Collector):
    """A labelled histogram as, per label values, one count per bucket (not cumulative)
    and the sum; exported as ``<name>_bucket``/``_count``/``_sum``.

        >>> r = CollectorRegistry()
        >>> h = HotHistogram("lat_seconds", "Latency", ("route",), (0.1, 1.0), r)
        >>> h.observe(("a",), 0.05); h.observe(("a",), 0.1); h.observe(("a",), 5.0)
        >>> [r.get_sample_value("lat_seconds_bucket", {"route": "a", "le": le}) for le in ("0.1", "1.0", "+Inf")]
        [2.0, 2.0, 3.0]
        >>> r.get_sample_value("lat_seconds_sum", {"route": "a"}), r.get_sample_value("lat_seconds_count", {"route": "a"})
        (5.15, 3.0)
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = tuple(buckets)  # finite, ascending; +Inf follows
        self._le = [str(b) for b in buckets] + ["+Inf"]
        self.series: dict[tuple[str, ...], list[float]] = {}  # counts per bound, +Inf's, then the sum
        registry.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, value)] += 1  # the first bound >= value ("le"); past them all: +Inf
        series[-1] += value

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> list[Any]:
        return [self._family()]

    def collect(self) -> Iterator[Any]:
        family = self._family()
        for labels, series in list(self.series.items()):
            cumulative, running = [], 0.0
            for le, count in zip(self._le, series, strict=False):  # the sum (last) is not a bucket
                running += count
                cumulative.append((le, running))
            family.add_metric(list(labels), cumulative, series[-1])
        yield family


class ProxyMetrics:
    """Every metric of the data plane (and the control plane's flip counters)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests_total = HotCounter(
            "strangler_proxy_requests", "Client requests by route, mode, serving upstream, status and cell "
            "(empty without cells)",
            ("route", "mode", "upstream", "status", "cell"), r)
        self.client_latency = HotHistogram(
            "strangler_proxy_client_latency_seconds", "Time from request to last response byte, per route and cell",
            ("route", "cell"), LATENCY_BUCKETS, r,
        )
        self.upstream_latency = HotHistogram(
            "strangler_proxy_upstream_latency_seconds",
            "Time to upstream response headers; side is legacy or target, path is served or shadow",
            ("route", "side", "path"), LATENCY_BUCKETS, r,
        )
        self.upstream_errors = HotCounter(
            "strangler_proxy_upstream_errors", "Upstream failures by kind (connect, timeout, reset)",
            ("upstream", "kind"), r)
        self.fallbacks = HotCounter(
            "strangler_proxy_fallbacks", "Safe requests served by legacy because the target failed", ("route",), r)
        self.shadow_queue_depth = Gauge(
            "strangler_shadow_queue_depth", "Mirrored requests waiting for a shadow worker", registry=r)
        self.shadow_submitted = HotCounter(
            "strangler_shadow_submitted", "Mirrored requests queued", ("route",), r)
        self.shadow_dropped = HotCounter(
            "strangler_shadow_dropped", "Mirrored requests dropped because the queue was full", ("route",), r)
        self.shadow_skipped = HotCounter(
            "strangler_shadow_skipped", "Requests not mirrored (body over the limit, ...)", ("route", "reason"), r)
        self.verdicts = HotCounter(
            "strangler_shadow_verdicts", "Comparison verdicts", ("route", "verdict"), r)
        self.listener_errors = HotCounter(
            "strangler_shadow_listener_errors", "Result listeners or comparators that raised", (), r)
        self.rechecks = HotCounter(
            "strangler_rechecks",
            "Mismatches on reads asked again, per result: transient, mismatch, error or over_budget (not asked)",
            ("route", "outcome"), r)
        # Used by the control plane.
        self.flips_total = HotCounter("strangler_flips", "Applied flips by route and new mode", ("route", "mode"), r)
        self.rollbacks_total = HotCounter("strangler_rollbacks", "Automatic rollbacks by route", ("route",), r)
        self.failovers_total = HotCounter(
            "strangler_failovers", "Operator failovers by upstream and the zone pinned to (auto: health decides)",
            ("upstream", "zone"), r)
        self.drains_total = HotCounter(
            "strangler_drains", "Operator drains and undrains of endpoints by upstream", ("upstream", "action"), r)

        # Upstream endpoints (the pools, dataplane/pool.py and health.py); per-endpoint
        # health, load and latency come from track_endpoints' collector.
        self.ejections = HotCounter(
            "strangler_endpoint_ejections", "Endpoints ejected by outlier detection (connect failures or 5xx in a row)",
            ("upstream", "endpoint"), r)
        self.retries = HotCounter(
            "strangler_upstream_retries", "Requests sent again to another endpoint of the upstream", ("upstream",), r)
        self.retry_budget_exhausted = HotCounter(
            "strangler_upstream_retry_budget_exhausted",
            "Retries not made because the upstream's retry budget was spent", ("upstream",), r)
        self._endpoints: _EndpointCollector | None = None

    # ------------------------------------------------------------ hot path
    def request(self, route: str, mode: str, upstream: str, status: int, duration_s: float, cell: str = "") -> None:
        """One client request; ``cell`` is one of the configured cells (bounded), or empty."""
        self.requests_total.inc((route, mode, upstream, str(status), cell))
        self.client_latency.observe((route, cell), duration_s)

    def upstream(self, route: str, side: str, path: str, latency_s: float) -> None:
        self.upstream_latency.observe((route, side, path), latency_s)

    @staticmethod
    def inc(metric: HotCounter, *labels: str) -> None:
        """Increment a labelled counter."""
        metric.inc(labels)

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
