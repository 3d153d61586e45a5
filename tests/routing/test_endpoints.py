"""choose_endpoint's rules: priorities and the failover threshold, spill, panic,
drained endpoints, a pinned zone, endpoints already tried, weights."""

from __future__ import annotations

import doctest
import random
from collections import Counter

from strangler_proxy.routing import endpoints
from strangler_proxy.routing.endpoints import EndpointState, EndpointTable, choose_endpoint

UP, DOWN = EndpointState(True, False, 0), EndpointState(False, False, 0)
DRAINED = EndpointState(True, True, 0)


def table(priorities: list[int], zones: list[str] | None = None, weights: list[int] | None = None,
          threshold: float = 0.7) -> EndpointTable:
    n = len(priorities)
    return EndpointTable.build([f"http://e{i}" for i in range(n)], zones or ["z"] * n, priorities,
                               weights or [1] * n, threshold)


def chosen(t: EndpointTable, states: list[EndpointState], draws: int = 400, **kwargs: object) -> set[int | None]:
    """Every endpoint the choice lands on over many random draws."""
    rng = random.Random(7)
    return {choose_endpoint(t, states, draws=(rng.random(), rng.random()), **kwargs)  # type: ignore[arg-type]
            for _ in range(draws)}


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(endpoints).failed == 0


def test_the_best_priority_serves_while_healthy_enough() -> None:
    t = table([0, 0, 1, 1])
    assert chosen(t, [UP, UP, UP, UP]) == {0, 1}
    # 1 of 2 healthy at priority 0 is under 0.7: the level with the most healthy serves
    assert chosen(t, [UP, DOWN, UP, UP]) == {2, 3}
    # at threshold 0.5 one of two is enough: the healthy one of priority 0 serves alone
    assert chosen(table([0, 0, 1, 1], threshold=0.5), [UP, DOWN, UP, UP]) == {0}


def test_failover_spills_to_the_healthiest_level_and_fails_back() -> None:
    t = table([0, 1, 2, 2])
    assert chosen(t, [DOWN, DOWN, UP, UP]) == {2, 3}
    assert chosen(t, [DOWN, UP, UP, UP]) == {1}  # priority 1 is whole: it serves before 2
    assert chosen(t, [UP, UP, UP, UP]) == {0}  # health is back: priority 0 again
    # no level reaches the threshold: the one with the most healthy endpoints
    t3 = table([0, 0, 0, 1, 1], threshold=1.0)
    assert chosen(t3, [UP, DOWN, DOWN, UP, UP]) == {3, 4}


def test_panic_spreads_over_every_endpoint_when_none_is_healthy() -> None:
    t = table([0, 0, 1])
    assert chosen(t, [DOWN, DOWN, DOWN]) == {0, 1, 2}


def test_a_drained_endpoint_is_never_chosen_even_in_panic() -> None:
    t = table([0, 0, 1])
    assert chosen(t, [DRAINED, UP, UP]) == {1}
    assert chosen(t, [EndpointState(False, True, 0), DOWN, DOWN]) == {1, 2}
    assert chosen(t, [DRAINED, DRAINED, DRAINED]) == {None}
    # a drained endpoint is not a member of its level: the other one is the whole level
    assert chosen(table([0, 0, 1], threshold=1.0), [DRAINED, UP, UP]) == {1}
    one = table([0])
    assert chosen(one, [DRAINED]) == {None}
    assert chosen(one, [DOWN]) == {0}  # one endpoint serves whatever its health


def test_a_pinned_zone_keeps_traffic_in_it() -> None:
    t = table([0, 0, 1, 1], zones=["eu", "us", "eu", "us"])
    assert chosen(t, [UP, UP, UP, UP], pinned_zone="us") == {1}
    assert chosen(t, [UP, DOWN, UP, UP], pinned_zone="us") == {3}  # failover stays in the zone
    assert chosen(t, [UP, DOWN, UP, DOWN], pinned_zone="us") == {1, 3}  # panic inside the zone
    assert chosen(t, [UP, UP, UP, UP], pinned_zone="asia") == {None}
    assert chosen(table([0], zones=["eu"]), [UP], pinned_zone="us") == {None}


def test_endpoints_already_tried_are_excluded() -> None:
    t = table([0, 0, 1])
    assert chosen(t, [UP, UP, UP], exclude=frozenset({0})) == {1}
    # every one of priority 0 tried: the next level, though priority 0 is healthy
    assert chosen(t, [UP, UP, UP], exclude=frozenset({0, 1})) == {2}
    assert chosen(t, [UP, UP, UP], exclude=frozenset({0, 1, 2})) == {None}
    assert chosen(t, [DOWN, DOWN, DOWN], exclude=frozenset({2})) == {0, 1}  # panic, minus the tried one
    assert chosen(table([0]), [UP], exclude=frozenset({0})) == {None}


def test_fewer_requests_in_flight_win_the_two_choices() -> None:
    t = table([0, 0, 0])
    states = [EndpointState(True, False, 9), EndpointState(True, False, 0), EndpointState(True, False, 9)]
    counts = Counter(choose_endpoint(t, states, draws=(a / 10, b / 10)) for a in range(10) for b in range(10))
    # the draws map to endpoints 0 (4 of 10), 1 (3 of 10), 2 (3 of 10): endpoint 1 is in
    # 100 - 7 * 7 = 51 of the 100 pairs and wins every one of them
    assert counts[1] == 51 and counts[0] + counts[2] == 49


def test_weights_share_traffic_in_proportion() -> None:
    t = table([0, 0, 0], weights=[1, 2, 5])
    rng = random.Random(3)
    n = 40_000
    # Equal in-flight counts: the first draw wins, so shares follow the weights.
    counts = Counter(choose_endpoint(t, [UP, UP, UP], draws=(rng.random(), rng.random())) for _ in range(n))
    for i, weight in enumerate((1, 2, 5)):
        assert abs(counts[i] / n - weight / 8) < 0.01
    # With load, in-flight per unit of weight decides: 4 in flight on weight 5 beats 1 on weight 1.
    loaded = [EndpointState(True, False, 1), UP, EndpointState(True, False, 4)]
    assert choose_endpoint(t, loaded, draws=(0.0, 0.99)) == 2
    assert choose_endpoint(t, loaded, draws=(0.99, 0.0)) == 2


def test_equal_weights_draw_every_endpoint_evenly() -> None:
    t = table([0, 0, 0, 0], weights=[3, 3, 3, 3])
    assert t.uniform
    rng = random.Random(5)
    counts = Counter(choose_endpoint(t, [UP] * 4, draws=(rng.random(), rng.random())) for _ in range(20_000))
    assert all(abs(counts[i] / 20_000 - 0.25) < 0.015 for i in range(4))
