"""The latency histogram: quantiles within a bin of the truth, merges exact."""

from __future__ import annotations

import random

import pytest

from strangler_proxy.store.histogram import BINS_PER_DOUBLING, LatencyHistogram, bin_bounds, bin_index, merge_all

BIN_RATIO = 2 ** (1 / BINS_PER_DOUBLING)


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    import math

    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_quantiles_are_within_one_bin_of_exact() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-4, 1) for _ in range(5000)]
    h = LatencyHistogram.of(values)
    for q in (0.5, 0.9, 0.99):
        got = h.quantile(q)
        assert got is not None
        assert _exact(values, q) / BIN_RATIO <= got <= _exact(values, q) * BIN_RATIO


def test_merge_across_buckets_equals_histogram_of_all() -> None:
    rng = random.Random(11)
    buckets = [[rng.uniform(0.001, 0.05) * (i + 1) for _ in range(300)] for i in range(5)]
    merged = merge_all(LatencyHistogram.of(b) for b in buckets)
    whole = LatencyHistogram.of([v for b in buckets for v in b])
    assert merged == whole
    assert merged.total == 1500
    # Pairwise merge is commutative and agrees with merge_all.
    a, b = LatencyHistogram.of(buckets[0]), LatencyHistogram.of(buckets[4])
    assert a.merged(b) == b.merged(a) == merge_all([a, b])
    # The merged p99 sits in the slowest bucket's range, which no single
    # faster bucket would report.
    assert merged.quantile(0.99) > max(buckets[3])


def test_json_round_trip_and_empty() -> None:
    h = LatencyHistogram.of([0.002, 0.002, 0.4])
    assert LatencyHistogram.from_json(h.to_json()) == h
    assert h.to_json()[-1] != 0  # trailing empty bins are not stored
    assert LatencyHistogram().quantile(0.5) is None
    assert LatencyHistogram.from_json(None).total == 0


@pytest.mark.parametrize("s", [0.0, 0.00005, 0.0001, 0.0123, 1.0, 99.0, 10_000.0])
def test_every_latency_lands_in_its_bin(s: float) -> None:
    low, high = bin_bounds(bin_index(s))
    assert low <= s < high or (s >= low and high == float("inf"))
