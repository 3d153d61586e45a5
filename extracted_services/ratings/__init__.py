"""The ratings service: ``GET/POST /api/titles/{id}/ratings``,
``DELETE /api/titles/{id}/ratings/{user_id}`` and ``Title.rating`` in GraphQL.

    >>> from extracted_services.ratings import create_app, RatingsSettings, Rounding
    >>> app = create_app(RatingsSettings("sqlite+aiosqlite:///ratings.db", Rounding.LEGACY))
"""

from extracted_services.ratings.app import DEFAULT_PORT, create_app
from extracted_services.ratings.settings import RatingsSettings, Rounding

__all__ = ["DEFAULT_PORT", "RatingsSettings", "Rounding", "create_app"]
