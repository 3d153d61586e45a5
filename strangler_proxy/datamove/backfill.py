"""Copy a service's tables out of the monolith's database: batched,
idempotent, resumable, verifiable.

Each :class:`TableCopy` is copied by keyset pagination on the primary key
(``WHERE key > :cursor ORDER BY key LIMIT :batch``). Every batch is upserted
into the service database *in the same transaction* that moves the table's
cursor in ``backfill_state`` -- so a killed run resumes after the last batch
that committed, and never half of one. A finished run is followed by a prune
pass that deletes rows the monolith no longer has; running the whole thing
again gives the same result (upserts of the same rows).

:func:`verify` compares, per table, the row counts and an order-independent
checksum (sum of per-row 64-bit hashes, so the two databases' collations do
not matter) of the copied columns.

    report = await backfill(plan, monolith_engine, service_engine, progress=cb)
    mismatches = [t for t in await verify(plan, monolith_engine, service_engine) if not t.ok]
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Column, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from strangler_proxy.datamove.batches import BatchCopier
from strangler_proxy.datamove.upsert import catch_up_serial, upsert_rows

DEFAULT_BATCH_SIZE = 5000
_CHECKSUM_MOD = 1 << 64

Progress = Callable[[str, int], None]  # (table, rows just copied)


@dataclass(frozen=True)
class TableCopy:
    """One monolith table copied into one service table (same column names).

    ``target`` may hold a subset of the source's columns; only those are
    copied and checksummed.
    """

    source: Table
    target: Table

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.target.columns)

    @property
    def key(self) -> str:
        (pk,) = self.target.primary_key.columns  # keyset pagination needs one key column
        return pk.name

    def source_col(self, name: str) -> Column[Any]:
        return self.source.c[name]


@dataclass(frozen=True)
class BackfillPlan:
    """What ``strangler backfill SERVICE`` copies, in order."""

    service: str
    tables: tuple[TableCopy, ...]
    state: Table  # the service's backfill_state


@dataclass(frozen=True)
class TableReport:
    table: str
    rows: int  # rows copied by this run (a resumed run counts only its own)
    deleted: int  # rows pruned because the monolith no longer has them
    seconds: float
    resumed: bool

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class TableCheck:
    table: str
    source_count: int
    target_count: int
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        return self.source_count == self.target_count and self.source_checksum == self.target_checksum


async def count_remaining(plan: BackfillPlan, source: AsyncEngine, target: AsyncEngine) -> dict[str, int]:
    """Rows each table still has to copy (all of them unless a run is resuming)."""
    out: dict[str, int] = {}
    async with source.connect() as src, target.connect() as dst:
        for tc in plan.tables:
            cursor, _ = await _resume_point(dst, plan.state, tc.name, restart=False)
            q = select(func.count()).select_from(tc.source)
            if cursor is not None:
                q = q.where(tc.source_col(tc.key) > cursor)
            out[tc.name] = int((await src.execute(q)).scalar_one())
    return out


async def backfill(
    plan: BackfillPlan,
    source: AsyncEngine,
    target: AsyncEngine,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    restart: bool = False,
    progress: Progress | None = None,
    tables: Sequence[str] | None = None,
) -> list[TableReport]:
    """Copy every table of ``plan`` (or just ``tables``); see the module docstring."""
    reports = []
    for tc in plan.tables:
        if tables is None or tc.name in tables:
            reports.append(
                await copy_table(tc, plan.state, source, target, batch_size=batch_size, restart=restart, progress=progress)
            )
    return reports


async def copy_table(
    tc: TableCopy,
    state: Table,
    source: AsyncEngine,
    target: AsyncEngine,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    restart: bool = False,
    progress: Progress | None = None,
) -> TableReport:
    started = time.perf_counter()
    async with target.begin() as dst:
        cursor, resumed = await _resume_point(dst, state, tc.name, restart=restart)
        if not resumed:
            await _save_state(dst, state, tc.name, cursor=None, rows=0, started=True)
    copied = 0
    io = BatchCopier(tc.source, tc.target, tc.columns, tc.key, source.dialect, target.dialect)
    async with source.connect() as src:
        # Read the next batch while the current one is written: two databases,
        # two driver threads, so the copy runs at the pace of the slower side.
        pending = asyncio.ensure_future(io.read(src, cursor, batch_size))
        try:
            while rows := await pending:
                cursor = rows[-1][io.key_index]
                pending = asyncio.ensure_future(io.read(src, cursor, batch_size))
                async with target.begin() as dst:
                    await io.write(dst, rows)
                    await _advance_state(dst, state, tc.name, cursor, len(rows))
                copied += len(rows)
                if progress is not None:
                    progress(tc.name, len(rows))
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
    deleted = await _prune(tc, source, target, batch_size)
    async with target.begin() as dst:
        await catch_up_serial(dst, tc.target)
        await dst.execute(
            state.update().where(state.c.table_name == tc.name).values(finished_at=_now())
        )
    return TableReport(tc.name, copied, deleted, time.perf_counter() - started, resumed)


async def verify(
    plan: BackfillPlan, source: AsyncEngine, target: AsyncEngine, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[TableCheck]:
    """Counts and checksums of every copied table, on both sides."""
    checks = []
    for tc in plan.tables:
        s_count, s_sum = await _checksum(source, tc.source, tc.columns, tc.key, batch_size)
        t_count, t_sum = await _checksum(target, tc.target, tc.columns, tc.key, batch_size)
        checks.append(TableCheck(tc.name, s_count, t_count, s_sum, t_sum))
    return checks


# ------------------------------------------------------------------ helpers


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def _resume_point(conn: AsyncConnection, state: Table, table: str, *, restart: bool) -> tuple[Any, bool]:
    """(cursor, resumed): an unfinished run resumes after its cursor; a
    finished (or absent) one starts over from the beginning."""
    if restart:
        return None, False
    row = (await conn.execute(select(state.c.cursor, state.c.finished_at).where(state.c.table_name == table))).first()
    if row is None or row.finished_at is not None or row.cursor is None:
        return None, False
    return orjson.loads(row.cursor), True


async def _save_state(conn: AsyncConnection, state: Table, table: str, *, cursor: Any, rows: int, started: bool) -> None:
    await upsert_rows(
        conn,
        state,
        [
            {
                "table_name": table,
                "cursor": None if cursor is None else orjson.dumps(cursor).decode(),
                "rows_copied": rows,
                "started_at": _now() if started else None,
                "finished_at": None,
            }
        ],
    )


async def _advance_state(conn: AsyncConnection, state: Table, table: str, cursor: Any, n: int) -> None:
    await conn.execute(
        state.update()
        .where(state.c.table_name == table)
        .values(cursor=orjson.dumps(cursor).decode(), rows_copied=state.c.rows_copied + n)
    )


async def _keys(engine: AsyncEngine, col: Column[Any], batch_size: int) -> AsyncIterator[list[Any]]:
    """Every key of ``col``'s table, in keyset batches."""
    last: Any = None
    async with engine.connect() as conn:
        while True:
            q = select(col).order_by(col).limit(batch_size)
            if last is not None:
                q = q.where(col > last)
            keys = list((await conn.execute(q)).scalars())
            await conn.rollback()
            if not keys:
                return
            last = keys[-1]
            yield keys


async def _prune(tc: TableCopy, source: AsyncEngine, target: AsyncEngine, batch_size: int) -> int:
    """Delete target rows whose key the source no longer has.

    Done by key membership, not by key ranges, because the two databases may
    order text keys differently (SQLite is binary, PostgreSQL follows its
    collation)."""
    deleted = 0
    src_key = tc.source_col(tc.key)
    dst_key = tc.target.c[tc.key]
    async with source.connect() as src:
        async for keys in _keys(target, dst_key, batch_size):
            present = set((await src.execute(select(src_key).where(src_key.in_(keys)))).scalars())
            await src.rollback()
            gone = [k for k in keys if k not in present]
            if gone:
                async with target.begin() as dst:
                    await dst.execute(delete(tc.target).where(dst_key.in_(gone)))
                deleted += len(gone)
    return deleted


def _row_hash(values: Sequence[Any]) -> int:
    canon = [v.replace(tzinfo=None).isoformat() if isinstance(v, datetime) else v for v in values]
    digest = hashlib.blake2b(orjson.dumps(canon), digest_size=8).digest()
    return int.from_bytes(digest, "big")


async def _checksum(
    engine: AsyncEngine, table: Table, columns: Sequence[str], key: str, batch_size: int
) -> tuple[int, str]:
    total = 0
    count = 0
    cols = [table.c[c] for c in columns]
    key_col = table.c[key]
    key_index = list(columns).index(key)
    last: Any = None
    async with engine.connect() as conn:
        while True:
            q = select(*cols).order_by(key_col).limit(batch_size)
            if last is not None:
                q = q.where(key_col > last)
            rows = (await conn.execute(q)).all()
            await conn.rollback()
            if not rows:
                break
            last = rows[-1][key_index]
            count += len(rows)
            for r in rows:
                total = (total + _row_hash(r)) % _CHECKSUM_MOD
    return count, f"{total:016x}"

