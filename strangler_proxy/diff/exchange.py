"""What the shadow path hands to the comparison stage.

An :class:`Exchange` is one request sent to one upstream and what came back
(or why nothing did). A :class:`ShadowPair` joins the legacy and candidate
exchanges of one client request -- plus, for noise learning, a second legacy
exchange. Both are immutable: once built, nothing downstream can change what
was observed.

    >>> ex = Exchange(upstream="legacy", method="GET", target="/api/titles/tt1",
    ...               status=200, body=b"{}", latency_s=0.003)
    >>> ex.ok
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

Headers = tuple[tuple[str, str], ...]
Side = Literal["legacy", "target"]


@dataclass(frozen=True, slots=True)
class Exchange:
    upstream: str
    method: str
    target: str  # raw path + query as sent to this upstream
    status: int | None = None  # None: no response at all (see ``error``)
    request_headers: Headers = ()
    request_body: bytes | None = None
    response_headers: Headers = ()
    body: bytes = b""
    latency_s: float = 0.0
    error: str | None = None  # "connect", "timeout", "reset", "too-large", ...
    body_truncated: bool = False

    @property
    def ok(self) -> bool:
        """A response arrived and it is not a server error."""
        return self.error is None and self.status is not None and self.status < 500

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.response_headers:
            if k.lower() == lname:
                return v
        return None


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """Both sides of one mirrored request, ready to be compared.

    ``key`` names what is being migrated: a route name, or
    ``graphql:Type.field`` for a GraphQL field.
    """

    key: str
    mode: str
    served_by: Side  # whose answer the client got
    legacy: Exchange
    candidate: Exchange
    legacy_again: Exchange | None = None  # second legacy answer, for noise learning
    partition: str | None = None  # partition key value / entity key, if any
    at: float = field(default_factory=time.time)
