"""What moves a service's data: the declarative half a service hands the toolkit.

A service carved out of the monolith declares *which* tables it copies and
*which* outbox streams it follows; :mod:`~strangler_proxy.datamove.backfill`
and :mod:`~strangler_proxy.datamove.sync` do the moving. ``strangler
backfill``/``sync`` and ``strangler up`` find a service's plan through the
stack registry (``AppSpec.datamove``).

    >>> from sqlalchemy import Column, Integer, MetaData, String, Table
    >>> md = MetaData()
    >>> state = Table("backfill_state", md, Column("table_name", String, primary_key=True))
    >>> DataMove(BackfillPlan("demo", (), state)).stream(reverse=True) is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from strangler_proxy.databases import make_engine
from strangler_proxy.datamove.backfill import BackfillPlan, backfill
from strangler_proxy.datamove.sync import Stream, mark_start

# The database a service is carved out of, unless its plan says otherwise.
DEFAULT_SOURCE = "monolith"


@dataclass(frozen=True)
class DataMove:
    """How one service's data moves: backfill, then outbox streams both ways."""

    backfill: BackfillPlan
    # outboxes -> service, the source database's first (empty: the service is backfill-only)
    streams: tuple[Stream, ...] = ()
    # service outbox -> source database, after the write path is cut over
    reverse: Stream | None = None
    # the database the tables are copied from (and the reverse stream writes into)
    source: str = DEFAULT_SOURCE

    def stream(self, *, reverse: bool, source: str | None = None) -> Stream | None:
        """The reverse stream, or the forward one draining ``source`` (default: the first)."""
        if reverse:
            return self.reverse
        if source is None:
            return self.streams[0] if self.streams else None
        return next((s for s in self.streams if s.source == source), None)


async def backfill_unless_done(plan: DataMove, source_url: str, target_url: str) -> bool:
    """Backfill (starting the sync cursors first, so changes made while it copies
    are replayed) unless every table of the plan has a finished run; True when
    it copied. For ``strangler up``'s first start."""
    state = plan.backfill.state
    source, target = make_engine(source_url), make_engine(target_url)
    try:
        async with target.connect() as conn:
            done = set(
                (await conn.execute(select(state.c.table_name).where(state.c.finished_at.is_not(None)))).scalars()
            )
        if done >= {t.name for t in plan.backfill.tables}:
            return False
        for stream in plan.streams:
            await mark_start(stream, source, target)
        await backfill(plan.backfill, source, target)
        return True
    finally:
        await source.dispose()
        await target.dispose()
