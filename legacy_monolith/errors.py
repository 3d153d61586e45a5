"""The monolith's client errors and how they become JSON responses.

Every client mistake -- unknown or malformed ids, bad JSON, wrong types,
out-of-range values, absurd limits -- raises an :class:`ApiError` and is
answered by :func:`error_middleware` as
``{"error": {"code": "...", "message": "..."}}`` with a 4xx status. Only a
bug of ours is a 500, and it never leaks a traceback.

These are HTTP answers of the demo monolith (which stands for "any legacy
service"), not :class:`strangler_proxy.errors.StranglerError` s.

    >>> NotFound("no title 'tt9999999'").status
    404
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """A request the monolith refuses; ``status`` is always 4xx."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BadRequest(ApiError):
    """The request is malformed: bad JSON, wrong type, out of range."""


class NotFound(ApiError):
    """A well-formed id that names nothing."""

    status = 404
    code = "not_found"


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error; client mistakes are never 500s."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own refusals (no such route, wrong method, body too large).
        message = _router_message(request, exc)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _CODES.get(exc.status, "error"), message, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the monolith's log")


def _router_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no route for {request.method} {request.path}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.status == 413:
        return "request body is too large"
    return exc.reason
