"""The results store: where shadow results go and what reports read.

Public surface:

- :class:`ResultWriter` -- a ``ResultListener`` that buffers results and
  writes them in batches (aggregates per key and time bucket, bounded raw
  samples, retention by age and count);
- :class:`ResultsReader` and its value types (:class:`KeySummary`,
  :class:`TimePoint`, :class:`StoredSample`, :class:`PathCount`,
  :class:`NoiseEntry`) -- the queries reports are built from;
- :class:`LatencyHistogram` -- the mergeable latency histogram;
- :data:`RESULTS_METADATA` -- the tables (alembic env: migrations/results).
"""

from strangler_proxy.store.histogram import LatencyHistogram
from strangler_proxy.store.models import RESULTS_METADATA
from strangler_proxy.store.queries import (
    KeySummary,
    NoiseEntry,
    PathCount,
    ResultsReader,
    StoredSample,
    TimePoint,
)
from strangler_proxy.store.writer import ResultWriter, WriterStats

__all__ = [
    "RESULTS_METADATA",
    "KeySummary",
    "LatencyHistogram",
    "NoiseEntry",
    "PathCount",
    "ResultWriter",
    "ResultsReader",
    "StoredSample",
    "TimePoint",
    "WriterStats",
]
