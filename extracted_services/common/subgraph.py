"""A GraphQL federation (v2) subgraph on graphql-core, served at ``/graphql``.

A service declares the fields it contributes to the shared entities in SDL
and, per entity type, one *loader* that resolves a batch of keys at once::

    subgraph = Subgraph(
        '''
        type Title @key(fields: "id") { id: ID! rating: Rating @shareable }
        type Rating @shareable { averageRating: Float! numVotes: Int! }
        ''',
        loaders={"Title": load_titles},   # async (app, ids) -> {id: {"id":..., "rating": {...}}}
    )

The subgraph answers ``_service { sdl }`` (the SDL above under
``extend schema @link(...federation/v2.3...)``) and
``_entities(representations: [...])`` -- which is how the gateway asks it for
``Title.rating`` of the titles it already has. Parsing and validation are cached
by query text because a gateway sends the same few documents over and over.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
    execute,
    parse,
    validate,
)

from extracted_services.common.responses import json_response

FEDERATION_LINK = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", '
    'import: ["@key", "@shareable", "@external"])'
)
DEFAULT_DOCUMENT_CACHE = 256

# What the executable schema needs besides the service's own types; none of it
# is part of the SDL a gateway composes.
_FEDERATION_PLUMBING = """
scalar _Any
scalar FieldSet
directive @key(fields: FieldSet!, resolvable: Boolean = true) repeatable on OBJECT | INTERFACE
directive @shareable repeatable on OBJECT | FIELD_DEFINITION
directive @external on OBJECT | FIELD_DEFINITION
directive @link(url: String!, import: [String]) repeatable on SCHEMA
type _Service { sdl: String! }
"""

EntityLoader = Callable[[web.Application, list[str]], Awaitable[Mapping[str, dict[str, Any]]]]


class Subgraph:
    """The executable subgraph of one service (see the module docstring)."""

    def __init__(
        self,
        sdl: str,
        *,
        loaders: Mapping[str, EntityLoader],
        key: str = "id",
        document_cache: int = DEFAULT_DOCUMENT_CACHE,
    ) -> None:
        self.sdl = f"{FEDERATION_LINK}\n\n{sdl.strip()}\n"
        self.key = key
        self._loaders = dict(loaders)
        union = " | ".join(self._loaders)
        executable = (
            f"{_FEDERATION_PLUMBING}\nunion _Entity = {union}\n{sdl}\n"
            "type Query { _entities(representations: [_Any!]!): [_Entity]! _service: _Service! }\n"
        )
        self.schema: GraphQLSchema = build_schema(executable)
        entity_union = self.schema.type_map["_Entity"]
        assert isinstance(entity_union, GraphQLUnionType)
        entity_union.resolve_type = lambda obj, _info, _type: obj["__typename"]
        for typename in self._loaders:
            self._lazy_fields(typename)
        self._documents: OrderedDict[str, DocumentNode | list[GraphQLError]] = OrderedDict()
        self._cache_size = document_cache

    def _lazy_fields(self, typename: str) -> None:
        """Entities met *inside* a result (a credit's ``person``, a known-for
        title) arrive as bare keys; their contributed fields are loaded on demand
        through the same loader as ``_entities``."""
        gql_type = self.schema.type_map[typename]
        assert isinstance(gql_type, GraphQLObjectType)
        loader = self._loaders[typename]
        key = self.key

        def resolver(name: str) -> Callable[..., Any]:
            async def load(obj: dict[str, Any], info: GraphQLResolveInfo) -> Any:
                entity = (await loader(info.context, [str(obj[key])])).get(str(obj[key]))
                return None if entity is None else entity.get(name)

            def resolve(obj: dict[str, Any], info: GraphQLResolveInfo) -> Any:
                # Synchronous when the value is already there (the common case).
                return obj[name] if name in obj else load(obj, info)

            return resolve

        for name, fld in gql_type.fields.items():
            if name != key:
                fld.resolve = resolver(name)

    # ------------------------------------------------------------ execution
    def document(self, query: str) -> DocumentNode | list[GraphQLError]:
        """Parsed and validated document for ``query`` (or its errors), cached."""
        hit = self._documents.get(query)
        if hit is not None:
            self._documents.move_to_end(query)
            return hit
        try:
            doc: DocumentNode | list[GraphQLError] = parse(query)
        except GraphQLError as exc:
            doc = [exc]
        else:
            errors = validate(self.schema, doc)
            if errors:
                doc = list(errors)
        self._documents[query] = doc
        if len(self._documents) > self._cache_size:
            self._documents.popitem(last=False)
        return doc

    async def run(
        self,
        app: web.Application,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> ExecutionResult:
        doc = self.document(query)
        if isinstance(doc, list):
            return ExecutionResult(data=None, errors=doc)
        root = {"_entities": self._resolve_entities, "_service": {"sdl": self.sdl}}
        result = execute(
            self.schema,
            doc,
            root_value=root,
            context_value=app,
            variable_values=variables,
            operation_name=operation_name,
        )
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _resolve_entities(
        self, info: GraphQLResolveInfo, representations: list[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        app: web.Application = info.context
        wanted: dict[str, list[str]] = {}
        for rep in representations:
            typename = rep.get("__typename")
            if typename not in self._loaders:
                raise GraphQLError(f"_entities: unknown __typename {typename!r}")
            if self.key not in rep:
                raise GraphQLError(f"_entities: a {typename} representation needs {self.key!r}")
            wanted.setdefault(typename, []).append(str(rep[self.key]))
        loaded: dict[str, Mapping[str, dict[str, Any]]] = {}
        for typename, ids in wanted.items():
            loaded[typename] = await self._loaders[typename](app, list(dict.fromkeys(ids)))
        out: list[dict[str, Any] | None] = []
        for rep in representations:
            typename = rep["__typename"]
            entity = loaded[typename].get(str(rep[self.key]))
            out.append(None if entity is None else {**entity, "__typename": typename})
        return out

    # ----------------------------------------------------------------- HTTP
    async def handle(self, request: web.Request) -> web.Response:
        """``POST /graphql`` with ``{"query", "variables", "operationName"}``
        (``GET ?query=`` works too)."""
        if request.method == "GET":
            body: dict[str, Any] = {"query": request.query.get("query", "")}
            if "variables" in request.query:
                body["variables"] = _loads_or_none(request.query["variables"])
        else:
            body = _loads_or_none(await request.read()) or {}
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query:
            return json_response({"errors": [{"message": "a GraphQL request needs a 'query' string"}]}, status=400)
        variables = body.get("variables")
        op = body.get("operationName")
        if isinstance(self.document(query), list):  # did not parse or validate: the request is bad
            return json_response((await self.run(request.app, query)).formatted, status=400)
        result = await self.run(
            request.app,
            query,
            variables if isinstance(variables, dict) else None,
            op if isinstance(op, str) else None,
        )
        return json_response(result.formatted)


def _loads_or_none(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
