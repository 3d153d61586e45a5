"""The outcome of comparing one :class:`~strangler_proxy.diff.exchange.ShadowPair`.

Results are immutable values; every consumer (the store, the guardrails, the
metrics) receives the same object and cannot change it for the others.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

# A result's key names a REST route ("ratings") or a GraphQL field, prefixed:
# "graphql:Title.rating". Route names cannot contain dots (config.py).
GRAPHQL_KEY_PREFIX = "graphql:"


class Verdict(str, enum.Enum):
    MATCH = "match"
    MISMATCH = "mismatch"
    CANDIDATE_ERROR = "candidate-error"
    LEGACY_ERROR = "legacy-error"
    SKIPPED = "skipped"
    # The candidate served the client and nothing was compared (canary's
    # target share, extracted without reverse shadow). Counted so guardrails
    # see the candidate's error rate over all the traffic it serves; never a
    # readiness sample.
    SERVED = "served"
    # A mismatch on a read that disappeared when both sides were asked again a
    # moment later (recheck.py): the candidate's copy was behind, e.g. the
    # outbox sync had not applied a write yet. Reported apart; never a
    # readiness sample nor a guardrail outcome.
    TRANSIENT = "transient"


class DiffKind(str, enum.Enum):
    MISSING = "missing"  # in legacy, not in candidate
    EXTRA = "extra"  # in candidate, not in legacy
    TYPE = "type"  # same path, different JSON types
    VALUE = "value"  # same path and type, different value
    LENGTH = "length"  # lists of different length
    STATUS = "status"  # HTTP status differs
    HEADER = "header"  # an allow-listed header differs
    BODY = "body"  # non-JSON bodies differ (text or binary hash)


@dataclass(frozen=True, slots=True)
class Difference:
    """One typed difference at one path, e.g. ``$.cast[3].name``."""

    kind: DiffKind
    path: str
    legacy: Any = None
    candidate: Any = None


@dataclass(frozen=True, slots=True)
class ShadowResult:
    key: str
    mode: str
    verdict: Verdict
    at: float
    legacy_status: int | None = None
    candidate_status: int | None = None
    legacy_latency_s: float | None = None
    candidate_latency_s: float | None = None
    differences: tuple[Difference, ...] = ()
    noise: tuple[Difference, ...] = ()  # differences explained by learned/declared noise
    reason: str | None = None  # why skipped / what error
    method: str = ""
    target: str = ""
    partition: str | None = None
    # Redacted, truncated samples for the store (set by the comparison stage).
    legacy_body: bytes | None = None
    candidate_body: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ResultListener(Protocol):
    """Anything that wants every result: the store writer, guardrails, metrics.

    ``observe`` must not block and must not raise; callers still guard it.
    """

    def observe(self, result: ShadowResult) -> None: ...
