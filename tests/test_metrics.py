"""The hot-path counters and histograms: plain dict entries, exported exactly as Prometheus reads them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from strangler_proxy.metrics import LATENCY_BUCKETS, HotCounter, HotHistogram, ProxyMetrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's text exposition, parsed back."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_counter_exports_totals_per_label_set() -> None:
    r = CollectorRegistry()
    c = HotCounter("strangler_things", "Things by route", ("route",), r)
    for route in ("a", "a", "b"):
        c.inc((route,))
    c.inc(("b",), 2.5)
    got = samples(r)
    assert got[("strangler_things_total", (("route", "a"),))] == 2.0
    assert got[("strangler_things_total", (("route", "b"),))] == 3.5
    assert "# TYPE strangler_things_total counter" in generate_latest(r).decode()


def test_an_unlabelled_counter_is_zero_before_anything_happens() -> None:
    r = CollectorRegistry()
    HotCounter("strangler_errors", "Errors", (), r)
    assert samples(r) == {("strangler_errors_total", ()): 0.0}


def test_a_histogram_exports_cumulative_buckets_count_and_sum() -> None:
    r = CollectorRegistry()
    h = HotHistogram("strangler_lat_seconds", "Latency", ("route",), (0.001, 0.01, 0.1), r)
    for v in (0.0005, 0.001, 0.002, 0.05, 3.0):  # 0.001 is "le 0.001": bounds are inclusive
        h.observe(("a",), v)
    got = samples(r)

    def bucket(le: str) -> float:
        return got[("strangler_lat_seconds_bucket", (("le", le), ("route", "a")))]

    assert [bucket(le) for le in ("0.001", "0.01", "0.1", "+Inf")] == [2.0, 3.0, 4.0, 5.0]
    assert got[("strangler_lat_seconds_count", (("route", "a"),))] == 5.0
    assert got[("strangler_lat_seconds_sum", (("route", "a"),))] == pytest.approx(3.0535)


def test_a_name_cannot_be_registered_twice() -> None:
    r = CollectorRegistry()
    HotCounter("strangler_dup", "One", ("x",), r)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        HotCounter("strangler_dup", "Two", ("x",), r)


def test_the_proxys_request_metrics_read_back_through_the_registry() -> None:
    m = ProxyMetrics()
    m.request("ratings", "shadow", "legacy@c1", 200, 0.0007, "c1")
    m.request("ratings", "shadow", "legacy@c1", 200, 0.2, "c1")
    m.upstream("ratings", "legacy", "served", 0.0004)
    reg = m.registry
    assert reg.get_sample_value("strangler_proxy_requests_total", {
        "route": "ratings", "mode": "shadow", "upstream": "legacy@c1", "status": "200", "cell": "c1"}) == 2.0
    assert reg.get_sample_value("strangler_proxy_client_latency_seconds_bucket",
                                {"route": "ratings", "cell": "c1", "le": "0.001"}) == 1.0
    assert reg.get_sample_value("strangler_proxy_client_latency_seconds_bucket",
                                {"route": "ratings", "cell": "c1", "le": "+Inf"}) == 2.0
    assert reg.get_sample_value("strangler_proxy_upstream_latency_seconds_count",
                                {"route": "ratings", "side": "legacy", "path": "served"}) == 1.0
    assert len(LATENCY_BUCKETS) + 1 == sum(
        1 for s in samples(reg) if s[0] == "strangler_proxy_upstream_latency_seconds_bucket")
