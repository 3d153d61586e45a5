"""Settings of the ratings service, read once from the environment.

``RATINGS_ROUNDING`` is the service's one documented, deliberate divergence
from the monolith (docs/services.md): ``one-decimal`` rounds the average
*in responses* to one decimal (``7.333333333333333`` -> ``7.3``); ``legacy``
answers the plain mean exactly like the monolith. Storage is never rounded.
The default is ``one-decimal`` so the demo's shadow report has a real
difference to show; set ``legacy`` to clear it.

A running service can also be switched, alone, with ``PUT /admin/rounding``
(:class:`RoundingSwitch`): with ``strangler up --cells N`` every cell runs its
own ratings service, so the divergence can be switched on in one cell only.
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
        return rounded(average, self.rounding)


def rounded(average: float | None, rounding: Rounding) -> float | None:
    """``average`` as ``rounding`` shows it.

    >>> rounded(7.333333333333333, Rounding.ONE_DECIMAL), rounded(7.333333333333333, Rounding.LEGACY)
    (7.3, 7.333333333333333)
    """
    if average is None or rounding is Rounding.LEGACY:
        return average
    return round(average, 1)


class RoundingSwitch:
    """The rounding one running service answers with: its settings' at start, then
    whatever ``PUT /admin/rounding`` last set (this process only; never stored).

    >>> switch = RoundingSwitch(Rounding.LEGACY)
    >>> switch.rounding = Rounding.ONE_DECIMAL
    >>> switch.present(7.25)
    7.2
    """

    def __init__(self, rounding: Rounding) -> None:
        self.rounding = rounding

    def present(self, average: float | None) -> float | None:
        return rounded(average, self.rounding)
