"""The HTTP conventions every extracted service shares with the monolith.

Successful bodies carry the monolith's volatile envelope (``generated_at``,
``request_id``) so a shadow comparison sees the same shape on both sides;
errors are ``{"error": {"code", "message"}}`` with a 4xx status, never a 500
for a client's mistake.

    >>> body = envelope({"title_id": "tt1"})
    >>> sorted(body)
    ['generated_at', 'request_id', 'title_id']
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServiceError(Exception):
    """A service refused a request (answered as JSON with ``status``).

    >>> ServiceError(404, "not_found", "no title tt9").status
    404
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")

# aiohttp's own HTTP exceptions are mapped to the contract's error codes.
_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def envelope(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` plus the volatile fields the monolith adds to every body."""
    return {
        **payload,
        "generated_at": datetime.now(UTC).isoformat(),
        "request_id": uuid.uuid4().hex,
    }


def json_response(payload: dict[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


def not_found(message: str) -> ServiceError:
    return ServiceError(404, "not_found", message)


def bad_request(message: str) -> ServiceError:
    return ServiceError(400, "bad_request", message)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what is wrong
    (parsed by the stdlib so the messages match the monolith's)."""
    raw = await request.read()
    if not raw:
        raise bad_request("the body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return data


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate refusals into the contract's JSON errors."""
    try:
        return await handler(request)
    except ServiceError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, _CODES.get(exc.status, "error"), _router_message(request, exc))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


def _router_message(request: web.Request, exc: web.HTTPException) -> str:
    """aiohttp's own refusals, worded as the monolith words them."""
    if exc.status == 404:
        return f"no route for {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return "request body is too large"
    return exc.reason
