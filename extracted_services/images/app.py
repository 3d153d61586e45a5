"""The images service: title images, with its own database."""

from __future__ import annotations

from aiohttp import web

from extracted_services.common.app import service_app
from extracted_services.images.graph import make_subgraph
from extracted_services.images.routes import ROUTES
from strangler_proxy.databases import database_url

DEFAULT_PORT = 8103


def create_app(url: str | None = None) -> web.Application:
    return service_app("images", database_url("images", url), make_subgraph(), routes=ROUTES)
