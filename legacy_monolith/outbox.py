"""The transactional outbox: every write records what changed, in the same transaction.

:func:`record_changes` is the one way a write path adds outbox rows; it must be
called inside the write's transaction so the change and its events commit (or
roll back) together. Readers (the sync workers) take rows with
``id > cursor`` in id order.

Rows:
- ``entity='vote'``, ``entity_id='tt0000001:u42'`` (title id, ``:``, user id;
  user ids cannot contain ``:``), payload ``{"id", "title_id", "user_id",
  "value", "created_at"}``;
- ``entity='rating'``, ``entity_id='tt0000001'``, payload ``{"title_id",
  "average_rating", "num_votes"}``;
- ``op='delete'`` rows have a null payload.

On PostgreSQL, ids come from a sequence and concurrent transactions may commit
out of id order -- a reader could move its cursor past a row that is not yet
visible. A transaction-scoped advisory lock taken just before the insert keeps
"id order = commit order" (the lock is held only from the insert to the commit,
the very end of the write). SQLite has one writer at a time already.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from legacy_monolith.models import Outbox

Entity = Literal["vote", "rating"]
Op = Literal["upsert", "delete"]

# Arbitrary constant naming the monolith outbox's advisory lock on PostgreSQL.
OUTBOX_ADVISORY_LOCK = 0x5354524E  # "STRN"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One changed entity; ``payload`` is the row after the change (None: deleted)."""

    entity: Entity
    entity_id: str
    op: Op
    payload: dict[str, Any] | None = None


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp column of the monolith stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def timestamp_json(value: datetime) -> str:
    return value.isoformat(timespec="microseconds") + "Z"


async def record_changes(session: AsyncSession, events: Sequence[OutboxEvent]) -> None:
    """Insert ``events`` into the outbox, in order, inside the caller's transaction."""
    if not events:
        return
    if session.bind.dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(OUTBOX_ADVISORY_LOCK)))
    now = utcnow()
    await session.execute(
        insert(Outbox),
        [
            {
                "entity": e.entity,
                "entity_id": e.entity_id,
                "op": e.op,
                "payload": None if e.payload is None else json.dumps(e.payload, separators=(",", ":")),
                "created_at": now,
            }
            for e in events
        ],
    )
