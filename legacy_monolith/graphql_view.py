"""``/graphql`` over HTTP: GET and POST, variables, operationName, spec errors.

Parsing and validating a document costs about a millisecond, more than
executing a small query, so the outcome of both is cached by query text
(bounded LRU; invalid documents are cached too -- they stay invalid).

Status codes: a request that cannot run at all (bad JSON, no query, syntax or
validation errors, bad variables) is a 400 with ``{"errors": [...]}``; once
execution starts the answer is a 200 with ``data`` and, for fields that
failed, ``errors`` -- as the GraphQL spec and GraphQL-over-HTTP describe.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from legacy_monolith.db import ENGINE
from legacy_monolith.errors import ApiError
from legacy_monolith.graphql_limits import MaxDepthRule
from legacy_monolith.graphql_schema import SCHEMA, GraphQLContext, connection_slots, field_resolver

log = logging.getLogger(__name__)

DOCUMENT_CACHE_SIZE = 512
MAX_QUERY_LENGTH = 100_000
RULES = (*specified_rules, MaxDepthRule)


@dataclass(frozen=True, slots=True)
class _Prepared:
    document: DocumentNode | None
    errors: tuple[GraphQLError, ...]


class DocumentCache:
    """Parse + validate results by query text, least recently used evicted first."""

    def __init__(self, size: int = DOCUMENT_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, _Prepared] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> _Prepared:
        hit = self._entries.get(query)
        if hit is not None:
            self._entries.move_to_end(query)
            return hit
        try:
            document = parse(query)
        except GraphQLError as exc:
            prepared = _Prepared(None, (exc,))
        else:
            errors = validate(SCHEMA, document, RULES)
            prepared = _Prepared(None if errors else document, tuple(errors))
        self._entries[query] = prepared
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return prepared


class _RequestError(Exception):
    """The HTTP request itself is unusable (answered 400 before any GraphQL)."""


def _error_json(error: GraphQLError) -> dict[str, Any]:
    original = error.original_error
    if original is not None and not isinstance(original, GraphQLError):
        if isinstance(original, ApiError):
            error.extensions = {**(error.extensions or {}), "code": original.code.upper()}
        else:
            # A bug of ours: log it, do not leak internals to the client.
            log.error("resolver failed at %s", error.path, exc_info=original)
            return {"message": "internal error", "path": error.path, "extensions": {"code": "INTERNAL"}}
    return error.formatted  # type: ignore[return-value]


def _json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    # orjson: several times cheaper than json.dumps, and the same JSON values.
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _errors_response(errors: list[dict[str, Any]], status: int = 400) -> web.Response:
    return _json_response({"errors": errors}, status=status)


async def _read_params(request: web.Request) -> tuple[str, dict[str, Any] | None, str | None]:
    if request.method == "GET":
        raw_vars = request.query.get("variables")
        try:
            variables = json.loads(raw_vars) if raw_vars else None
        except ValueError as exc:
            raise _RequestError(f"variables is not valid JSON: {exc}") from None
        params: dict[str, Any] = {
            "query": request.query.get("query"),
            "variables": variables,
            "operationName": request.query.get("operationName") or None,
        }
    elif request.content_type == "application/graphql":
        params = {"query": await request.text(), "variables": None, "operationName": None}
    else:
        raw = await request.read()
        try:
            params = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise _RequestError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise _RequestError('the body must be a JSON object: {"query": "...", "variables": {...}}')
    query, variables, operation = params.get("query"), params.get("variables"), params.get("operationName")
    if not isinstance(query, str) or not query.strip():
        raise _RequestError("query is required: a GraphQL document as a string")
    if len(query) > MAX_QUERY_LENGTH:
        raise _RequestError(f"query is too long ({len(query)} characters); at most {MAX_QUERY_LENGTH}")
    if variables is not None and not isinstance(variables, dict):
        raise _RequestError("variables must be a JSON object")
    if operation is not None and not isinstance(operation, str):
        raise _RequestError("operationName must be a string")
    return query, variables, operation


def make_handler(cache: DocumentCache | None = None) -> Any:
    """The ``/graphql`` handler, with its own document cache."""
    documents = cache or DocumentCache()
    slots: dict[AsyncEngine, asyncio.Semaphore | None] = {}  # one app, one engine: made on first request

    async def graphql_handler(request: web.Request) -> web.Response:
        try:
            query, variables, operation_name = await _read_params(request)
        except _RequestError as exc:
            return _errors_response([{"message": str(exc)}])
        prepared = documents.get(query)
        if prepared.document is None:
            return _errors_response([e.formatted for e in prepared.errors])  # type: ignore[misc]
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            which = f"no operation named {operation_name!r}" if operation_name else "operationName is required"
            return _errors_response([{"message": f"{which} (the document has several operations or none)"}])
        if request.method == "GET" and operation.operation != OperationType.QUERY:
            return web.json_response(
                {"errors": [{"message": f"{operation.operation.value} operations need POST"}]},
                status=405,
                headers={"Allow": "POST"},
            )
        engine = request.app[ENGINE]
        if engine not in slots:
            slots[engine] = connection_slots(engine)
        context = GraphQLContext(engine, slots[engine])
        try:
            result = execute(
                SCHEMA,
                prepared.document,
                variable_values=variables,
                operation_name=operation_name,
                context_value=context,
                field_resolver=field_resolver,
            )
            if not isinstance(result, ExecutionResult):
                result = await result
        finally:
            await context.close()
        errors = [_error_json(e) for e in result.errors or ()]
        if result.data is None and errors and all(e.get("path") is None for e in errors):
            # Nothing executed: the variables did not coerce. A request error.
            return _errors_response(errors)
        body: dict[str, Any] = {"data": result.data}
        if errors:
            body["errors"] = errors
        return _json_response(body)

    return graphql_handler


def add_routes(app: web.Application) -> None:
    handler = make_handler()
    app.router.add_get("/graphql", handler)
    app.router.add_post("/graphql", handler)
