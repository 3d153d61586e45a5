"""A mergeable latency histogram with fixed, log-spaced bins.

Every histogram everywhere uses the same bin edges, so two histograms -- of two
time buckets, or of two proxy replicas -- merge by adding their counts bin by
bin, and a quantile of the merge is as good as a quantile of the raw samples up
to the bin width (about 9 % relative error: 8 bins per doubling).

    >>> h = LatencyHistogram.of([0.010] * 99 + [0.500])
    >>> round(h.quantile(0.5) * 1000)
    10
    >>> round(h.merged(LatencyHistogram.of([0.500] * 100)).quantile(0.99), 1)
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Bin 0 holds everything below MIN_LATENCY_S; the last bin everything above
# the covered range. 8 bins per doubling from 0.1 ms over 21 doublings reach
# ~210 s, which is beyond any upstream timeout we allow.
MIN_LATENCY_S = 1e-4
BINS_PER_DOUBLING = 8
DOUBLINGS = 21
BIN_COUNT = BINS_PER_DOUBLING * DOUBLINGS + 2


def bin_index(latency_s: float) -> int:
    """The bin a latency falls into."""
    if latency_s < MIN_LATENCY_S or math.isnan(latency_s):
        return 0
    i = 1 + int(math.log2(latency_s / MIN_LATENCY_S) * BINS_PER_DOUBLING)
    return min(i, BIN_COUNT - 1)


def bin_bounds(index: int) -> tuple[float, float]:
    """The [low, high) latency range of a bin, in seconds."""
    if index <= 0:
        return (0.0, MIN_LATENCY_S)
    low = MIN_LATENCY_S * 2 ** ((index - 1) / BINS_PER_DOUBLING)
    if index >= BIN_COUNT - 1:
        return (low, math.inf)
    return (low, MIN_LATENCY_S * 2 ** (index / BINS_PER_DOUBLING))


def _representative(index: int) -> float:
    # The geometric middle of the bin: the error is symmetric in ratio terms.
    low, high = bin_bounds(index)
    if index <= 0:
        return MIN_LATENCY_S / 2
    if math.isinf(high):
        return low
    return math.sqrt(low * high)


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Counts per bin; immutable. ``counts`` may be shorter than ``BIN_COUNT``
    (trailing empty bins are dropped when stored)."""

    counts: tuple[int, ...] = ()

    @classmethod
    def of(cls, latencies: Iterable[float]) -> LatencyHistogram:
        counts = [0] * BIN_COUNT
        for s in latencies:
            counts[bin_index(s)] += 1
        return cls(tuple(counts)).trimmed()

    @classmethod
    def from_json(cls, data: Sequence[int] | None) -> LatencyHistogram:
        if not data:
            return cls()
        return cls(tuple(int(c) for c in data[:BIN_COUNT]))

    def to_json(self) -> list[int]:
        return list(self.trimmed().counts)

    def trimmed(self) -> LatencyHistogram:
        end = len(self.counts)
        while end and self.counts[end - 1] == 0:
            end -= 1
        return self if end == len(self.counts) else LatencyHistogram(self.counts[:end])

    @property
    def total(self) -> int:
        return sum(self.counts)

    def merged(self, other: LatencyHistogram) -> LatencyHistogram:
        a, b = self.counts, other.counts
        if len(a) < len(b):
            a, b = b, a
        return LatencyHistogram(tuple(x + (b[i] if i < len(b) else 0) for i, x in enumerate(a)))

    def quantile(self, q: float) -> float | None:
        """The latency (seconds) below which a fraction ``q`` of samples fall;
        ``None`` when the histogram is empty."""
        total = self.total
        if total == 0:
            return None
        # The rank of the q-th sample (1-based, nearest-rank definition).
        rank = max(1, math.ceil(q * total))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return _representative(i)
        return _representative(len(self.counts) - 1)


def merge_all(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    """Sum of many histograms (of buckets or replicas)."""
    counts = [0] * BIN_COUNT
    for h in histograms:
        for i, c in enumerate(h.counts):
            counts[i] += c
    return LatencyHistogram(tuple(counts)).trimmed()
