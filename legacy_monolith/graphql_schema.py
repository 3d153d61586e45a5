"""The monolith's GraphQL schema: the catalogue as a federation subgraph.

:data:`SUBGRAPH_SDL` is what ``_service { sdl }`` returns -- Apollo Federation
2 style (``extend schema @link(...)``), with ``Title`` and ``Person`` as
entities keyed by ``id`` so a gateway can fetch them through ``_entities``.
The executable :data:`SCHEMA` adds the federation plumbing (``_Any``,
``_Entity``, ``_Service``, the directive definitions).

Resolvers read through the per-request loaders of :class:`GraphQLContext`,
so one level of a query costs one SQL statement whatever its width. Field
names are camelCase; records are snake_case, which :func:`field_resolver`
bridges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLResolveInfo, GraphQLSchema, build_schema
from graphql.type import GraphQLObjectType, GraphQLUnionType

from legacy_monolith import catalogue, validation
from legacy_monolith.catalogue import CastMember, PersonRecord, RatingRecord, TitleRecord
from legacy_monolith.db import Sessions
from legacy_monolith.errors import BadRequest
from legacy_monolith.loaders import BatchLoader
from legacy_monolith.quirks import unordered
from legacy_monolith.validation import DEFAULT_SEARCH_LIMIT

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


@dataclass
class GraphQLContext:
    """Per-request state: the session factory and one loader per batched lookup."""

    sessions: Sessions
    titles: BatchLoader[str, TitleRecord] = field(init=False)
    people: BatchLoader[str, PersonRecord] = field(init=False)
    cast: BatchLoader[str, list[CastMember]] = field(init=False)
    ratings: BatchLoader[str, RatingRecord] = field(init=False)
    images: BatchLoader[str, list[catalogue.ImageRecord]] = field(init=False)
    known_for: BatchLoader[str, list[TitleRecord]] = field(init=False)

    def __post_init__(self) -> None:
        def batched(query: Any) -> BatchLoader[Any, Any]:
            async def run(keys: Any) -> Any:
                async with self.sessions() as session:
                    return await query(session, keys)

            return BatchLoader(run)

        self.titles = batched(catalogue.titles_by_ids)
        self.people = batched(catalogue.people_by_ids)
        self.cast = batched(catalogue.cast_of)
        self.ratings = batched(catalogue.ratings_of)
        self.images = batched(catalogue.images_of)
        self.known_for = batched(catalogue.known_for)


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def field_resolver(source: Any, info: GraphQLResolveInfo, **_args: Any) -> Any:
    """Default resolver: ``primaryTitle`` reads ``source.primary_title``."""
    name = _CAMEL.sub("_", info.field_name).lower()
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
    async with _ctx(info).sessions() as session:
        titles, people = await catalogue.search(session, text, limit=limit)
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

__all__ = ["SCHEMA", "SUBGRAPH_SDL", "GraphQLContext", "field_resolver"]
