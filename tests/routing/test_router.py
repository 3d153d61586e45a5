"""Route matching on the raw path, precedence, overrides and the canary split."""

from __future__ import annotations

import pytest

from strangler_proxy.config import Mode, load_config_text
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.errors import ConfigError, FlipError
from strangler_proxy.routing.canary import bucket, cookie_value, query_value, serves_target
from strangler_proxy.routing.router import RouteState, RouteTable, split_path

CONFIG = load_config_text("""
upstreams: {legacy: {url: "http://127.0.0.1:1"}, svc: {url: "http://127.0.0.1:2"}}
routes:
  - {name: catch-all, path: "/api/{*rest}", target: svc, methods: [GET, POST]}
  - {name: rating, path: "/api/titles/{id}/ratings", target: svc, mode: shadow}
  - {name: title-any, path: "/api/titles/{id}/{what}", target: svc}
  - {name: rating-beta, path: "/api/titles/{id}/ratings", target: svc, headers: {X-Beta: "1"}}
  - {name: exact, path: "/api/titles/special/ratings", target: svc}
  - {name: people, path: "/api/people/{id}", target: svc, mode: canary, percent: 30, partition_key: "path:id",
     rewrite: "/v2/people/{id}"}
""")


@pytest.fixture
def table() -> RouteTable:
    return RouteTable.build(CONFIG)


def name(table: RouteTable, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> str | None:
    route = table.match(method, path, headers or {})
    return route.name if route else None


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/api/titles/tt1/ratings", "rating"),
        ("/api/titles/special/ratings", "exact"),  # more literals beat variables
        ("/api/titles/tt1/cast", "title-any"),
        ("/api/titles/tt1", "catch-all"),
        ("/api/", "catch-all"),  # the tail matches one (empty) segment
        ("/api", None),
        ("/api/titles/tt1/ratings/", "catch-all"),  # no trailing-slash folding
        ("/API/titles/tt1/ratings", None),  # exact case
        ("/api/titles/tt1%2Fx/ratings", None),  # encoded slash: unroutable -> default
        ("/api/titles/%2e%2e/ratings", None),  # encoded dot segment
        ("/api/titles/../titles/tt1/ratings", None),  # raw dot segment
        ("/api/titles/./tt1/ratings", None),
        ("/api//tt1/ratings", "catch-all"),  # empty segment never fills {id}
        ("/api/titles//ratings", "catch-all"),
        ("/api/titles/t%74%31/ratings", "rating"),  # decoded only for comparison
        ("/api/title%73/tt1/ratings", "rating"),
        ("/elsewhere", None),
        ("*", None),
    ],
)
def test_matching(table: RouteTable, path: str, expected: str | None) -> None:
    assert name(table, path) == expected


def test_header_match_wins_when_present(table: RouteTable) -> None:
    assert name(table, "/api/titles/tt1/ratings", headers={"X-Beta": "1"}) == "rating-beta"
    assert name(table, "/api/titles/tt1/ratings", headers={"X-Beta": "2"}) == "rating"


def test_methods(table: RouteTable) -> None:
    assert name(table, "/api/titles/tt1/ratings", "POST") == "catch-all"
    assert name(table, "/api/titles/tt1/ratings", "DELETE") is None
    assert name(table, "/api/titles/tt1/ratings", "HEAD") == "rating"


def test_config_order_breaks_ties() -> None:
    cfg = load_config_text("""
upstreams: {legacy: {url: "http://127.0.0.1:1"}}
routes:
  - {name: first, path: "/a/{x}"}
  - {name: second, path: "/a/{y}"}
""")
    assert RouteTable.build(cfg).match("GET", "/a/1", {}).name == "first"  # type: ignore[union-attr]


def test_rewrite_and_bind_keep_raw_values(table: RouteTable) -> None:
    route = table.get("people")
    assert route is not None
    assert route.target_path("/api/people/nm%201") == "/v2/people/nm%201"
    assert route.bind("/api/people/nm1") == {"id": "nm1"}
    tail = table.get("catch-all")
    assert tail is not None and tail.bind("/api/a/b%2Fc/") == {"rest": "a/b%2Fc/"}


def test_split_path() -> None:
    assert split_path("/a/b%20c") == ["a", "b c"]
    assert split_path("/a/%2F") is None
    assert split_path("http://x/a") is None


def test_overrides_apply_and_validate() -> None:
    table = RouteTable.build(CONFIG, {"rating": RouteState(Mode.CANARY, 25)})
    r = table.get("rating")
    assert r is not None and (r.mode, r.percent) == (Mode.CANARY, 25)
    with pytest.raises(FlipError, match="no such route"):
        RouteTable.build(CONFIG, {"nope": RouteState(Mode.SHADOW, 0)})
    with pytest.raises(FlipError, match="percent"):
        RouteTable.build(CONFIG, {"rating": RouteState(Mode.CANARY, 150)})
    no_target = load_config_text("""
upstreams: {legacy: {url: "http://127.0.0.1:1"}}
routes: [{name: r, path: "/r"}]
""")
    with pytest.raises(FlipError, match="needs a target"):
        RouteTable.build(no_target, {"r": RouteState(Mode.CANARY, 5)})


def test_tail_must_be_last() -> None:
    bad = load_config_text("""
upstreams: {legacy: {url: "http://127.0.0.1:1"}}
routes: [{name: r, path: "/a/{*rest}/b"}]
""")
    with pytest.raises(ConfigError):
        RouteTable.build(bad)


def test_runtime_apply_swaps_whole_or_keeps_old() -> None:
    runtime = ProxyRuntime(CONFIG)
    old = runtime.table
    runtime.apply(overrides={"rating": RouteState(Mode.EXTRACTED, 100)})
    assert runtime.table is not old and runtime.table.get("rating").mode is Mode.EXTRACTED  # type: ignore[union-attr]
    current = runtime.table
    with pytest.raises(FlipError):
        runtime.apply(overrides={"ghost": RouteState(Mode.SHADOW, 0)})
    assert runtime.table is current and runtime.overrides["rating"].mode is Mode.EXTRACTED
    assert set(runtime.route_counters()["rating"]) == {
        "requests", "legacy", "target", "errors", "fallbacks", "shadowed", "shadow_dropped", "shadow_skipped"}


# ------------------------------------------------------------------ canary
@pytest.mark.parametrize("percent", [1, 10, 50, 90])
def test_canary_spread_within_two_points(percent: float) -> None:
    keys = [f"tt{i:07d}" for i in range(10_000)]
    share = sum(serves_target(k, percent) for k in keys) / len(keys) * 100
    assert abs(share - percent) <= 2


def test_canary_is_sticky_and_monotonic() -> None:
    keys = [f"cust-{i}" for i in range(2000)]
    at10 = {k for k in keys if serves_target(k, 10)}
    assert at10 == {k for k in keys if serves_target(k, 10)}  # same key, same side
    at25 = {k for k in keys if serves_target(k, 25)}
    assert at10 <= at25  # raising the percent only moves keys to the target
    assert bucket("k") != bucket("k2")
    assert not serves_target("k", 0) and serves_target("k", 100)


def test_key_sources() -> None:
    assert query_value("a=1&id=tt%31&id=2", "id") == "tt1"
    assert query_value("a=1", "id") is None
    assert cookie_value("sid=abc; theme=dark", "theme") == "dark"
    route = RouteTable.build(CONFIG).get("people")
    assert route is not None and route.partition_key("/api/people/nm7", {}, "") == "nm7"


def test_routes_and_graphql_fields_split_one_key_the_same_way() -> None:
    """An entity is on one side for all its routes and fields at the same percent."""
    from strangler_proxy.config import Mode
    from strangler_proxy.graphql.ownership import FieldRule, in_canary

    rule = FieldRule("Title.rating", "ratings", Mode.CANARY, percent=30)
    keys = [f"tt{i:07d}" for i in range(2000)]
    assert [serves_target(k, 30) for k in keys] == [in_canary(rule, k) for k in keys]
    assert 20 < sum(serves_target(k, 30) for k in keys) / 20 < 40


def test_a_state_reads_the_same_everywhere() -> None:
    import doctest

    from strangler_proxy.routing import router

    assert doctest.testmod(router).attempted > 0 and doctest.testmod(router).failed == 0
