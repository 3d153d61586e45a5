"""The skeleton every extracted service shares: its database for the app's
lifetime, JSON errors, dry-run writes, ``/healthz`` and the subgraph at
``/graphql``.

    app = service_app("ratings", url, subgraph, routes=[web.get("/api/titles/{id}/ratings", get_rating)])
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from extracted_services.common.db import engine_context
from extracted_services.common.dryrun import dry_run_middleware
from extracted_services.common.responses import error_middleware, json_response
from extracted_services.common.subgraph import Subgraph

SERVICE_NAME = web.AppKey("service_name", str)
SUBGRAPH = web.AppKey("service_subgraph", Subgraph)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "service": request.app[SERVICE_NAME]})


def service_app(
    name: str,
    database_url: str,
    subgraph: Subgraph,
    *,
    routes: Iterable[web.RouteDef],
) -> web.Application:
    """A ready-to-run aiohttp app for service ``name`` (not yet started)."""
    app = web.Application(middlewares=[error_middleware, dry_run_middleware])
    app[SERVICE_NAME] = name
    app[SUBGRAPH] = subgraph
    app.cleanup_ctx.append(engine_context(database_url))
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/graphql", subgraph.handle)
    app.router.add_routes(list(routes))
    return app
