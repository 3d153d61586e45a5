"""``ResultWriter``: shadow results to the store, in batches, off the hot path.

``observe`` (called by the shadow path for every result) only counts the
result into the batch in memory (one row per key and time bucket, one per key,
bucket and differing path, a bounded set of samples) -- when the batch holds
``max_buffer`` results the result is dropped and counted, never waited for. A
background task wakes every ``store.flush_interval_s`` or when
``store.batch_size`` results are waiting, takes the batch and writes it in ONE
transaction (aggregating as results come keeps the flush's share of the event
loop to the writing: no pass over hundreds of results in one go, which delayed
client requests queued behind it):

1. ``result_buckets``: upsert-add of the verdict counts (this also locks the
   rows, on PostgreSQL against other replicas), then the latency histograms
   merged bin by bin and written back;
2. ``diff_paths`` and ``noise``: upsert-add of counts;
3. ``samples``: at most ``store.samples_per_path`` new rows per key and path,
   then the older ones beyond that bound deleted.

Rows are written in sorted key order so that replicas sharing a PostgreSQL
database always lock in the same order and cannot deadlock.

A second task applies retention by age (``store.retention_days``) to samples,
buckets, paths and noise.

    writer = ResultWriter(engine, config.store, redaction=redactions_for(config))
    await writer.start()
    shadow_path.add_listener(writer)
    ...
    await writer.close()   # flushes what is left
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strangler_proxy.config import StoreSettings, StranglerConfig
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.redaction import Redaction, redactions_for
from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.errors import StoreError
from strangler_proxy.store.histogram import BIN_COUNT, bin_index
from strangler_proxy.store.models import (
    PATH_LENGTH,
    SOURCE_LEARNED,
    SOURCE_RULE,
    DiffPath,
    NoisePath,
    ResultBucket,
    Sample,
)
from strangler_proxy.store.samples import sample_row

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 50_000  # results held in memory before new ones are dropped
DEFAULT_RETENTION_INTERVAL_S = 600.0
VERDICT_COLUMN = {
    Verdict.MATCH: "match",
    Verdict.MISMATCH: "mismatch",
    Verdict.CANDIDATE_ERROR: "candidate_error",
    Verdict.LEGACY_ERROR: "legacy_error",
    Verdict.SKIPPED: "skipped",
    Verdict.SERVED: "served",
    Verdict.TRANSIENT: "transient",
}
COUNT_COLUMNS = tuple(VERDICT_COLUMN.values())
# Verdicts worth an example in the report; matches, SERVED and TRANSIENT are
# only counted (a served request has no legacy side to show; a transient one
# agreed when asked again). Candidate errors are
# sampled wherever they happened, served traffic included: the reason and
# status are what an operator needs.
_SAMPLED = frozenset({Verdict.MISMATCH, Verdict.CANDIDATE_ERROR, Verdict.LEGACY_ERROR})
_DAY_S = 86_400.0
_FLUSH_TASK = "results-flush"
_SOURCES = frozenset({SOURCE_LEARNED, SOURCE_RULE})


@dataclass
class WriterStats:
    """Counters of one writer (mutable on purpose: the writer updates them)."""

    observed: int = 0
    written: int = 0
    dropped: int = 0
    flushes: int = 0
    failed_flushes: int = 0
    pruned_samples: int = 0
    last_error: str | None = None


@dataclass
class _BucketAgg:
    counts: Counter[str] = field(default_factory=Counter)
    legacy: list[int] = field(default_factory=lambda: [0] * BIN_COUNT)
    candidate: list[int] = field(default_factory=lambda: [0] * BIN_COUNT)
    has_latency: bool = False


@dataclass
class _Batch:
    """One batch of results, aggregated the way it will be written."""

    buckets: dict[tuple[str, int], _BucketAgg] = field(default_factory=dict)
    paths: Counter[tuple[str, int, str, str]] = field(default_factory=Counter)
    noise: Counter[tuple[str, str]] = field(default_factory=Counter)
    noise_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    noise_source: dict[tuple[str, str], str] = field(default_factory=dict)
    samples: dict[tuple[str, str], deque[ShadowResult]] = field(default_factory=dict)


def _measured(latency_s: float | None) -> float | None:
    """The latency if it was measured. A round trip always takes some time:
    the data plane reports 0.0 for a served request that got no answer at all
    (connect error, timeout), which would drag the quantiles down."""
    return latency_s if latency_s is not None and latency_s > 0.0 else None


def _cut(path: str) -> str:
    return path if len(path) <= PATH_LENGTH else path[: PATH_LENGTH - 1] + "…"


def _insert(conn: AsyncConnection):  # type: ignore[no-untyped-def]
    # Both dialects offer INSERT .. ON CONFLICT DO UPDATE with `excluded`.
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class ResultWriter:
    """A :class:`~strangler_proxy.diff.result.ResultListener` that stores results.

    ``observe`` never blocks and never raises; writing happens in
    :meth:`flush`, called by the background task started with :meth:`start`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        settings: StoreSettings | None = None,
        *,
        redaction: Callable[[str], Redaction] | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        retention_interval_s: float = DEFAULT_RETENTION_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        owns_engine: bool = False,
    ) -> None:
        self.engine = engine
        self.settings = settings or StoreSettings()
        self._redaction = redaction or redactions_for(None)
        self._max_buffer = max_buffer
        self._retention_interval_s = retention_interval_s
        self._clock = clock
        self._owns_engine = owns_engine
        # Results are aggregated as they come (what a flush writes), so a flush on the
        # event loop only writes: no pass over hundreds of results in one go.
        self._batch = _Batch()
        self._pending = 0  # results in _batch
        self._wake: asyncio.Event | None = None
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.stats = WriterStats()

    @classmethod
    def for_config(cls, config: StranglerConfig, **kwargs: Any) -> ResultWriter:
        """A writer on the configured results database (owning its engine)."""
        engine = make_engine(config.control_database_url())
        return cls(engine, config.store, redaction=redactions_for(config), owns_engine=True, **kwargs)

    # ------------------------------------------------------------ hot path
    def observe(self, result: ShadowResult) -> None:
        self.stats.observed += 1
        if self._pending >= self._max_buffer:
            self.stats.dropped += 1
            return
        self._add(self._batch, result)
        self._pending += 1
        if self._pending >= self.settings.batch_size and self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Results observed and not written yet."""
        return self._pending

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name=_FLUSH_TASK),
            asyncio.create_task(self._retention_loop(), name="results-retention"),
        ]

    async def close(self) -> None:
        """Stop the tasks, write what is buffered, release the engine if owned."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        # The flush loop is let finish its current batch (cancelling it mid
        # transaction would lose the batch it already took from the buffer);
        # retention can be cancelled, its transaction just rolls back.
        flushers = [t for t in self._tasks if t.get_name() == _FLUSH_TASK]
        for task in self._tasks:
            if task not in flushers:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while self._pending:
            if not await self._flush_guarded():
                break
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> ResultWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _flush_loop(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.flush_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._pending:
                await self._flush_guarded()

    async def _retention_loop(self) -> None:
        while not self._closing:
            try:
                await self.apply_retention()
            except StoreError as exc:
                log.warning("results retention failed: %s", exc)
            await asyncio.sleep(self._retention_interval_s)

    async def _flush_guarded(self) -> bool:
        try:
            await self.flush()
        except StoreError as exc:
            # The batch is lost (counted); the proxy keeps serving regardless.
            log.warning("results flush failed: %s", exc)
            return False
        except Exception:  # a bug must not end the flush loop and let results pile up
            log.exception("results flush failed unexpectedly")
            self.stats.failed_flushes += 1
            return False
        return True

    # ------------------------------------------------------------ writing
    async def flush(self) -> int:
        """Write everything buffered now, in one transaction; the number written."""
        async with self._flush_lock:
            batch, count = self._batch, self._pending
            if not count:
                return 0
            self._batch, self._pending = _Batch(), 0
            try:
                async with self.engine.begin() as conn:
                    await self._write_buckets(conn, batch)
                    await self._write_paths(conn, batch)
                    await self._write_noise(conn, batch)
                    await self._write_samples(conn, batch)
            except (SQLAlchemyError, OSError) as exc:
                self.stats.failed_flushes += 1
                self.stats.last_error = str(exc)
                raise StoreError(f"writing {count} shadow results failed: {exc}") from exc
            self.stats.flushes += 1
            self.stats.written += count
            return count

    def _add(self, batch: _Batch, r: ShadowResult) -> None:
        """Count one result into ``batch`` the way it will be written."""
        bucket_s = self.settings.bucket_s
        keep = self.settings.samples_per_path
        start = int(r.at // bucket_s) * bucket_s
        agg = batch.buckets.get((r.key, start))
        if agg is None:
            agg = batch.buckets[(r.key, start)] = _BucketAgg()
        agg.counts[VERDICT_COLUMN[r.verdict]] += 1
        if r.verdict is not Verdict.SKIPPED:
            # SERVED results add to the candidate histogram on purpose: it
            # is the candidate's real latency under real load, and in
            # extracted mode without reverse shadow the only latency there is.
            if (legacy_s := _measured(r.legacy_latency_s)) is not None:
                agg.legacy[bin_index(legacy_s)] += 1
                agg.has_latency = True
            if (candidate_s := _measured(r.candidate_latency_s)) is not None:
                agg.candidate[bin_index(candidate_s)] += 1
                agg.has_latency = True
        # A transient result keeps the differences it first had (they are
        # evidence for listeners) but they are not differing paths of the key.
        if r.verdict is not Verdict.TRANSIENT:
            for path, kind in {(_cut(d.path), d.kind.value) for d in r.differences}:
                batch.paths[(r.key, start, path, kind)] += 1
        if r.noise:
            # The comparator says, per noise difference, whether a rule
            # (compare.ignore) or learning explained it.
            sources = r.extra.get("noise_sources") or ()
            counted: set[str] = set()
            for i, d in enumerate(r.noise):
                path = _cut(d.path)
                if path in counted:
                    continue
                counted.add(path)
                nk = (r.key, path)
                batch.noise[nk] += 1
                batch.noise_seen[nk] = max(batch.noise_seen.get(nk, 0.0), r.at)
                src = sources[i] if i < len(sources) and sources[i] in _SOURCES else SOURCE_LEARNED
                batch.noise_source.setdefault(nk, src)
        if keep and r.verdict in _SAMPLED:
            spath = _cut(r.differences[0].path) if r.differences else f"<{r.verdict.value}>"
            q = batch.samples.get((r.key, spath))
            if q is None:
                q = batch.samples[(r.key, spath)] = deque(maxlen=keep)
            q.append(r)

    async def _write_buckets(self, conn: AsyncConnection, batch: _Batch) -> None:
        table = ResultBucket.__table__
        ins = _insert(conn)(table)
        stmt = ins.on_conflict_do_update(
            index_elements=["key", "bucket_start"],
            set_={c: table.c[c] + ins.excluded[c] for c in COUNT_COLUMNS},
        )
        order = sorted(batch.buckets)
        rows = [
            {"key": k, "bucket_start": b, "legacy_latency": "[]", "candidate_latency": "[]"}
            | {c: batch.buckets[(k, b)].counts.get(c, 0) for c in COUNT_COLUMNS}
            for k, b in order
        ]
        await conn.execute(stmt, rows)
        # The rows are ours now (locked until commit): merge the histograms.
        with_latency = [kb for kb in order if batch.buckets[kb].has_latency]
        if not with_latency:
            return
        keys = {k for k, _ in with_latency}
        starts = {b for _, b in with_latency}
        found = await conn.execute(
            select(table.c.key, table.c.bucket_start, table.c.legacy_latency, table.c.candidate_latency).where(
                table.c.key.in_(keys), table.c.bucket_start.in_(starts)
            )
        )
        stored = {(k, b): (leg, cand) for k, b, leg, cand in found}
        updates = []
        for kb in with_latency:
            agg = batch.buckets[kb]
            leg, cand = stored.get(kb, ("[]", "[]"))
            updates.append(
                {
                    "b_key": kb[0],
                    "b_start": kb[1],
                    "b_legacy": _merged_json(leg, agg.legacy),
                    "b_candidate": _merged_json(cand, agg.candidate),
                }
            )
        await conn.execute(
            update(table)
            .where(table.c.key == bindparam("b_key"), table.c.bucket_start == bindparam("b_start"))
            .values(legacy_latency=bindparam("b_legacy"), candidate_latency=bindparam("b_candidate")),
            updates,
        )

    async def _write_paths(self, conn: AsyncConnection, batch: _Batch) -> None:
        if not batch.paths:
            return
        table = DiffPath.__table__
        ins = _insert(conn)(table)
        stmt = ins.on_conflict_do_update(
            index_elements=["key", "bucket_start", "path", "kind"],
            set_={"count": table.c["count"] + ins.excluded["count"]},
        )
        rows = [
            {"key": k, "bucket_start": b, "path": p, "kind": kind, "count": n}
            for (k, b, p, kind), n in sorted(batch.paths.items())
        ]
        await conn.execute(stmt, rows)

    async def _write_noise(self, conn: AsyncConnection, batch: _Batch) -> None:
        if not batch.noise:
            return
        table = NoisePath.__table__
        ins = _insert(conn)(table)
        stmt = ins.on_conflict_do_update(
            index_elements=["key", "path"],
            set_={"count": table.c["count"] + ins.excluded["count"], "last_seen": ins.excluded.last_seen},
        )
        rows = [
            {"key": k, "path": p, "count": n, "source": batch.noise_source[(k, p)], "last_seen": batch.noise_seen[(k, p)]}
            for (k, p), n in sorted(batch.noise.items())
        ]
        await conn.execute(stmt, rows)

    async def _write_samples(self, conn: AsyncConnection, batch: _Batch) -> None:
        if not batch.samples:
            return
        table = Sample.__table__
        rows = [sample_row(r, path, self._redaction(r.key), self.settings.body_limit) for (_, path), q in sorted(batch.samples.items()) for r in q]
        await conn.execute(table.insert(), rows)
        # Retention by count: keep only the newest N per key and path.
        newest = (
            select(table.c.id)
            .where(table.c.key == bindparam("p_key"), table.c.path == bindparam("p_path"))
            .order_by(table.c.at.desc(), table.c.id.desc())
            .limit(self.settings.samples_per_path)
        )
        # SQLite and PostgreSQL both accept LIMIT inside IN (...); wrapping it
        # in a derived table keeps it portable to stricter databases too.
        keep = select(newest.subquery().c.id)
        result = await conn.execute(
            delete(table).where(
                table.c.key == bindparam("p_key"), table.c.path == bindparam("p_path"), table.c.id.not_in(keep)
            ),
            [{"p_key": k, "p_path": p} for k, p in sorted(batch.samples)],
        )
        self.stats.pruned_samples += max(result.rowcount or 0, 0)

    # ------------------------------------------------------------ retention
    async def apply_retention(self, now: float | None = None) -> int:
        """Delete samples, buckets, paths and noise older than
        ``retention_days``; the number of samples deleted."""
        cutoff = (self._clock() if now is None else now) - self.settings.retention_days * _DAY_S
        try:
            async with self.engine.begin() as conn:
                gone = await conn.execute(delete(Sample.__table__).where(Sample.__table__.c.at < cutoff))
                for table in (ResultBucket.__table__, DiffPath.__table__):
                    await conn.execute(delete(table).where(table.c.bucket_start < cutoff))
                await conn.execute(delete(NoisePath.__table__).where(NoisePath.__table__.c.last_seen < cutoff))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"applying results retention failed: {exc}") from exc
        return max(gone.rowcount or 0, 0)


def _merged_json(stored: str, added: list[int]) -> str:
    old = orjson.loads(stored) if stored else []
    merged = [a + (old[i] if i < len(old) else 0) for i, a in enumerate(added)]
    end = len(merged)
    while end and merged[end - 1] == 0:
        end -= 1
    return orjson.dumps(merged[:end]).decode()
