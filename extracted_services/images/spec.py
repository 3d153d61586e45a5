"""How the images service's data moves: backfill only (the monolith never
writes images, so there is no outbox stream to follow)."""

from __future__ import annotations

from extracted_services.common import monolith_tables as mono
from extracted_services.common.backfill import BackfillPlan, TableCopy
from extracted_services.common.registry import ServiceSpec
from extracted_services.images import models
from extracted_services.images.app import DEFAULT_PORT, create_app

SPEC = ServiceSpec(
    name="images",
    default_port=DEFAULT_PORT,
    create_app=create_app,
    backfill=BackfillPlan(
        "images",
        (TableCopy(mono.titles, models.titles), TableCopy(mono.images, models.images)),
        models.backfill_state,
    ),
)
