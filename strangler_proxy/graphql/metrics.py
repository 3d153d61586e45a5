"""Prometheus metrics of the GraphQL gateway, registered on the proxy's registry.

The proxy counts GraphQL requests like any route (route ``graphql``); what only
the gateway knows is measured here: every backend fetch (latency and failures
per backend, served path or shadow path), how answers were shaped (the compiled
projection or graphql-core), and what became of field shadows.

As in :mod:`strangler_proxy.metrics`, the hot path never calls ``.labels()``:
children are created once per label set and cached.

    >>> from prometheus_client import CollectorRegistry
    >>> m = GraphQLMetrics(CollectorRegistry())
    >>> m.fetch("ratings", "served", 0.002)
    >>> m.registry.get_sample_value("strangler_graphql_backend_fetch_seconds_count",
    ...     {"backend": "ratings", "path": "served"})
    1.0
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

FETCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PATH_SERVED = "served"  # fetches whose answer the client gets
PATH_SHADOW = "shadow"  # fetches made only to compare


class GraphQLMetrics:
    """The gateway's collectors on one registry (the proxy runtime's, or a private one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.fetch_latency = Histogram(
            "strangler_graphql_backend_fetch_seconds",
            "GraphQL requests from the gateway to a backend, by backend and path (served or shadow)",
            ("backend", "path"), buckets=FETCH_BUCKETS, registry=r,
        )
        self.fetch_errors = Counter(
            "strangler_graphql_backend_fetch_errors",
            "Backend fetches without a usable GraphQL answer (timeout, connection error, not GraphQL)",
            ("backend", "path", "reason"), registry=r,
        )
        self.shaped = Counter(
            "strangler_graphql_shaped", "Answers by how they were shaped (compiled projection or graphql-core)",
            ("how",), registry=r,
        )
        self.shadows = Counter(
            "strangler_graphql_shadows",
            "Field shadows by outcome: completed (compared and published), dropped (too many in flight), failed",
            ("field", "outcome"), registry=r,
        )
        self._latency: dict[tuple[str, str], Any] = {}
        self._simple: dict[tuple[int, tuple[str, ...]], Any] = {}

    def fetch(self, backend: str, path: str, latency_s: float) -> None:
        key = (backend, path)
        hist = self._latency.get(key)
        if hist is None:
            hist = self._latency[key] = self.fetch_latency.labels(backend, path)
        hist.observe(latency_s)

    def inc(self, metric: Counter, *labels: str, amount: float = 1) -> None:
        """Increment a labelled counter through the child cache."""
        key = (id(metric), labels)
        child = self._simple.get(key)
        if child is None:
            child = self._simple[key] = metric.labels(*labels)
        child.inc(amount)

    def fetch_error(self, backend: str, path: str, reason: str) -> None:
        self.inc(self.fetch_errors, backend, path, reason)

    def shadow(self, field: str, outcome: str, count: int = 1) -> None:
        self.inc(self.shadows, field, outcome, amount=count)
