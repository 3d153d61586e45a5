"""How the images service's data moves: backfill only (the monolith never
writes images, so there is no outbox stream to follow).

Named in strangler.yaml as ``extracted_services.images.spec:APP``; the toolkit
knows the service only through it.
"""

from __future__ import annotations

from extracted_services.common import monolith_tables as mono
from extracted_services.common.migrations import service_migrations
from extracted_services.images import models
from extracted_services.images.app import DEFAULT_PORT, create_app
from strangler_proxy.datamove.backfill import BackfillPlan, TableCopy
from strangler_proxy.datamove.plan import DataMove
from strangler_proxy.stack.apps import AppSpec

APP = AppSpec(
    create_app=create_app,
    default_port=DEFAULT_PORT,
    migrations=service_migrations("images"),
    datamove=DataMove(
        backfill=BackfillPlan(
            "images",
            (TableCopy(mono.titles, models.titles), TableCopy(mono.images, models.images)),
            models.backfill_state,
        ),
    ),
)
