"""The gateway over two real subgraphs on loopback: routing, merging, errors, shadows."""

from __future__ import annotations

from typing import Any

import graphql
import pytest
from gql_stack import Stack, stack  # noqa: F401  (fixture)
from gql_subgraphs import products_schema

from strangler_proxy.diff.result import Verdict
from strangler_proxy.graphql import Ownership, in_canary

EXTRACTED = """\
    Product.reviews: {target: reviews, mode: extracted}
    Product.rating: {target: reviews, mode: extracted}"""


def direct(stack: Stack, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the legacy subgraph alone answers (the reference)."""
    r = graphql.graphql_sync(products_schema(stack.world), query, variable_values=variables)
    out: dict[str, Any] = {"data": r.data}
    if r.errors:
        out["errors"] = [e.formatted for e in r.errors]
    return out


NESTED = """
query Q($id: ID!, $withTags: Boolean!) {
  product(id: $id) {
    __typename id name
    t: tags @include(if: $withTags)
    ...Money
    reviews { id stars author { id name } product { name rating } }
    rating
  }
  all: products(first: 3) { id rating reviews { body } }
}
fragment Money on Product { price kind category { name } }
"""


@pytest.mark.parametrize("fields", ["", EXTRACTED])
async def test_answers_equal_the_legacy_backend(stack: Stack, fields: str) -> None:
    gw = await stack.gateway(fields)
    for v in ({"id": "p3", "withTags": True}, {"id": "p2", "withTags": False}, {"id": "nope", "withTags": True}):
        status, body = await gw.execute(NESTED, v)
        assert status == 200
        assert body == direct(stack, NESTED, v)


async def test_extracted_fields_go_to_the_target_in_one_batch_per_level(stack: Stack) -> None:
    gw = await stack.gateway(EXTRACTED)
    stack.world.calls.clear()
    await gw.execute("{ a: products(first: 7) { id rating reviews { id } } b: product(id: \"p2\") { rating } }")
    backends = [b for b, _ in stack.world.calls]
    # one root fetch to legacy, then one batched _entities call to reviews for a and b together
    assert backends == ["products", "reviews"]
    assert stack.world.calls[1][1].count("_entities") == 2


async def test_all_legacy_sends_one_request(stack: Stack) -> None:
    gw = await stack.gateway()
    stack.world.calls.clear()
    await gw.execute(NESTED, {"id": "p1", "withTags": True})
    assert [b for b, _ in stack.world.calls] == ["products"]


async def test_fields_only_a_service_has_are_fetched_from_it_three_levels_deep(stack: Stack) -> None:
    gw = await stack.gateway(EXTRACTED)
    status, body = await gw.execute('{ user(id: "u2") { name reviews { stars product { name topReview { body author { name } } } } } }')
    assert status == 200 and "errors" not in body
    w = stack.world
    expected = [
        {"stars": r["stars"], "product": {"name": w.products[r["product"]]["name"], "topReview": {
            "body": (top := max(w.product_reviews(r["product"]), key=lambda x: x["stars"]))["body"],
            "author": {"name": w.users[top["author"]]["name"]}}}}
        for r in w.reviews.values() if r["author"] == "u2"
    ]
    assert body["data"]["user"] == {"name": "User 2", "reviews": expected}
    # A root field only the service has:
    _, body = await gw.execute("{ latestReviews(n: 2) { id product { name } } }")
    assert [r["product"]["name"] for r in body["data"]["latestReviews"]] == [
        w.products[r["product"]]["name"] for r in list(w.reviews.values())[-2:]]


async def test_abstract_types_and_typename(stack: Stack) -> None:
    gw = await stack.gateway(EXTRACTED)
    q = '{ search(q: "2") { __typename ... on Product { name rating } ... on User { name reviews { id } } } }'
    status, body = await gw.execute(q)
    assert status == 200 and "errors" not in body
    kinds = [x["__typename"] for x in body["data"]["search"]]
    assert kinds == ["Product", "User"]
    assert body["data"]["search"][0] == {"__typename": "Product", "name": "Product 2", "rating": stack.world.rating("p2")}
    assert body["data"]["search"][1]["reviews"] == [
        {"id": r["id"]} for r in stack.world.reviews.values() if r["author"] == "u2"]


async def test_errors_keep_their_paths_and_null_propagates(stack: Stack) -> None:
    gw = await stack.gateway(EXTRACTED)
    q = '{ failing products(first: 4) { id secret rating } strictProduct(id: "zz") { id } }'
    status, body = await gw.execute(q)
    # A backend's own code is kept, the others get Apollo Gateway's; no backend is named.
    codes = {tuple(e["path"]): e["extensions"]["code"] for e in body["errors"]}
    assert codes == {("failing",): "BROKEN", ("products", 2, "secret"): "DOWNSTREAM_SERVICE_ERROR",
                     ("strictProduct",): "DOWNSTREAM_SERVICE_ERROR"}
    for e in body["errors"]:
        if e["extensions"] == {"code": "DOWNSTREAM_SERVICE_ERROR"}:
            del e["extensions"]
    assert body == direct(stack, q)  # otherwise exactly what the backend said


async def test_a_backend_that_is_down_gives_partial_data(stack: Stack) -> None:
    gw = await stack.gateway(EXTRACTED)
    await stack.reviews.close()
    status, body = await gw.execute('{ product(id: "p2") { name rating } }')
    assert status == 200
    assert body["data"] == {"product": {"name": "Product 2", "rating": None}}
    [err] = body["errors"]
    assert err["path"] == ["product", "rating"] and err["extensions"] == {"code": "SUBGRAPH_ERROR"}
    assert "reviews" not in err["message"]  # a client not allowed to know never learns the backend's name
    status, body = await gw.execute('{ product(id: "p2") { name rating } }', disclose=True)
    assert body["errors"][0]["extensions"] == {"code": "SUBGRAPH_ERROR", "serviceName": "reviews"}
    # Non-null field from the dead backend: the null climbs to the nearest nullable parent.
    status, body = await gw.execute('{ product(id: "p2") { name reviews { id } } }')
    assert body["data"] == {"product": None}
    assert body["errors"][0]["path"] == ["product", "reviews"]


async def test_invalid_queries_are_refused_before_any_backend_is_called(stack: Stack) -> None:
    gw = await stack.gateway()
    stack.world.calls.clear()
    status, body = await gw.execute("{ product(id: 1) { nope } }")
    assert status == 400
    assert any("nope" in e["message"] for e in body["errors"])
    status, body = await gw.execute("query($id: ID!) { product(id: $id) { id } }", {})
    assert status == 400 and "$id" in body["errors"][0]["message"]
    status, body = await gw.execute("{ product(")
    assert status == 400 and "Syntax Error" in body["errors"][0]["message"]
    assert stack.world.calls == []


async def test_mutations_run_in_order_across_backends(stack: Stack) -> None:
    gw = await stack.gateway(EXTRACTED)
    q = """mutation {
      a: createProduct(name: "A", price: 1) { id name }
      b: addReview(productId: "p1", body: "nice", stars: 5) { id stars product { name } }
      c: createProduct(name: "C", price: 2) { id rating }
    }"""
    next_review = f"r{len(stack.world.reviews) + 1}"
    status, body = await gw.execute(q)
    assert status == 200 and "errors" not in body, body
    assert stack.world.writes == ["createProduct:p8", f"addReview:{next_review}", "createProduct:p9"]
    assert body["data"]["b"]["product"] == {"name": "Product 1"}
    assert body["data"]["c"] == {"id": "p9", "rating": None}


async def test_introspection_is_answered_from_the_composed_schema(stack: Stack) -> None:
    gw = await stack.gateway()
    stack.world.calls.clear()
    status, body = await gw.execute(graphql.get_introspection_query())
    assert status == 200 and stack.world.calls == []
    schema = graphql.build_client_schema(body["data"])
    assert "topReview" in schema.get_type("Product").fields  # type: ignore[union-attr]
    assert "latestReviews" in schema.query_type.fields  # type: ignore[union-attr]
    assert "_entities" not in schema.query_type.fields  # type: ignore[union-attr]
    assert schema.get_type("_Any") is None


async def test_codegen_style_introspection_with_every_option(stack: Stack) -> None:
    """What graphql-codegen and IDEs send nowadays: specifiedByURL, isRepeatable, schema
    description, deprecated input values, oneOf."""
    gw = await stack.gateway()
    query = graphql.get_introspection_query(descriptions=True, specified_by_url=True, directive_is_repeatable=True,
                                            schema_description=True, input_value_deprecation=True, one_of=True)
    status, body = await gw.execute(query)
    assert status == 200 and "errors" not in body
    schema = graphql.build_client_schema(body["data"])
    assert graphql.print_schema(schema) == graphql.print_schema(gw.composed.schema)
    product = schema.get_type("Product")
    assert product is not None and product.description == "A product on sale"


async def test_shadowed_field_is_compared_per_entity(stack: Stack) -> None:
    gw = await stack.gateway("    Product.rating: {target: reviews, mode: shadow}")
    stack.world.reviews_rating_skew = 0.0
    status, body = await gw.execute("{ products(first: 4) { name rating } }")
    assert body == direct(stack, "{ products(first: 4) { name rating } }")
    assert gw.shadower is not None
    await gw.shadower.drain()
    results = stack.results.items
    assert {r.key for r in results} == {"graphql:Product.rating"}
    assert sorted(r.partition for r in results) == ["p1", "p2", "p3", "p4"]
    assert {r.verdict for r in results} == {Verdict.MATCH}
    # The candidate starts disagreeing: mismatches, while the client still gets legacy's answer.
    stack.results.items.clear()
    stack.world.reviews_rating_skew = 0.5
    status, body2 = await gw.execute("{ products(first: 4) { name rating } }")
    assert body2 == body
    await gw.shadower.drain()
    verdicts = {r.partition: r.verdict for r in stack.results.items}
    assert verdicts["p4"] == Verdict.MATCH  # no reviews: null on both sides
    assert verdicts["p2"] == Verdict.MISMATCH


async def test_canary_is_sticky_per_entity_and_flips_swap_the_table(stack: Stack) -> None:
    gw = await stack.gateway("    Product.rating: {target: reviews, mode: canary, percent: 50, partition_key: 'key:id'}")
    stack.world.reviews_rating_skew = 100.0  # makes the serving side visible
    q = "{ products(first: 7) { id rating } }"
    _, a = await gw.execute(q)
    _, b = await gw.execute(q)
    assert a == b  # sticky
    served_by_target = {p["id"] for p in a["data"]["products"] if p["rating"] is not None and p["rating"] > 50}
    with_reviews = {pid for pid in stack.world.products if stack.world.rating(pid) is not None}
    rule = gw.ownership.rule("Product", "rating")
    assert rule is not None
    canary = {pid for pid in stack.world.products if in_canary(rule, pid)}
    assert 0 < len(canary) < len(stack.world.products)
    assert served_by_target == canary & with_reviews
    assert gw.shadower is not None
    await gw.shadower.drain()
    # The entities legacy served are shadowed to the target; the canary's are not.
    compared = [r for r in stack.results.items if r.verdict != Verdict.SERVED]
    assert {r.partition for r in compared} == set(stack.world.products) - canary
    # ...and the canary's, served by the target, are recorded as served (once per request).
    assert [r.mode for r in stack.results.items if r.verdict == Verdict.SERVED] == ["canary", "canary"]
    # A flip to legacy (as the admin API would do) swaps the table: no target any more.
    cfg = stack.config("    Product.rating: {target: reviews, mode: canary, percent: 50}")

    class Flip:
        mode = "legacy"
        percent = 0.0

    gw.set_ownership(Ownership.build(cfg.graphql, {"Product.rating": Flip()}))
    _, c = await gw.execute(q)
    assert all(p["rating"] is None or p["rating"] < 50 for p in c["data"]["products"])
