"""The ratings service: votes and their aggregate, with its own database."""

from __future__ import annotations

from aiohttp import web

from extracted_services.common.app import service_app
from extracted_services.ratings.graph import make_subgraph
from extracted_services.ratings.routes import ROUNDING, ROUTES, SETTINGS
from extracted_services.ratings.settings import RatingsSettings, RoundingSwitch

DEFAULT_PORT = 8101


def create_app(settings: RatingsSettings | None = None) -> web.Application:
    settings = settings or RatingsSettings.from_env()
    rounding = RoundingSwitch(settings.rounding)  # REST and GraphQL answer with the same, switchable one
    app = service_app("ratings", settings.database_url, make_subgraph(rounding), routes=ROUTES)
    app[SETTINGS] = settings
    app[ROUNDING] = rounding
    return app
