"""The write paths: casting, changing and retracting a vote.

Each write runs in one transaction that changes the vote, recomputes the
title's aggregate from its votes (the plain mean, never an incremental
update, so it cannot drift) and records both changes in the outbox. Any
failure rolls back all three.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from legacy_monolith.catalogue import RatingRecord
from legacy_monolith.db import Sessions, lock_title, write_transaction
from legacy_monolith.errors import NotFound
from legacy_monolith.models import Rating, Vote
from legacy_monolith.outbox import OutboxEvent, record_changes, timestamp_json, utcnow


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    """The aggregate after a vote, and whether the vote was new (or replaced one)."""

    rating: RatingRecord
    created: bool


async def cast_vote(sessions: Sessions, lock: asyncio.Lock, title_id: str, user_id: str, value: int) -> VoteOutcome:
    """Record ``user_id``'s vote on ``title_id``; voting again replaces the old value."""
    async with write_transaction(sessions, lock) as session:
        if not await lock_title(session, title_id):
            raise NotFound(f"no title {title_id!r}")
        now = utcnow()
        vote_id = await session.scalar(select(Vote.id).where(Vote.title_id == title_id, Vote.user_id == user_id))
        created = vote_id is None
        if created:
            vote_id = await session.scalar(
                insert(Vote)
                .values(title_id=title_id, user_id=user_id, value=value, created_at=now)
                .returning(Vote.id)
            )
        else:
            await session.execute(update(Vote).where(Vote.id == vote_id).values(value=value, created_at=now))
        row = {"id": vote_id, "title_id": title_id, "user_id": user_id, "value": value}
        vote_event = OutboxEvent("vote", f"{title_id}:{user_id}", "upsert", {**row, "created_at": timestamp_json(now)})
        rating, rating_event = await _refresh_aggregate(session, title_id)
        await record_changes(session, [vote_event, rating_event])
    return VoteOutcome(rating=rating, created=created)


async def retract_vote(sessions: Sessions, lock: asyncio.Lock, title_id: str, user_id: str) -> RatingRecord:
    """Remove ``user_id``'s vote on ``title_id``; NotFound when there is none."""
    async with write_transaction(sessions, lock) as session:
        if not await lock_title(session, title_id):
            raise NotFound(f"no title {title_id!r}")
        result = await session.execute(delete(Vote).where(Vote.title_id == title_id, Vote.user_id == user_id))
        if result.rowcount == 0:
            raise NotFound(f"user {user_id!r} has no vote on {title_id!r}")
        vote_event = OutboxEvent("vote", f"{title_id}:{user_id}", "delete")
        rating, rating_event = await _refresh_aggregate(session, title_id)
        await record_changes(session, [vote_event, rating_event])
    return rating


async def _refresh_aggregate(session: AsyncSession, title_id: str) -> tuple[RatingRecord, OutboxEvent]:
    """Recompute ``ratings`` for one title from its votes; the row exists only while
    there are votes."""
    count, total = (
        await session.execute(
            select(func.count(Vote.id), func.coalesce(func.sum(Vote.value), 0)).where(Vote.title_id == title_id)
        )
    ).one()
    exists = await session.scalar(select(Rating.title_id).where(Rating.title_id == title_id))
    if count == 0:
        if exists:
            await session.execute(delete(Rating).where(Rating.title_id == title_id))
        return RatingRecord.empty(title_id), OutboxEvent("rating", title_id, "delete")
    # Python's int/int division: the same float whichever database summed.
    rating = RatingRecord(title_id, int(total) / count, count)
    values = {"average_rating": rating.average_rating, "num_votes": rating.num_votes}
    if exists:
        await session.execute(update(Rating).where(Rating.title_id == title_id).values(**values))
    else:
        await session.execute(insert(Rating).values(title_id=title_id, **values))
    return rating, OutboxEvent("rating", title_id, "upsert", rating.to_json())

