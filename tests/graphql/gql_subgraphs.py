"""Two small federation subgraphs built with graphql-core, for the gateway's own tests.

``products`` plays the monolith (it answers everything about products, users,
reviews); ``reviews`` is an extracted service that also resolves
``Product.reviews``/``Product.rating`` and adds ``User.reviews``,
``Product.topReview`` and ``Query.latestReviews``. Both read one shared
:class:`World`, so a field served by either backend gives the same answer --
unless a test sets ``world.reviews_rating_skew``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import graphql
from aiohttp import web

FEDERATION_PRELUDE = """
scalar _Any
type _Service { sdl: String }
directive @key(fields: String!, resolvable: Boolean = true) repeatable on OBJECT | INTERFACE
directive @external on FIELD_DEFINITION
directive @shareable on OBJECT | FIELD_DEFINITION
"""

PRODUCTS_SDL = '''
type Query {
  product(id: ID!): Product
  products(first: Int = 10): [Product!]!
  user(id: ID!): User
  search(q: String!): [SearchResult!]!
  failing: String
  strictProduct(id: ID!): Product!
}
type Mutation {
  createProduct(name: String!, price: Float!): Product!
}
"A product on sale"
type Product @key(fields: "id") {
  id: ID!
  name: String!
  price: Float!
  tags: [String!]!
  category: Category!
  kind: Kind!
  reviews: [Review!]!
  rating: Float
  secret: String
}
enum Kind { BOOK GAME TOOL }
type Category { id: ID! name: String! }
type User @key(fields: "id") { id: ID! name: String! }
type Review @key(fields: "id") { id: ID! body: String! stars: Int! author: User! product: Product! }
union SearchResult = Product | User
'''

REVIEWS_SDL = '''
extend type Query { latestReviews(n: Int!): [Review!]! }
extend type Mutation { addReview(productId: ID!, body: String!, stars: Int!): Review! }
type Product @key(fields: "id") {
  id: ID!
  reviews: [Review!]!
  rating: Float
  topReview: Review
}
type Review @key(fields: "id") { id: ID! body: String! stars: Int! author: User! product: Product! }
type User @key(fields: "id") { id: ID! reviews: [Review!]! }
'''


@dataclass
class World:
    """The shared data and a log of what each backend was asked."""

    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    reviews: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (backend, query)
    payloads: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)  # (backend, body, authorization)
    writes: list[str] = field(default_factory=list)
    reviews_rating_skew: float = 0.0
    delay_s: dict[str, float] = field(default_factory=dict)  # backend -> seconds before it answers

    @classmethod
    def demo(cls) -> World:
        w = cls()
        kinds = ["BOOK", "GAME", "TOOL"]
        for i in range(1, 8):
            w.products[f"p{i}"] = {"id": f"p{i}", "name": f"Product {i}", "price": 10.0 * i + 0.5,
                                   "tags": [f"t{i}", "all"], "category": {"id": f"c{i % 3}", "name": f"Cat {i % 3}"},
                                   "kind": kinds[i % 3], "secret": None}
        for i in range(1, 5):
            w.users[f"u{i}"] = {"id": f"u{i}", "name": f"User {i}"}
        n = 0
        for i in range(1, 8):
            for _ in range(i % 4):
                n += 1
                w.reviews[f"r{n}"] = {"id": f"r{n}", "body": f"Review {n} of p{i}", "stars": 1 + (n % 5),
                                      "author": f"u{1 + n % 4}", "product": f"p{i}"}
        return w

    def product_reviews(self, pid: str) -> list[dict[str, Any]]:
        return [r for r in self.reviews.values() if r["product"] == pid]

    def rating(self, pid: str) -> float | None:
        rs = self.product_reviews(pid)
        return sum(r["stars"] for r in rs) / len(rs) if rs else None


Resolver = Callable[..., Any]


def _resolvers_products(w: World) -> dict[str, Resolver]:
    def strict(_o: Any, _i: Any, id: str) -> Any:
        p = w.products.get(id)
        if p is None:
            raise graphql.GraphQLError(f"no product {id}")
        return p

    def create(_o: Any, _i: Any, name: str, price: float) -> Any:
        pid = f"p{len(w.products) + 1}"
        w.writes.append(f"createProduct:{pid}")
        w.products[pid] = {"id": pid, "name": name, "price": price, "tags": [], "kind": "BOOK",
                           "category": {"id": "c0", "name": "Cat 0"}, "secret": None}
        return w.products[pid]

    def search(_o: Any, _i: Any, q: str) -> list[Any]:
        out = [dict(p, __typename="Product") for p in w.products.values() if q in p["name"]]
        return out + [dict(u, __typename="User") for u in w.users.values() if q in u["name"]]

    def failing(_o: Any, _i: Any) -> Any:
        raise graphql.GraphQLError("failing always fails", extensions={"code": "BROKEN"})

    def secret(p: Any, _i: Any) -> Any:
        if p["id"] == "p3":
            raise graphql.GraphQLError("secret of p3 is classified")
        return p.get("secret")

    return {
        "Query.product": lambda _o, _i, id: w.products.get(id),
        "Query.products": lambda _o, _i, first: list(w.products.values())[:first],
        "Query.user": lambda _o, _i, id: w.users.get(id),
        "Query.search": search,
        "Query.failing": failing,
        "Query.strictProduct": strict,
        "Mutation.createProduct": create,
        "Product.reviews": lambda p, _i: w.product_reviews(p["id"]),
        "Product.rating": lambda p, _i: w.rating(p["id"]),
        "Product.secret": secret,
        "Review.author": lambda r, _i: w.users[r["author"]],
        "Review.product": lambda r, _i: w.products[r["product"]],
        "SearchResult": lambda o, _i, _t: o["__typename"],
        "Product@ref": lambda rep: w.products.get(rep["id"]),
        "User@ref": lambda rep: w.users.get(rep["id"]),
        "Review@ref": lambda rep: w.reviews.get(rep["id"]),
    }


def _resolvers_reviews(w: World) -> dict[str, Resolver]:
    def rating(p: Any, _i: Any) -> Any:
        r = w.rating(p["id"])
        return None if r is None else r + w.reviews_rating_skew

    def add(_o: Any, _i: Any, productId: str, body: str, stars: int) -> Any:
        rid = f"r{len(w.reviews) + 1}"
        w.writes.append(f"addReview:{rid}")
        w.reviews[rid] = {"id": rid, "body": body, "stars": stars, "author": "u1", "product": productId}
        return w.reviews[rid]

    return {
        "Query.latestReviews": lambda _o, _i, n: list(w.reviews.values())[-n:],
        "Mutation.addReview": add,
        "Product.reviews": lambda p, _i: w.product_reviews(p["id"]),
        "Product.rating": rating,
        "Product.topReview": lambda p, _i: max(w.product_reviews(p["id"]), key=lambda r: r["stars"], default=None),
        "Review.author": lambda r, _i: {"id": r["author"]},
        "Review.product": lambda r, _i: {"id": r["product"]},
        "User.reviews": lambda u, _i: [r for r in w.reviews.values() if r["author"] == u["id"]],
        "Product@ref": lambda rep: {"id": rep["id"]} if rep["id"] in w.products else None,
        "User@ref": lambda rep: {"id": rep["id"]} if rep["id"] in w.users else None,
        "Review@ref": lambda rep: w.reviews.get(rep["id"]),
    }


def build_subgraph_schema(sdl: str, resolvers: dict[str, Resolver]) -> graphql.GraphQLSchema:
    entities = sorted({k.split("@")[0] for k in resolvers if k.endswith("@ref")})
    # The subgraph's own schema defines the roots it only extends in its federation SDL.
    local = sdl.replace("extend type Query", "type Query").replace("extend type Mutation", "type Mutation")
    full = (FEDERATION_PRELUDE + local + f"\nunion _Entity = {' | '.join(entities)}\n"
            + "extend type Query { _entities(representations: [_Any!]!): [_Entity]!  _service: _Service! }\n")
    schema = graphql.build_schema(full)
    for name, fn in resolvers.items():
        if "@" in name:
            continue
        if "." in name:
            t, f = name.split(".")
            schema.get_type(t).fields[f].resolve = fn  # type: ignore[union-attr]
        else:
            schema.get_type(name).resolve_type = fn  # type: ignore[union-attr]

    def entities_(_o: Any, _i: Any, representations: list[dict[str, Any]]) -> list[Any]:
        out = []
        for rep in representations:
            obj = resolvers[rep["__typename"] + "@ref"](rep)
            out.append(None if obj is None else dict(obj, __typename=rep["__typename"]))
        return out

    schema.query_type.fields["_entities"].resolve = entities_  # type: ignore[union-attr]
    schema.query_type.fields["_service"].resolve = lambda _o, _i: {"sdl": sdl}  # type: ignore[union-attr]
    schema.get_type("_Entity").resolve_type = lambda o, _i, _t: o["__typename"]  # type: ignore[union-attr]
    return schema


def subgraph_app(name: str, schema: graphql.GraphQLSchema, world: World) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        payload = await request.json()
        world.calls.append((name, payload["query"]))
        world.payloads.append((name, payload, request.headers.get("Authorization")))
        if world.delay_s.get(name):
            await asyncio.sleep(world.delay_s[name])
        result = graphql.graphql_sync(schema, payload["query"], variable_values=payload.get("variables"),
                                      operation_name=payload.get("operationName"))
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/graphql", handle)
    return app


def products_app(world: World) -> web.Application:
    return subgraph_app("products", build_subgraph_schema(PRODUCTS_SDL, _resolvers_products(world)), world)


def reviews_app(world: World) -> web.Application:
    return subgraph_app("reviews", build_subgraph_schema(REVIEWS_SDL, _resolvers_reviews(world)), world)


def products_schema(world: World) -> graphql.GraphQLSchema:
    return build_subgraph_schema(PRODUCTS_SDL, _resolvers_products(world))
