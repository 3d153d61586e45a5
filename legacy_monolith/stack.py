"""How the toolkit runs the monolith: ``strangler.yaml`` names it as
``stack.apps: [{name: monolith, app: legacy_monolith.stack:APP, upstream: legacy}]``.

Nothing in ``strangler_proxy`` imports this package; a team's own monolith
plugs in the same way (or as a ``command:``, in any language).
"""

from __future__ import annotations

from collections.abc import Mapping

from legacy_monolith.app import create_app
from legacy_monolith.migrations import MIGRATIONS
from legacy_monolith.seed import SeedPlan, seed_database
from strangler_proxy.stack.apps import AppSpec, SeedProgress, SeedRequest

DEFAULT_PORT = 8001


async def seed(url: str, request: SeedRequest, progress: SeedProgress | None) -> Mapping[str, int] | None:
    """The deterministic film catalogue: ``request.size`` titles (and people, credits, ratings, images)."""

    def on_rows(table: str, rows: int) -> None:
        if progress is not None and table == "titles":
            progress(rows)

    stats = await seed_database(url, SeedPlan(titles=request.size, seed=request.seed), replace=request.replace,
                                if_empty=request.if_empty, progress=on_rows)
    return None if stats is None else stats.rows


APP = AppSpec(create_app=create_app, default_port=DEFAULT_PORT, migrations=MIGRATIONS, seed=seed)
