"""What every call of the admin API shares: its error shape, who is calling, request bodies.

Errors are ``{"error": {"code", "message"}}``. A failure of the control
database (503) or of the API itself (500) answers a short message and an
``error_id``; the detail -- SQL, parameters, traceback -- goes only to the log
line carrying the same id. A JSON body is an object whose keys are all known:
an unknown key is refused naming it, as strangler.yaml refuses unknown fields.

    >>> error_body("bad_request", "no")
    {'error': {'code': 'bad_request', 'message': 'no'}}
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from strangler_proxy.errors import StoreError

log = logging.getLogger("strangler.admin")

ERROR_ID_BYTES = 6  # 12 hex digits: enough to find one line in a day of logs
WHO = web.RequestKey("who", str)  # the name of the token presented (set by the admin API's auth)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(error_body(code, message), status=status, headers=headers or None)


def logged_error(status: int, code: str, message: str, detail: BaseException, what: str) -> web.Response:
    """An error whose detail (SQL, parameters, a traceback) stays in the log.

    The client gets ``message`` and a fresh ``error_id``; the log line carries
    the same id with the whole detail, so an operator can find one from the other.
    """
    error_id = secrets.token_hex(ERROR_ID_BYTES)
    log.error("%s (error id %s): %s", what, error_id, detail, exc_info=detail)
    text = f"{message} (error id {error_id}; the details are in the proxy's log)"
    body = {"error": {"code": code, "message": text, "error_id": error_id}}
    return web.json_response(body, status=status)


def store_unavailable(what: str, exc: StoreError) -> web.Response:
    return logged_error(503, "store_unavailable", f"{what}: the control database failed", exc, what)


class BadRequest(web.HTTPBadRequest):
    """A 400 in the admin API's error shape, raised from a handler's helpers."""

    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps(error_body("bad_request", message)), content_type="application/json")


async def json_object(request: web.Request, allowed: Sequence[str], example: str) -> dict[str, Any]:
    """The request's JSON object, every key one of ``allowed``; else :class:`BadRequest`
    (``example`` shows what a body looks like)."""
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(f"the body must be JSON like {example}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object like {example}")
    unknown = ", ".join(repr(key) for key in body if key not in allowed)
    if unknown:
        raise BadRequest(f"unknown key {unknown} in the body (allowed: {', '.join(allowed)})")
    return body


def text_field(body: dict[str, Any], key: str) -> str:
    """``body[key]`` as text ('' when absent or null); :class:`BadRequest` when it is not text."""
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise BadRequest(f'"{key}" must be text')
    return value
