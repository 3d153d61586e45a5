"""How the ratings service's data moves.

- backfill: the monolith's title ids, ``ratings`` and ``votes``;
- forward sync (``strangler sync ratings``): the monolith's outbox, entities
  ``vote`` and ``rating``, while the monolith is the writer;
- reverse sync (``strangler sync ratings --reverse``): this service's outbox
  into the monolith's ``votes``/``ratings``, after the write path is cut over.


Named in strangler.yaml as ``extracted_services.ratings.spec:APP``; the toolkit
knows the service only through it.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import ColumnElement, Table, and_
from sqlalchemy.sql import Executable

from extracted_services.common import monolith_tables as mono
from extracted_services.common.migrations import service_migrations
from extracted_services.ratings import models
from extracted_services.ratings.app import DEFAULT_PORT, create_app
from extracted_services.ratings.settings import RatingsSettings
from strangler_proxy.datamove.backfill import BackfillPlan, TableCopy
from strangler_proxy.datamove.plan import DataMove
from strangler_proxy.datamove.sync import Applier, Stream, row_applier
from strangler_proxy.stack.apps import AppSpec


def vote_applier(votes: Table) -> Applier:
    """Votes are named ``title_id:user_id`` in the outbox and keyed by ``id`` in
    the table; a row with the same (title, user) under another id is replaced."""

    def by_pair(entity_id: str) -> ColumnElement[bool]:
        title_id, _, user_id = entity_id.partition(":")
        return and_(votes.c.title_id == title_id, votes.c.user_id == user_id)

    def clear_clash(row: dict[str, object]) -> Executable:
        return votes.delete().where(
            votes.c.title_id == row["title_id"], votes.c.user_id == row["user_id"], votes.c.id != row["id"]
        )

    return row_applier(votes, "id", delete_where=by_pair, before_upsert=clear_clash)


def _app(url: str) -> web.Application:
    return create_app(RatingsSettings.from_env(url))


APP = AppSpec(
    create_app=_app,
    default_port=DEFAULT_PORT,
    migrations=service_migrations("ratings"),
    datamove=DataMove(
        backfill=BackfillPlan(
            "ratings",
            (
                TableCopy(mono.titles, models.titles),
                TableCopy(mono.ratings, models.ratings),
                TableCopy(mono.votes, models.votes),
            ),
            models.backfill_state,
        ),
        streams=(
            Stream(
                "monolith",
                mono.outbox,
                models.sync_state,
                {"vote": vote_applier(models.votes), "rating": row_applier(models.ratings, "title_id")},
                serial_tables=(models.votes,),
                gap_grace_s=0.0,  # the monolith serialises outbox inserts (legacy_monolith/outbox.py)
            ),
        ),
        reverse=Stream(
            "ratings",
            models.outbox,
            mono.reverse_sync_state,
            {"vote": vote_applier(mono.votes), "rating": row_applier(mono.ratings, "title_id")},
            source="ratings",
            serial_tables=(mono.votes,),
            gap_grace_s=0.0,  # store._record serialises outbox inserts
        ),
    ),
)
