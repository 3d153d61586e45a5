"""The errors a GraphQL client gets: each with the ``extensions.code`` Apollo Server and
Apollo Gateway use, so Apollo Client, urql and Relay tooling can branch on them.

    code                           status  when
    GRAPHQL_PARSE_FAILED           400     the query is not GraphQL
    GRAPHQL_VALIDATION_FAILED      400     not valid against the composed schema
    BAD_USER_INPUT                 400     variables that do not fit their types
    OPERATION_RESOLUTION_FAILURE   400     operationName unknown, or missing with several operations
    BAD_REQUEST                    400/405 not a GraphQL request (body, method, a GET mutation)
    PERSISTED_QUERY_NOT_SUPPORTED  400     a persisted-query hash without the query (none are kept)
    BAD_REQUEST                    400     with cells: no partition key (cells.unkeyed: refuse), or
                                           root fields that give different keys
    CELL_NOT_SERVED                503     with cells: the key's cell was added by a reload after
                                           the gateway started (a restart serves it)
    SUBGRAPH_ERROR                 200     a backend gave no usable answer: its fields are null
    DOWNSTREAM_SERVICE_ERROR       200     a backend's error without a code (its own code is kept)
    INTERNAL_SERVER_ERROR          500     the gateway failed (200: a null the schema forbids, unexplained)

Backend errors carry the backend's name in ``extensions.serviceName`` from the
executor on; :func:`finish` removes it unless the client may know which backend
answered (strangler_proxy/disclosure.py). Messages never name a backend.

    >>> passed_on({"message": "no such title", "locations": [{"line": 1, "column": 3}]}, "ratings")
    {'message': 'no such title', 'extensions': {'code': 'DOWNSTREAM_SERVICE_ERROR', 'serviceName': 'ratings'}}
    >>> errors = [passed_on({"message": "x", "extensions": {"code": "NOT_FOUND"}}, "ratings")]
    >>> finish(errors, disclose=False)
    >>> errors
    [{'message': 'x', 'extensions': {'code': 'NOT_FOUND'}}]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphql import GraphQLError

JSON = dict[str, Any]

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT = "BAD_USER_INPUT"
OPERATION_RESOLUTION_FAILURE = "OPERATION_RESOLUTION_FAILURE"
BAD_REQUEST = "BAD_REQUEST"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
SUBGRAPH_ERROR = "SUBGRAPH_ERROR"
DOWNSTREAM_SERVICE_ERROR = "DOWNSTREAM_SERVICE_ERROR"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
CELL_NOT_SERVED = "CELL_NOT_SERVED"
SERVICE_NAME = "serviceName"  # the extensions key naming a backend


def error(message: str, code: str) -> JSON:
    """One error of the gateway's own."""
    return {"message": message, "extensions": {"code": code}}


def coded(e: GraphQLError, code: str) -> JSON:
    """graphql-core's error as the client gets it, with ``code`` unless it has one."""
    out = e.formatted
    ext = dict(out.get("extensions") or {})
    ext.setdefault("code", code)
    out["extensions"] = ext
    return out


def backend_error(backend: str, reason: str, path: Sequence[str | int]) -> JSON:
    """The error at a field whose backend gave no usable answer (``reason``: why, never who)."""
    return {"message": f"backend unavailable: {reason}", "path": list(path),
            "extensions": {"code": SUBGRAPH_ERROR, SERVICE_NAME: backend}}


def passed_on(e: JSON, backend: str) -> JSON:
    """A backend's error as the client gets it: without locations (they point into the backend's
    document, not the client's), with a code (the backend's own, else DOWNSTREAM_SERVICE_ERROR, as
    Apollo Gateway says) and the backend's name in ``serviceName``."""
    out = {k: v for k, v in e.items() if k != "locations"}
    ext = e.get("extensions")
    ext = dict(ext) if isinstance(ext, dict) else {}
    if not isinstance(ext.get("code"), str):
        ext["code"] = DOWNSTREAM_SERVICE_ERROR
    ext[SERVICE_NAME] = backend
    out["extensions"] = ext
    return out


def finish(errors: list[JSON], *, disclose: bool) -> None:
    """The errors of an answer, in place: every one with a code (graphql-core's own, such as a null
    where the schema forbids one, are the gateway's: INTERNAL_SERVER_ERROR), and a backend's name
    only when ``disclose``."""
    for e in errors:
        ext = e.get("extensions")
        ext = dict(ext) if isinstance(ext, dict) else {}
        if not isinstance(ext.get("code"), str):
            ext["code"] = INTERNAL_SERVER_ERROR
        if not disclose:
            ext.pop(SERVICE_NAME, None)
        e["extensions"] = ext


class Refused(Exception):
    """A request answered with one error and no data (``status``, ``code``, the message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def body(self) -> JSON:
        return {"errors": [error(str(self), self.code)]}
