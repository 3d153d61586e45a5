"""The quirks of a real monolith, kept on purpose (see docs/monolith.md).

- Every JSON body carries volatile fields: ``generated_at`` (a timestamp of
  this response) and ``request_id`` (fresh per request).
- Average ratings are plain floats (``7.333333333333333``), never rounded.
- Image lists come back in a different order on every request.

A proxy comparing this service with an extracted one has to learn or be told
that these differences are noise.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = web.RequestKey("monolith_request_id", str)

# Not a security feature: only makes list order vary between requests.
_shuffler = random.Random()


def request_id(request: web.Request) -> str:
    """This request's id (made on first use, echoed in a response header)."""
    rid = request.get(_REQUEST_ID)
    if rid is None:
        rid = uuid.uuid4().hex
        request[_REQUEST_ID] = rid
    return rid


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo the request id (the same one as in the body) in a response header."""
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = request_id(request)
    return response


def volatile(request: web.Request) -> dict[str, Any]:
    """The fields that differ on every response, even for the same data."""
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "request_id": request_id(request),
    }


def unordered(items: list[T]) -> list[T]:
    """A shuffled copy: callers must not rely on the order of this list."""
    out = list(items)
    _shuffler.shuffle(out)
    return out
