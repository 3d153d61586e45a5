"""Drain a transactional outbox into another database: in order, at least
once, with exactly-once effect.

The writer (the monolith; after cut-over, the ratings service) appends one
``outbox`` row per change in the same transaction as the change. A
:class:`SyncWorker` reads rows after its cursor in id order, applies each with
the stream's idempotent *applier* for that entity (upserts and deletes of
whole rows), and moves the cursor **in the same transaction** as the applied
changes -- so a worker killed at any point resumes exactly after the last
batch that committed: nothing lost, nothing applied twice.

Order per entity follows from applying in id order. On PostgreSQL ids can
commit out of order (a transaction holding id 7 may commit after the one
holding id 8) unless the writers serialise their outbox inserts, so the
worker applies only the contiguous run of ids after its cursor and waits for
a hole to fill; a hole still open after the stream's ``gap_grace_s`` is an id
whose transaction rolled back, and is skipped.

Lag -- seconds from the outbox row's ``created_at`` to its application -- is
observed into the ``strangler_sync_lag_seconds`` histogram.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from sqlalchemy import ColumnElement, Executable, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strangler_proxy.datamove.upsert import catch_up_serial, upsert_rows
from strangler_proxy.errors import DataMoveError

DEFAULT_SYNC_BATCH = 500
DEFAULT_POLL_INTERVAL_S = 0.05
DEFAULT_GAP_GRACE_S = 2.0
LAG_WINDOW = 10_000  # recent lags kept for percentiles

log = logging.getLogger(__name__)

def _metric(cls: Any, name: str, doc: str, **kwargs: Any) -> Any:
    """One collector per process, even if this module is imported twice
    (doctest collection imports modules under a second name)."""
    try:
        return cls(name, doc, ["service", "stream"], **kwargs)
    except ValueError:
        return REGISTRY._names_to_collectors[name]  # noqa: SLF001 - the registry has no public lookup


SYNC_LAG = _metric(
    Histogram,
    "strangler_sync_lag_seconds",
    "Seconds from an outbox row's created_at to its application",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
SYNC_LAST_LAG = _metric(Gauge, "strangler_sync_last_lag_seconds", "Lag of the last applied change")
SYNC_APPLIED = _metric(Counter, "strangler_sync_applied_total", "Outbox rows applied")
SYNC_PENDING = _metric(Gauge, "strangler_sync_pending_rows", "Outbox rows not yet applied")

@dataclass(frozen=True)
class Change:
    """One outbox row."""

    id: int
    entity: str
    entity_id: str
    op: str  # "upsert" | "delete"
    payload: dict[str, Any]
    created_at: datetime


Applier = Callable[[AsyncConnection, Change], Awaitable[None]]


def row_applier(
    table: Table,
    key: str = "id",
    *,
    delete_where: Callable[[str], ColumnElement[bool]] | None = None,
    before_upsert: Callable[[dict[str, Any]], Executable] | None = None,
) -> Applier:
    """The usual applier: ``upsert`` writes the payload's columns (those the
    table has) as the row; ``delete`` removes the row named by the entity id
    (``delete_where(entity_id)``, by default ``key == entity_id``).
    ``before_upsert(row)`` may clear a row that would clash on another unique key."""
    columns = [c.name for c in table.columns]

    async def apply(conn: AsyncConnection, change: Change) -> None:
        if change.op == "delete":
            where = delete_where(change.entity_id) if delete_where else table.c[key] == _coerce(table, key, change.entity_id)
            await conn.execute(table.delete().where(where))
            return
        if change.op != "upsert":
            raise DataMoveError(f"outbox row {change.id}: unknown op {change.op!r}", service=table.name)
        row = {c: _coerce(table, c, change.payload[c]) for c in columns if c in change.payload}
        if key not in row:
            row[key] = _coerce(table, key, change.entity_id)
        if before_upsert is not None:
            await conn.execute(before_upsert(row))
        await upsert_rows(conn, table, [row])

    return apply


@dataclass(frozen=True)
class Stream:
    """One outbox drained into one database by a set of appliers."""

    name: str
    outbox: Table  # in the source database
    state: Table  # sync_state, in the target database
    appliers: Mapping[str, Applier]  # entity -> applier; other entities are skipped
    # The database whose outbox this drains (a name for databases.database_url):
    # the monolith's, or a service's -- credits also follows the ratings
    # service, which is where votes happen once their routes are extracted.
    source: str = "monolith"
    # Tables written with the source's ids: their PostgreSQL serials are moved
    # past those ids after each batch, so the target's own inserts never collide.
    serial_tables: tuple[Table, ...] = ()
    # How long a hole in the ids is waited for. Writers that serialise their
    # outbox inserts until commit (both of ours take an advisory lock on
    # PostgreSQL; SQLite has one writer) can only leave holes by rolling back,
    # so their streams set 0 and skip holes at once -- a rolled-back dry run
    # must not stall the stream.
    gap_grace_s: float = DEFAULT_GAP_GRACE_S


class SyncWorker:
    """Applies one stream; :meth:`run_once` for one batch, :meth:`run` until stopped."""

    def __init__(
        self,
        service: str,
        stream: Stream,
        source: AsyncEngine,
        target: AsyncEngine,
        *,
        batch_size: int = DEFAULT_SYNC_BATCH,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        gap_grace_s: float | None = None,
    ) -> None:
        self.service = service
        self.stream = stream
        self.source = source
        self.target = target
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.gap_grace_s = stream.gap_grace_s if gap_grace_s is None else gap_grace_s
        self.lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._gap_since: float | None = None
        labels = {"service": service, "stream": stream.name}
        self._lag_hist = SYNC_LAG.labels(**labels)
        self._last_lag = SYNC_LAST_LAG.labels(**labels)
        self._applied = SYNC_APPLIED.labels(**labels)
        self._pending = SYNC_PENDING.labels(**labels)

    async def prepare(self) -> None:
        """Make sure the cursor table exists (the reverse stream keeps its
        cursor in the monolith's database, which no service migration owns)."""
        async with self.target.begin() as conn:
            await conn.run_sync(lambda sync_conn: self.stream.state.create(sync_conn, checkfirst=True))

    async def cursor(self) -> int:
        st = self.stream.state
        async with self.target.connect() as conn:
            got = (await conn.execute(select(st.c.last_id).where(st.c.stream == self.stream.name))).scalar()
        return int(got or 0)

    async def run_once(self) -> int:
        """Apply at most one batch; return how many outbox rows were applied."""
        last = await self.cursor()
        ob = self.stream.outbox
        async with self.source.connect() as src:
            rows = (
                await src.execute(select(ob).where(ob.c.id > last).order_by(ob.c.id).limit(self.batch_size))
            ).all()
            newest = (await src.execute(select(func.max(ob.c.id)))).scalar()
        self._pending.set(max(0, int(newest or 0) - last))
        batch = self._contiguous(last, rows)
        if not batch:
            return 0
        changes = [_change(r) for r in batch]
        async with self.target.begin() as dst:
            for ch in changes:
                applier = self.stream.appliers.get(ch.entity)
                if applier is not None:
                    await applier(dst, ch)
            for table in self.stream.serial_tables:
                await catch_up_serial(dst, table)
            await self._move_cursor(dst, changes[-1].id, len(changes))
        now = time.time()
        for ch in changes:
            lag = max(0.0, now - ch.created_at.replace(tzinfo=UTC).timestamp())
            self._lag_hist.observe(lag)
            self.lags.append(lag)
        self._last_lag.set(self.lags[-1])
        self._applied.inc(len(changes))
        self._pending.set(max(0, int(newest or 0) - changes[-1].id))
        return len(changes)

    async def drain(self) -> int:
        """Apply batches until nothing is left; return the total applied."""
        total = 0
        while n := await self.run_once():
            total += n
        return total

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until ``stop`` is set; a failing batch is logged and retried."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                n = await self.run_once()
            except Exception:  # noqa: BLE001 - keep draining after a transient failure
                log.exception("sync %s/%s: batch failed; retrying", self.service, self.stream.name)
                n = 0
            if n < self.batch_size:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval_s)
                except TimeoutError:
                    pass

    def lag_percentile(self, p: float) -> float | None:
        if not self.lags:
            return None
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    # --------------------------------------------------------------- inner
    def _contiguous(self, last: int, rows: list[Any]) -> list[Any]:
        """The rows up to the first id gap (see the module docstring)."""
        out = []
        expected = last + 1
        for r in rows:
            if r.id != expected:
                if self._gap_since is None:
                    self._gap_since = time.monotonic()
                if time.monotonic() - self._gap_since < self.gap_grace_s:
                    break
                log.warning("sync %s: outbox ids %d..%d never appeared; skipping", self.service, expected, r.id - 1)
            self._gap_since = None
            out.append(r)
            expected = r.id + 1
        return out

    async def _move_cursor(self, conn: AsyncConnection, last_id: int, n: int) -> None:
        st = self.stream.state
        updated = await conn.execute(
            st.update()
            .where(st.c.stream == self.stream.name)
            .values(last_id=last_id, applied=st.c.applied + n, updated_at=_utcnow())
        )
        if updated.rowcount == 0:
            await conn.execute(
                st.insert().values(stream=self.stream.name, last_id=last_id, applied=n, updated_at=_utcnow())
            )


async def mark_start(stream: Stream, source: AsyncEngine, target: AsyncEngine) -> int | None:
    """Before a backfill: if the stream has no cursor yet, start it at the
    outbox's current end, so changes made during the copy are replayed after
    it. Returns the cursor set, or None when the stream already had one."""
    st = stream.state
    async with source.connect() as src:
        newest = int((await src.execute(select(func.max(stream.outbox.c.id)))).scalar() or 0)
    async with target.begin() as dst:
        have = (await dst.execute(select(st.c.last_id).where(st.c.stream == stream.name))).first()
        if have is not None:
            return None
        await dst.execute(st.insert().values(stream=stream.name, last_id=newest, applied=0, updated_at=_utcnow()))
    return newest


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _change(row: Any) -> Change:
    payload = row.payload
    if isinstance(payload, (str, bytes)):
        payload = orjson.loads(payload)
    created = row.created_at
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    return Change(int(row.id), str(row.entity), str(row.entity_id), str(row.op), payload or {}, created)


def _coerce(table: Table, column: str, value: Any) -> Any:
    """Payloads are JSON: turn their strings back into what the column holds."""
    if value is None:
        return None
    py = table.c[column].type.python_type
    if py is datetime and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    if py is int and not isinstance(value, int):
        return int(value)
    if py is float and not isinstance(value, float):
        return float(value)
    if py is str and not isinstance(value, str):
        return orjson.dumps(value).decode() if isinstance(value, (list, dict)) else str(value)
    return value
