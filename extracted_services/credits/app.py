"""The credits service: cast lists and "known for", with its own database."""

from __future__ import annotations

from aiohttp import web

from extracted_services.common.app import service_app
from extracted_services.credits.graph import make_subgraph
from extracted_services.credits.routes import ROUTES
from strangler_proxy.databases import database_url

DEFAULT_PORT = 8102


def create_app(url: str | None = None) -> web.Application:
    return service_app("credits", database_url("credits", url), make_subgraph(), routes=ROUTES)
