"""Prometheus metrics of the GraphQL gateway, registered on the proxy's registry.

The proxy counts GraphQL requests like any route (route ``graphql``); what only
the gateway knows is measured here: every backend fetch (latency and failures
per backend, served path or shadow path), how answers were shaped (the compiled
projection or graphql-core), and what became of field shadows.

As in :mod:`strangler_proxy.metrics` (whose :class:`~strangler_proxy.metrics.HotCounter`
and :class:`~strangler_proxy.metrics.HotHistogram` these are), a count is a plain dict entry.

    >>> from prometheus_client import CollectorRegistry
    >>> m = GraphQLMetrics(CollectorRegistry())
    >>> m.fetch("ratings", "served", 0.002)
    >>> m.registry.get_sample_value("strangler_graphql_backend_fetch_seconds_count",
    ...     {"backend": "ratings", "path": "served"})
    1.0
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from strangler_proxy.metrics import HotCounter, HotHistogram

FETCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PATH_SERVED = "served"  # fetches whose answer the client gets
PATH_SHADOW = "shadow"  # fetches made only to compare


class GraphQLMetrics:
    """The gateway's collectors on one registry (the proxy runtime's, or a private one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.fetch_latency = HotHistogram(
            "strangler_graphql_backend_fetch_seconds",
            "GraphQL requests from the gateway to a backend, by backend and path (served or shadow)",
            ("backend", "path"), FETCH_BUCKETS, r,
        )
        self.fetch_errors = HotCounter(
            "strangler_graphql_backend_fetch_errors",
            "Backend fetches without a usable GraphQL answer (timeout, connection error, not GraphQL)",
            ("backend", "path", "reason"), r,
        )
        self.shaped = HotCounter(
            "strangler_graphql_shaped", "Answers by how they were shaped (compiled projection or graphql-core)",
            ("how",), r,
        )
        self.shadows = HotCounter(
            "strangler_graphql_shadows",
            "Field shadows by outcome: completed (compared and published), dropped (too many in flight), failed",
            ("field", "outcome"), r,
        )

    def fetch(self, backend: str, path: str, latency_s: float) -> None:
        self.fetch_latency.observe((backend, path), latency_s)

    @staticmethod
    def inc(metric: HotCounter, *labels: str, amount: float = 1) -> None:
        """Increment a labelled counter."""
        metric.inc(labels, amount)

    def fetch_error(self, backend: str, path: str, reason: str) -> None:
        self.inc(self.fetch_errors, backend, path, reason)

    def shadow(self, field: str, outcome: str, count: int = 1) -> None:
        self.inc(self.shadows, field, outcome, amount=count)
