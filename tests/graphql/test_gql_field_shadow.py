"""Field shadows are batched across client requests: one ``_entities`` request per window,
each entity asked once, each client request still compared on its own."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from gql_stack import Stack, stack  # noqa: F401  (fixture)

from strangler_proxy.diff.result import Verdict
from strangler_proxy.graphql import GraphQLGateway
from strangler_proxy.graphql.field_shadow import FieldShadower

SHADOW = "    Product.rating: {target: reviews, mode: shadow}"
Q = '{ product(id: "%s") { name rating } }'


def shadow_fetches(stack: Stack) -> list[tuple[dict, str | None]]:
    """What the gateway asked the shadow backend (reviews serves nothing here): body, Authorization."""
    return [(p, auth) for name, p, auth in stack.world.payloads if name == "reviews" and "_entities" in p["query"]]


def asked_ids(payload: dict) -> list[str]:
    return [rep["id"] for reps in payload["variables"].values() if isinstance(reps, list) for rep in reps]


def shadower_of(gw: GraphQLGateway) -> FieldShadower:
    assert gw.shadower is not None
    return gw.shadower


async def held_gateway(stack: Stack, fields: str = SHADOW) -> GraphQLGateway:
    """A gateway whose batches wait for drain() (a window longer than the config allows), so
    a slow machine cannot split what a test sends into two windows."""
    gw = await stack.gateway(fields)
    shadower_of(gw).batch_window_s = 600
    return gw


async def test_one_window_of_requests_is_one_shadow_fetch_asking_each_entity_once(stack: Stack) -> None:
    gw = await held_gateway(stack)
    stack.world.reviews_rating_skew = 0.0
    ids = ["p1", "p2", "p2", "p3", "p1"]
    for pid in ids:
        status, body = await gw.execute(Q % pid)
        assert status == 200 and "errors" not in body
    assert shadow_fetches(stack) == []  # nothing is sent before the window ends (or a drain)
    shadower = shadower_of(gw)
    await shadower.drain()
    fetches = shadow_fetches(stack)
    assert len(fetches) == 1
    assert sorted(asked_ids(fetches[0][0])) == ["p1", "p2", "p3"]
    # ...yet each client request is compared, with its own entity as the partition.
    assert sorted(r.partition for r in stack.results.items) == sorted(ids)
    assert {r.verdict for r in stack.results.items} == {Verdict.MATCH}
    assert shadower.completed == len(ids)


async def test_each_request_is_compared_with_its_own_entity_answer(stack: Stack) -> None:
    gw = await held_gateway(stack)
    stack.world.reviews_rating_skew = 0.5  # the candidate disagrees where there are reviews (p1..p3), not on p4
    for pid in ("p2", "p4", "p1"):
        await gw.execute(Q % pid)
    await shadower_of(gw).drain()
    verdicts = {r.partition: r.verdict for r in stack.results.items}
    assert verdicts == {"p1": Verdict.MISMATCH, "p2": Verdict.MISMATCH, "p4": Verdict.MATCH}
    p2 = next(r for r in stack.results.items if r.partition == "p2")
    legacy_rating = stack.world.rating("p2")
    assert legacy_rating is not None
    assert p2.legacy_body is not None and orjson.loads(p2.legacy_body) == legacy_rating


async def test_the_window_ends_by_itself_and_a_full_batch_goes_at_once(stack: Stack) -> None:
    gw = await stack.gateway(SHADOW, settings="  shadow_batch_window_s: 0.05")
    await gw.execute(Q % "p1")
    for _ in range(100):  # no drain: the timer sends it
        if stack.results.items:
            break
        await asyncio.sleep(0.02)
    assert [r.partition for r in stack.results.items] == ["p1"]
    stack.results.items.clear()
    gw = await stack.gateway(SHADOW, settings="  shadow_batch_window_s: 1\n  shadow_batch_size: 2")
    await gw.execute(Q % "p1")
    await gw.execute(Q % "p2")  # the second request fills the batch: sent now, not in a second
    for _ in range(20):
        if len(stack.results.items) == 2:
            break
        await asyncio.sleep(0.02)
    assert sorted(r.partition for r in stack.results.items) == ["p1", "p2"]


async def test_window_zero_sends_each_requests_shadow_alone(stack: Stack) -> None:
    gw = await stack.gateway(SHADOW, settings="  shadow_batch_window_s: 0")
    for pid in ("p1", "p1", "p2"):
        await gw.execute(Q % pid)
    await shadower_of(gw).drain()
    assert [asked_ids(p) for p, _ in shadow_fetches(stack)] == [["p1"], ["p1"], ["p2"]]


async def test_requests_with_different_credentials_never_share_a_fetch(stack: Stack) -> None:
    gw = await held_gateway(stack)
    for pid, token in (("p1", "Bearer alice"), ("p2", "Bearer bob"), ("p3", "Bearer alice")):
        await gw.execute(Q % pid, headers={"Authorization": token})
    await shadower_of(gw).drain()
    by_token = {auth: sorted(asked_ids(p)) for p, auth in shadow_fetches(stack)}
    assert by_token == {"Bearer alice": ["p1", "p3"], "Bearer bob": ["p2"]}


async def test_requests_with_different_variable_values_never_share_a_fetch(stack: Stack) -> None:
    gw = await held_gateway(stack, "    Product.reviews: {target: reviews, mode: shadow}")
    # Review.body stays with legacy: the shadow sub-query has a nested fetch that uses $b.
    q = 'query($id: ID!, $b: Boolean!) { product(id: $id) { reviews { id body @include(if: $b) } } }'
    for pid, b in (("p1", True), ("p2", False), ("p3", True)):
        status, body = await gw.execute(q, variables={"id": pid, "b": b})
        assert status == 200 and "errors" not in body
    await shadower_of(gw).drain()
    assert sorted(sorted(asked_ids(p)) for p, _ in shadow_fetches(stack)) == [["p1", "p3"], ["p2"]]
    assert {r.verdict for r in stack.results.items} == {Verdict.MATCH}
    assert sorted(r.partition for r in stack.results.items) == ["p1", "p2", "p3"]


async def test_too_many_batches_in_flight_are_dropped_and_counted(stack: Stack) -> None:
    gw = await stack.gateway(SHADOW, settings="  shadow_batch_window_s: 0")
    shadower = shadower_of(gw)
    shadower.max_inflight = 1
    stack.world.calls.clear()
    await asyncio.gather(*(gw.execute(Q % pid) for pid in ("p1", "p2", "p3")))
    await shadower.drain()
    assert shadower.dropped >= 1
    assert shadower.completed + shadower.dropped == 3
    assert len(shadow_fetches(stack)) == shadower.completed


class CountingComparator:
    """The diff engine, counting how often it is asked."""

    def __init__(self) -> None:
        from strangler_proxy.diff.comparator import DiffComparator

        self.inner = DiffComparator()
        self.calls = 0

    def compare(self, pair, rules):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.inner.compare(pair, rules)


async def test_the_same_entity_and_answer_in_one_batch_is_compared_once_and_recorded_per_request(stack: Stack) -> None:
    counting = CountingComparator()
    gw = await stack.gateway(SHADOW, comparator=counting)
    shadower_of(gw).batch_window_s = 600
    stack.world.reviews_rating_skew = 0.5  # a mismatch: the shared comparison must carry its differences
    for pid in ("p2", "p2", "p2", "p1", "p2"):
        await gw.execute(Q % pid)
    await shadower_of(gw).drain()
    assert counting.calls == 2  # p2 once, p1 once
    results = stack.results.items
    assert sorted(r.partition for r in results) == ["p1", "p2", "p2", "p2", "p2"]
    p2 = [r for r in results if r.partition == "p2"]
    assert {r.verdict for r in p2} == {Verdict.MISMATCH}
    assert all(r.differences == p2[0].differences and r.differences for r in p2)
    assert all(r.legacy_latency_s is not None and r.legacy_latency_s > 0 for r in p2)


async def test_a_slow_shadow_backend_times_out_on_the_shadow_timeout_not_the_clients(stack: Stack) -> None:
    """The shadow path has its own timeout (shadow.timeout_s): a shadow backend that hangs costs
    bounded time and memory, and the client's answer never waits for it."""
    gw = await stack.gateway(SHADOW, settings="  shadow_batch_window_s: 0", top="shadow: {timeout_s: 0.3}")
    stack.world.delay_s["reviews"] = 5.0
    started = time.perf_counter()
    status, body = await gw.execute(Q % "p2")
    assert status == 200 and body["data"]["product"]["rating"] is not None
    assert time.perf_counter() - started < 1.0  # served by legacy, never waiting for the shadow
    await shadower_of(gw).drain()
    assert time.perf_counter() - started < 2.0  # the shadow gave up after 0.3 s, not 5 s (or 30)
    [result] = stack.results.items
    assert result.verdict is Verdict.CANDIDATE_ERROR and "timeout" in (result.reason or "")


async def test_drain_cancels_what_is_still_running_after_its_timeout(stack: Stack) -> None:
    """A graceful stop never hangs on a shadow backend that hangs, and never raises."""
    gw = await stack.gateway(SHADOW, settings="  shadow_batch_window_s: 0")
    stack.world.delay_s["reviews"] = 5.0
    await gw.execute(Q % "p2")
    started = time.perf_counter()
    await shadower_of(gw).drain(timeout_s=0.3)
    assert time.perf_counter() - started < 1.5
    assert not shadower_of(gw)._tasks and shadower_of(gw).completed == 0


async def test_a_big_batch_goes_as_several_entity_requests(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("strangler_proxy.graphql.field_shadow.MAX_ENTITIES_PER_FETCH", 2)
    gw = await held_gateway(stack)
    stack.world.reviews_rating_skew = 0.5  # products with reviews disagree; without, null on both sides
    await gw.execute("{ products(first: 7) { id rating } }")
    await shadower_of(gw).drain()
    fetched = [sorted(asked_ids(p)) for p, _ in shadow_fetches(stack)]
    assert sorted(len(ids) for ids in fetched) == [1, 2, 2, 2]
    assert sorted(i for ids in fetched for i in ids) == [f"p{n}" for n in range(1, 8)]
    verdicts = {r.partition: r.verdict for r in stack.results.items}
    expected = {pid: Verdict.MATCH if stack.world.rating(pid) is None else Verdict.MISMATCH for pid in stack.world.products}
    assert verdicts == expected and Verdict.MATCH in expected.values() and Verdict.MISMATCH in expected.values()
