"""Votes and the aggregate: the ratings service's write and read paths.

A vote replaces the user's earlier vote on the same title; the aggregate is
recomputed from the votes in the same transaction (the plain mean, never
rounded in storage; the row exists only while the title has votes), and both
changes are appended to the service's outbox in that transaction too, so the
reverse sync can keep the monolith's copy current after cut-over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from extracted_services.common.responses import not_found
from extracted_services.ratings.models import outbox, ratings, titles, votes
from strangler_proxy.databases import IDS_PARAM, rows_by_ids
from strangler_proxy.datamove.upsert import upsert_rows

# Names this service's outbox lock on PostgreSQL (any constant will do).
OUTBOX_ADVISORY_LOCK = 0x52415453  # "RATS"


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A title's rating; ``average_rating`` is None while it has no votes."""

    title_id: str
    average_rating: float | None
    num_votes: int


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    aggregate: Aggregate
    created: bool  # a new vote (201), not a changed one (200)


async def require_title(conn: AsyncConnection, title_id: str, *, lock: bool = False) -> None:
    """NotFound unless the title exists; with ``lock``, serialise its writers."""
    stmt = select(titles.c.id).where(titles.c.id == title_id)
    if lock and conn.dialect.name != "sqlite":  # SQLite's writer holds the database lock already
        stmt = stmt.with_for_update()
    if (await conn.execute(stmt)).first() is None:
        raise not_found(f"no title {title_id!r}")


async def known_titles(conn: AsyncConnection, title_ids: Sequence[str]) -> set[str]:
    return set((await conn.execute(select(titles.c.id).where(titles.c.id.in_(set(title_ids))))).scalars())


async def aggregates(conn: AsyncConnection, title_ids: Sequence[str]) -> dict[str, Aggregate]:
    """The stored aggregates of the titles that have votes."""
    rows = await conn.execute(select(ratings).where(ratings.c.title_id.in_(set(title_ids))))
    return {r.title_id: Aggregate(r.title_id, r.average_rating, r.num_votes) for r in rows}


async def known_with_aggregates(conn: AsyncConnection, title_ids: Sequence[str]) -> dict[str, Aggregate | None]:
    """Every known title among ``title_ids`` with its aggregate (None: no votes yet), in one
    statement -- the subgraph's entity loader, asked for every ``Title.rating`` the gateway fetches."""
    rows = await rows_by_ids(conn, _KNOWN_WITH_AGGREGATES, title_ids)
    return {row[0]: None if row[2] is None else Aggregate(row[0], row[1], row[2]) for row in rows}


# Built once (an expanding IN parameter): statement building and its cache key are not paid per request.
_KNOWN_WITH_AGGREGATES = (
    select(titles.c.id, ratings.c.average_rating, ratings.c.num_votes)
    .join(ratings, ratings.c.title_id == titles.c.id, isouter=True)
    .where(titles.c.id.in_(bindparam(IDS_PARAM, expanding=True)))
)


async def cast_vote(conn: AsyncConnection, title_id: str, user_id: str, value: int) -> VoteOutcome:
    """Record (or replace) a vote and recompute the aggregate, in the caller's transaction."""
    await require_title(conn, title_id, lock=True)
    now = _utcnow()
    vote_id = (
        await conn.execute(select(votes.c.id).where(votes.c.title_id == title_id, votes.c.user_id == user_id))
    ).scalar()
    created = vote_id is None
    if created:
        ins = votes.insert().values(title_id=title_id, user_id=user_id, value=value, created_at=now)
        vote_id = (await conn.execute(ins)).inserted_primary_key[0]
    else:
        await conn.execute(votes.update().where(votes.c.id == vote_id).values(value=value, created_at=now))
    vote_row = {
        "id": vote_id,
        "title_id": title_id,
        "user_id": user_id,
        "value": value,
        "created_at": now.isoformat(timespec="microseconds") + "Z",
    }
    aggregate = await _refresh_aggregate(conn, title_id)
    await _record(conn, [("vote", f"{title_id}:{user_id}", vote_row), _rating_event(aggregate)])
    return VoteOutcome(aggregate, created)


async def retract_vote(conn: AsyncConnection, title_id: str, user_id: str) -> Aggregate:
    """Remove a user's vote; NotFound when there is none."""
    await require_title(conn, title_id, lock=True)
    gone = await conn.execute(votes.delete().where(votes.c.title_id == title_id, votes.c.user_id == user_id))
    if gone.rowcount == 0:
        raise not_found(f"user {user_id!r} has no vote on {title_id!r}")
    aggregate = await _refresh_aggregate(conn, title_id)
    await _record(conn, [("vote", f"{title_id}:{user_id}", None), _rating_event(aggregate)])
    return aggregate


async def _refresh_aggregate(conn: AsyncConnection, title_id: str) -> Aggregate:
    count, total = (
        await conn.execute(
            select(func.count(votes.c.id), func.coalesce(func.sum(votes.c.value), 0)).where(
                votes.c.title_id == title_id
            )
        )
    ).one()
    if count == 0:
        await conn.execute(ratings.delete().where(ratings.c.title_id == title_id))
        return Aggregate(title_id, None, 0)
    # Python's int/int division: the same float whichever database summed.
    aggregate = Aggregate(title_id, int(total) / int(count), int(count))
    await upsert_rows(conn, ratings, [_rating_row(aggregate)])
    return aggregate


def _rating_row(a: Aggregate) -> dict[str, Any]:
    return {"title_id": a.title_id, "average_rating": a.average_rating, "num_votes": a.num_votes}


def _rating_event(a: Aggregate) -> tuple[str, str, dict[str, Any] | None]:
    return ("rating", a.title_id, None if a.num_votes == 0 else _rating_row(a))


async def _record(conn: AsyncConnection, events: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    """Append to the outbox; ``None`` payload means the entity was deleted."""
    if conn.dialect.name == "postgresql":
        # Held from here to commit: ids become visible in id order (see common/sync.py).
        await conn.execute(select(func.pg_advisory_xact_lock(OUTBOX_ADVISORY_LOCK)))
    now = _utcnow()
    await conn.execute(
        outbox.insert(),
        [
            {
                "entity": entity,
                "entity_id": entity_id,
                "op": "delete" if payload is None else "upsert",
                "payload": None if payload is None else orjson.dumps(payload).decode(),
                "created_at": now,
            }
            for entity, entity_id, payload in events
        ],
    )


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
