"""What reports read from the results store.

Everything is computed from the per-bucket aggregates, never from raw results,
so a report over millions of results reads a few thousand rows: counts are
summed in SQL, latency histograms merged bin by bin in Python, and the time
line is the buckets grouped into at most ``points`` chart points.

    reader = ResultsReader(engine)
    for summary in await reader.summaries():
        print(summary.key, summary.counts.mismatch, summary.candidate_latency.quantile(0.99))

Several stored keys can be summarized as one: ``group`` maps each to the key it
counts under -- the cells' keys of a route (``ratings@c1``, ``ratings@c2``) to
the route (``ratings``), with paths and noise merged exactly, not from the top N.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from strangler_proxy.config import DEFAULT_BUCKET_S
from strangler_proxy.errors import StoreError
from strangler_proxy.store.counts import VerdictCounts
from strangler_proxy.store.histogram import LatencyHistogram, merge_all
from strangler_proxy.store.models import DiffPath, NoisePath, ResultBucket, Sample

DEFAULT_TOP_PATHS = 10
DEFAULT_TIMELINE_POINTS = 48
DEFAULT_SAMPLES_PER_KEY = 3
_B = ResultBucket.__table__
_P = DiffPath.__table__
_N = NoisePath.__table__
_S = Sample.__table__


@dataclass(frozen=True, slots=True)
class PathCount:
    path: str
    kind: str
    count: int


@dataclass(frozen=True, slots=True)
class NoiseEntry:
    path: str
    count: int
    source: str


@dataclass(frozen=True, slots=True)
class TimePoint:
    """Aggregates of consecutive buckets, for one chart point."""

    start: int
    end: int
    counts: VerdictCounts
    legacy_latency: LatencyHistogram
    candidate_latency: LatencyHistogram


@dataclass(frozen=True, slots=True)
class StoredSample:
    key: str
    path: str
    at: float
    verdict: str
    method: str
    target: str
    legacy_status: int | None
    candidate_status: int | None
    legacy_latency_s: float | None
    candidate_latency_s: float | None
    reason: str | None
    differences: tuple[dict[str, Any], ...]
    legacy_body: bytes | None
    candidate_body: bytes | None


@dataclass(frozen=True, slots=True)
class KeySummary:
    """Everything the store knows about one key, aggregated."""

    key: str
    counts: VerdictCounts
    legacy_latency: LatencyHistogram
    candidate_latency: LatencyHistogram
    first_bucket: int
    last_bucket: int
    top_paths: tuple[PathCount, ...]
    distinct_paths: int
    noise: tuple[NoiseEntry, ...]
    timeline: tuple[TimePoint, ...]


def empty_summary(key: str) -> KeySummary:
    """The summary of a key with no stored results."""
    return KeySummary(key, VerdictCounts(), LatencyHistogram(), LatencyHistogram(), 0, 0, (), 0, (), ())


def _counts(row: Any) -> VerdictCounts:
    return VerdictCounts(
        int(row.match or 0),
        int(row.mismatch or 0),
        int(row.candidate_error or 0),
        int(row.legacy_error or 0),
        int(row.skipped or 0),
        int(row.served or 0),
        int(row.transient or 0),
    )


def _hist(text: str | None) -> LatencyHistogram:
    return LatencyHistogram.from_json(orjson.loads(text) if text else None)


class ResultsReader:
    """Read-only queries over the results store."""

    def __init__(self, engine: AsyncEngine, bucket_s: int = DEFAULT_BUCKET_S) -> None:
        self.engine = engine
        self.bucket_s = bucket_s  # the writer's store.bucket_s: how wide one stored bucket is

    async def has_tables(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open the results store: {exc}") from exc
        return {"result_buckets", "diff_paths", "samples", "noise"} <= names

    async def keys(self, since: float | None = None) -> list[str]:
        """Every key with results (in buckets starting at or after ``since``), sorted."""
        q = select(_B.c.key).distinct()
        if since is not None:
            q = q.where(_B.c.bucket_start >= since)
        try:
            async with self.engine.connect() as conn:
                return sorted(str(k) for k in (await conn.scalars(q)).all())
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"reading the results store failed: {exc}") from exc

    async def summaries(
        self,
        keys: list[str] | None = None,
        *,
        top_paths: int = DEFAULT_TOP_PATHS,
        timeline_points: int = DEFAULT_TIMELINE_POINTS,
        since: float | None = None,
        group: Callable[[str], str] | None = None,
    ) -> list[KeySummary]:
        """One summary per key that has results (all keys, or the named ones),
        sorted by key. ``since`` (epoch seconds) keeps the time buckets that
        start at or after it -- bucket granularity, ``store.bucket_s``.
        ``group``: the key each stored key is summarized under (default: itself)."""
        try:
            return await self._summaries(keys, top_paths, timeline_points, since, group or _itself)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"reading the results store failed: {exc}") from exc

    async def _summaries(
        self, keys: list[str] | None, top_n: int, points: int, since: float | None, group: Callable[[str], str]
    ) -> list[KeySummary]:
        async with self.engine.connect() as conn:
            q = select(
                _B.c.key,
                _B.c.bucket_start,
                _B.c.match,
                _B.c.mismatch,
                _B.c.candidate_error,
                _B.c.legacy_error,
                _B.c.skipped,
                _B.c.served,
                _B.c.transient,
                _B.c.legacy_latency,
                _B.c.candidate_latency,
            ).order_by(_B.c.key, _B.c.bucket_start)
            if keys is not None:
                q = q.where(_B.c.key.in_(keys))
            if since is not None:
                q = q.where(_B.c.bucket_start >= since)
            per_key: dict[str, list[tuple[int, VerdictCounts, LatencyHistogram, LatencyHistogram]]] = defaultdict(list)
            for row in await conn.execute(q):
                per_key[group(row.key)].append(
                    (int(row.bucket_start), _counts(row), _hist(row.legacy_latency), _hist(row.candidate_latency))
                )
            pq = select(_P.c.key, _P.c.path, _P.c.kind, func.sum(_P.c["count"]).label("n")).group_by(
                _P.c.key, _P.c.path, _P.c.kind
            )
            nq = select(_N.c.key, _N.c.path, _N.c["count"], _N.c.source)
            if keys is not None:
                pq = pq.where(_P.c.key.in_(keys))
                nq = nq.where(_N.c.key.in_(keys))
            if since is not None:
                pq = pq.where(_P.c.bucket_start >= since)
                nq = nq.where(_N.c.last_seen >= since)  # noise still seen since then (counts are all-time)
            path_counts: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
            for row in await conn.execute(pq):
                path_counts[group(row.key)][(row.path, row.kind)] += int(row.n)
            noise_counts: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
            for row in await conn.execute(nq):
                noise_counts[group(row.key)][(row.path, row.source)] += int(row.count)
        paths = {k: [PathCount(p, kind, n) for (p, kind), n in v.items()] for k, v in path_counts.items()}
        noise = {k: [NoiseEntry(p, n, source) for (p, source), n in v.items()] for k, v in noise_counts.items()}
        out = []
        for key in sorted(per_key):
            rows = sorted(per_key[key], key=lambda r: r[0])  # grouped keys interleave their buckets
            ranked = sorted(paths.get(key, []), key=lambda p: (-p.count, p.path, p.kind))
            out.append(
                KeySummary(
                    key=key,
                    counts=sum((r[1] for r in rows), VerdictCounts()),
                    legacy_latency=merge_all(r[2] for r in rows),
                    candidate_latency=merge_all(r[3] for r in rows),
                    first_bucket=rows[0][0],
                    last_bucket=rows[-1][0],
                    top_paths=tuple(ranked[:top_n]),
                    distinct_paths=len({p.path for p in ranked}),
                    noise=tuple(sorted(noise.get(key, []), key=lambda e: (-e.count, e.path))),
                    timeline=_timeline(rows, points, self.bucket_s),
                )
            )
        return out

    async def samples(
        self, key: str | Sequence[str], limit: int = DEFAULT_SAMPLES_PER_KEY, since: float | None = None
    ) -> list[StoredSample]:
        """The newest stored examples of a key (or of any of several: a route's cells),
        one per differing path first."""
        q = select(_S).where(_S.c.key == key if isinstance(key, str) else _S.c.key.in_(list(key)))
        if since is not None:
            q = q.where(_S.c.at >= since)
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(q.order_by(_S.c.at.desc(), _S.c.id.desc()).limit(limit * 20))).all()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"reading samples of {key!r} failed: {exc}") from exc
        # Prefer variety: the newest example of each path, then more of the same.
        first: list[Any] = []
        rest: list[Any] = []
        seen: set[str] = set()
        for row in rows:
            (rest if row.path in seen else first).append(row)
            seen.add(row.path)
        return [
            StoredSample(
                key=row.key,
                path=row.path,
                at=row.at,
                verdict=row.verdict,
                method=row.method,
                target=row.target,
                legacy_status=row.legacy_status,
                candidate_status=row.candidate_status,
                legacy_latency_s=row.legacy_latency_s,
                candidate_latency_s=row.candidate_latency_s,
                reason=row.reason,
                differences=tuple(orjson.loads(row.differences or "[]")),
                legacy_body=row.legacy_body,
                candidate_body=row.candidate_body,
            )
            for row in (first + rest)[:limit]
        ]


def _itself(key: str) -> str:
    return key


def _timeline(
    rows: list[tuple[int, VerdictCounts, LatencyHistogram, LatencyHistogram]], points: int, bucket_s: int
) -> tuple[TimePoint, ...]:
    """Group consecutive buckets into at most ``points`` equal time spans, each a
    whole number of buckets wide (a span ends where its last bucket ends)."""
    if not rows:
        return ()
    first, last = rows[0][0], rows[-1][0]
    buckets = (last - first) // bucket_s + 1
    span = -(-buckets // max(1, points)) * bucket_s  # ceil(buckets / points) buckets
    groups: dict[int, list[tuple[int, VerdictCounts, LatencyHistogram, LatencyHistogram]]] = defaultdict(list)
    for r in rows:
        groups[(r[0] - first) // span].append(r)
    return tuple(
        TimePoint(
            start=first + i * span,
            end=first + (i + 1) * span,
            counts=sum((r[1] for r in g), VerdictCounts()),
            legacy_latency=merge_all(r[2] for r in g),
            candidate_latency=merge_all(r[3] for r in g),
        )
        for i, g in sorted(groups.items())
    )
