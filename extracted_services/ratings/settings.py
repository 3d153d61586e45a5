"""Settings of the ratings service, read once from the environment.

``RATINGS_ROUNDING`` is the service's one documented, deliberate divergence
from the monolith (docs/services.md): ``one-decimal`` rounds the average
*in responses* to one decimal (``7.333333333333333`` -> ``7.3``); ``legacy``
answers the plain mean exactly like the monolith. Storage is never rounded.
The default is ``one-decimal`` so the demo's shadow report has a real
difference to show; set ``legacy`` to clear it.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from strangler_proxy.databases import database_url
from strangler_proxy.errors import ConfigError

ROUNDING_ENV = "RATINGS_ROUNDING"


class Rounding(str, enum.Enum):
    LEGACY = "legacy"
    ONE_DECIMAL = "one-decimal"


DEFAULT_ROUNDING = Rounding.ONE_DECIMAL


@dataclass(frozen=True, slots=True)
class RatingsSettings:
    """
    >>> RatingsSettings("sqlite+aiosqlite:///r.db", Rounding.LEGACY).present(7.333333333333333)
    7.333333333333333
    >>> RatingsSettings("sqlite+aiosqlite:///r.db").present(7.333333333333333)
    7.3
    """

    database_url: str
    rounding: Rounding = DEFAULT_ROUNDING

    @classmethod
    def from_env(cls, url: str | None = None) -> RatingsSettings:
        raw = os.environ.get(ROUNDING_ENV, DEFAULT_ROUNDING.value)
        try:
            rounding = Rounding(raw)
        except ValueError as exc:
            allowed = ", ".join(r.value for r in Rounding)
            raise ConfigError(f"must be one of {allowed}; got {raw!r}", field=ROUNDING_ENV) from exc
        return cls(database_url=database_url("ratings", url), rounding=rounding)

    def present(self, average: float | None) -> float | None:
        """The average as responses show it."""
        if average is None or self.rounding is Rounding.LEGACY:
            return average
        return round(average, 1)
