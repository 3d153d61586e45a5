"""The monolith's GraphQL schema: the catalogue as a federation subgraph.

:data:`SUBGRAPH_SDL` is what ``_service { sdl }`` returns -- Apollo Federation
2 style (``extend schema @link(...)``), with ``Title`` and ``Person`` as
entities keyed by ``id`` so a gateway can fetch them through ``_entities``.
The executable :data:`SCHEMA` adds the federation plumbing (``_Any``,
``_Entity``, ``_Service``, the directive definitions).

Resolvers read through the per-request loaders of :class:`GraphQLContext`,
so one level of a query costs one SQL statement whatever its width, all on
one connection per request. Field names are camelCase; records are
snake_case, which :func:`field_resolver` bridges.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from graphql import GraphQLResolveInfo, GraphQLSchema, build_schema
from graphql.type import GraphQLObjectType, GraphQLUnionType
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from legacy_monolith import catalogue, validation
from legacy_monolith.catalogue import CastMember, PersonRecord, RatingRecord, TitleRecord
from legacy_monolith.errors import BadRequest
from legacy_monolith.loaders import BatchLoader
from legacy_monolith.quirks import unordered
from legacy_monolith.validation import DEFAULT_SEARCH_LIMIT

T = TypeVar("T")

FEDERATION_VERSION_URL = "https://specs.apollo.dev/federation/v2.3"

SUBGRAPH_SDL = f'''extend schema @link(url: "{FEDERATION_VERSION_URL}", import: ["@key"])

type Query {{
  title(id: ID!): Title
  person(id: ID!): Person
  search(q: String!, limit: Int = {DEFAULT_SEARCH_LIMIT}): SearchResult!
}}

type Title @key(fields: "id") {{
  id: ID!
  primaryTitle: String!
  originalTitle: String!
  kind: String!
  startYear: Int
  endYear: Int
  runtimeMinutes: Int
  genres: [String!]!
  cast: [Credit!]!
  rating: Rating
  images: [Image!]!
}}

type Person @key(fields: "id") {{
  id: ID!
  name: String!
  birthYear: Int
  deathYear: Int
  professions: [String!]!
  knownFor: [Title!]!
}}

type Credit {{
  person: Person!
  category: String!
  characters: [String!]
  ordering: Int!
}}

type Rating {{
  averageRating: Float!
  numVotes: Int!
}}

type Image {{
  id: ID!
  url: String!
  width: Int!
  height: Int!
  caption: String
}}

type SearchResult {{
  titles: [Title!]!
  people: [Person!]!
}}
'''

_FEDERATION_PLUMBING = """
directive @link(url: String!, import: [link__Import]) repeatable on SCHEMA
directive @key(fields: federation__FieldSet!, resolvable: Boolean = true) repeatable on OBJECT | INTERFACE
scalar link__Import
scalar federation__FieldSet
scalar _Any
union _Entity = Title | Person
type _Service { sdl: String }
extend type Query {
  _entities(representations: [_Any!]!): [_Entity]!
  _service: _Service!
}
"""


Batch = Callable[[AsyncConnection, Sequence[Any]], Awaitable[Mapping[Any, Any]]]


class GraphQLContext:
    """Per-request state: one database connection and one loader per batched lookup.

    The connection is opened on the first lookup and shared by every level of
    the query (one pool checkout and one reset per request instead of one per
    batch); lookups take turns on it, because a connection runs one statement
    at a time. Loaders are made on first use: most queries need one or two of
    them. The view calls :meth:`close` once execution has ended.
    """

    def __init__(self, engine: AsyncEngine, slots: asyncio.Semaphore | None = None) -> None:
        self._engine = engine
        self._slots = slots  # see connection_slots()
        self._conn: AsyncConnection | None = None
        self._turn = asyncio.Lock()
        self._loaders: dict[Batch, BatchLoader[Any, Any]] = {}

    async def read(self, query: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``query(connection)`` on this request's connection, one at a time."""
        async with self._turn:
            if self._conn is None:
                if self._slots is not None:
                    await self._slots.acquire()
                try:
                    self._conn = await self._engine.connect()
                except BaseException:
                    if self._slots is not None:
                        self._slots.release()
                    raise
            return await query(self._conn)

    async def close(self) -> None:
        async with self._turn:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            finally:
                if self._slots is not None:
                    self._slots.release()

    def _loader(self, batch: Batch) -> BatchLoader[Any, Any]:
        loader = self._loaders.get(batch)
        if loader is None:
            async def run(keys: Sequence[Any]) -> Mapping[Any, Any]:
                return await self.read(lambda conn: batch(conn, keys))

            loader = self._loaders[batch] = BatchLoader(run)
        return loader

    @property
    def titles(self) -> BatchLoader[str, TitleRecord]:
        return self._loader(catalogue.titles_by_ids)

    @property
    def people(self) -> BatchLoader[str, PersonRecord]:
        return self._loader(catalogue.people_by_ids)

    @property
    def cast(self) -> BatchLoader[str, list[CastMember]]:
        return self._loader(catalogue.cast_of)

    @property
    def ratings(self) -> BatchLoader[str, RatingRecord]:
        return self._loader(catalogue.ratings_of)

    @property
    def images(self) -> BatchLoader[str, list[catalogue.ImageRecord]]:
        return self._loader(catalogue.images_of)

    @property
    def known_for(self) -> BatchLoader[str, list[TitleRecord]]:
        return self._loader(catalogue.known_for)


def connection_slots(engine: AsyncEngine) -> asyncio.Semaphore | None:
    """A limit of concurrent GraphQL requests holding a connection: the pool's size.

    Past it, a pool opens overflow connections and closes them on return -- on SQLite a new
    aiosqlite thread and four PRAGMAs each time, on PostgreSQL a new session -- which at 16
    concurrent requests cost more CPU than the queries. Waiting for a pooled one is cheaper.
    None when the pool has no fixed size.
    """
    size = getattr(engine.pool, "size", None)
    return asyncio.Semaphore(size()) if callable(size) else None


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@functools.cache
def _snake(field_name: str) -> str:
    # Field names are few and fixed by the schema: converted once each, not per resolved value.
    return _CAMEL.sub("_", field_name).lower()


def field_resolver(source: Any, info: GraphQLResolveInfo, **_args: Any) -> Any:
    """Default resolver: ``primaryTitle`` reads ``source.primary_title``."""
    name = _snake(info.field_name)
    if isinstance(source, dict):
        return source.get(name)
    return getattr(source, name, None)


def _ctx(info: GraphQLResolveInfo) -> GraphQLContext:
    return info.context  # type: ignore[no-any-return]


async def _title(_root: Any, info: GraphQLResolveInfo, id: str) -> TitleRecord | None:
    return await _ctx(info).titles.load(validation.title_id(id))


async def _person(_root: Any, info: GraphQLResolveInfo, id: str) -> PersonRecord | None:
    return await _ctx(info).people.load(validation.person_id(id))


async def _search(_root: Any, info: GraphQLResolveInfo, q: str, limit: int | None) -> dict[str, Any]:
    text = validation.search_text(q)
    limit = validation.search_limit(DEFAULT_SEARCH_LIMIT if limit is None else limit)
    titles, people = await _ctx(info).read(lambda conn: catalogue.search(conn, text, limit=limit))
    return {"titles": titles, "people": people}


async def _entities(_root: Any, info: GraphQLResolveInfo, representations: list[Any]) -> list[Any]:
    ctx = _ctx(info)
    pending = []
    for i, rep in enumerate(representations):
        if not isinstance(rep, dict) or not isinstance(rep.get("id"), str):
            raise BadRequest(f"representations[{i}] must be an object with __typename and a string id")
        typename = rep.get("__typename")
        if typename == "Title":
            pending.append(ctx.titles.load(validation.title_id(rep["id"])))
        elif typename == "Person":
            pending.append(ctx.people.load(validation.person_id(rep["id"])))
        else:
            raise BadRequest(f"representations[{i}]: __typename must be Title or Person; got {typename!r}")
    return [await p for p in pending]


def _service(_root: Any, _info: GraphQLResolveInfo) -> dict[str, str]:
    return {"sdl": SUBGRAPH_SDL}


async def _title_cast(title: TitleRecord, info: GraphQLResolveInfo) -> list[CastMember]:
    return await _ctx(info).cast.load(title.id) or []


async def _title_rating(title: TitleRecord, info: GraphQLResolveInfo) -> RatingRecord | None:
    return await _ctx(info).ratings.load(title.id)


async def _title_images(title: TitleRecord, info: GraphQLResolveInfo) -> list[catalogue.ImageRecord]:
    return unordered(await _ctx(info).images.load(title.id) or [])


async def _credit_person(credit: CastMember, info: GraphQLResolveInfo) -> PersonRecord | None:
    return await _ctx(info).people.load(credit.person_id)


async def _person_known_for(person: PersonRecord, info: GraphQLResolveInfo) -> list[TitleRecord]:
    return await _ctx(info).known_for.load(person.id) or []


def _entity_type(value: Any, _info: GraphQLResolveInfo, _type: Any) -> str:
    return "Title" if isinstance(value, TitleRecord) else "Person"


def _build() -> GraphQLSchema:
    schema = build_schema(SUBGRAPH_SDL + _FEDERATION_PLUMBING)
    resolvers: dict[str, dict[str, Any]] = {
        "Query": {
            "title": _title,
            "person": _person,
            "search": _search,
            "_entities": _entities,
            "_service": _service,
        },
        "Title": {"cast": _title_cast, "rating": _title_rating, "images": _title_images},
        "Credit": {"person": _credit_person},
        "Person": {"knownFor": _person_known_for},
    }
    for type_name, fields in resolvers.items():
        gql_type = schema.type_map[type_name]
        assert isinstance(gql_type, GraphQLObjectType)
        for field_name, resolve in fields.items():
            gql_type.fields[field_name].resolve = resolve
    entity = schema.type_map["_Entity"]
    assert isinstance(entity, GraphQLUnionType)
    entity.resolve_type = _entity_type
    return schema


SCHEMA = _build()

__all__ = ["SCHEMA", "SUBGRAPH_SDL", "GraphQLContext", "connection_slots", "field_resolver"]
