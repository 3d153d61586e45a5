"""How the credits service's data moves.

Backfill copies titles (the columns it shows), people (id, name), credits and
each title's vote count. Credits themselves are backfill-only -- the monolith
never writes them -- but the vote counts follow the monolith's ``rating``
outbox events, because they decide the order of "known for".


Named in strangler.yaml as ``extracted_services.credits.spec:APP``; the toolkit
knows the service only through it.
"""

from __future__ import annotations

from extracted_services.common import monolith_tables as mono
from extracted_services.common.migrations import service_migrations
from extracted_services.credits import models
from extracted_services.credits.app import DEFAULT_PORT, create_app
from extracted_services.ratings import models as ratings_models
from strangler_proxy.datamove.backfill import BackfillPlan, TableCopy
from strangler_proxy.datamove.plan import DataMove
from strangler_proxy.datamove.sync import Stream, row_applier
from strangler_proxy.stack.apps import AppSpec

APP = AppSpec(
    create_app=create_app,
    default_port=DEFAULT_PORT,
    migrations=service_migrations("credits"),
    datamove=DataMove(
        backfill=BackfillPlan(
            "credits",
            (
                TableCopy(mono.titles, models.titles),
                TableCopy(mono.people, models.people),
                TableCopy(mono.credits, models.credits),
                TableCopy(mono.ratings, models.title_votes),
            ),
            models.backfill_state,
        ),
        streams=(
            Stream(
                "monolith",
                mono.outbox,
                models.sync_state,
                {"rating": row_applier(models.title_votes, "title_id")},
                gap_grace_s=0.0,  # the monolith serialises outbox inserts (legacy_monolith/outbox.py)
            ),
            # Once the ratings write routes are extracted, votes happen in the ratings
            # service; its outbox carries the same ``rating`` events. (Its reverse sync
            # into the monolith writes no outbox rows, so the stream above goes quiet.)
            Stream(
                "ratings",
                ratings_models.outbox,
                models.sync_state,
                {"rating": row_applier(models.title_votes, "title_id")},
                source="ratings",
                gap_grace_s=0.0,  # the ratings service serialises outbox inserts (store._record)
            ),
        ),
    ),
)
