"""Which endpoint of an upstream serves a request: a pure function over an
immutable table and a snapshot of the endpoints' states, no I/O.

An upstream lists endpoints (URL, zone, priority, weight; one ``url:`` is one
endpoint). :func:`choose_endpoint` picks among the candidates -- not drained,
not already tried by this request, in the pinned zone when an operator pinned
one -- as Envoy's priority levels do:

1. the best (lowest) priority whose healthy share is at least the upstream's
   ``failover_threshold`` serves, from its healthy endpoints;
2. when no level reaches it, the level with the most healthy endpoints serves
   (traffic spills over and comes back as health returns);
3. when nothing is healthy (a bad check, a network blip), *panic*: every
   candidate serves rather than every request failing. A drained endpoint is
   never chosen, not even in panic.

Within the chosen set, power of two choices: two weighted draws, the one with
fewer requests in flight per unit of weight wins.

    >>> table = EndpointTable.build(("http://a", "http://b"), ("eu", "us"), (0, 0), (1, 1), 0.7)
    >>> up = (EndpointState(True, False, 3), EndpointState(True, False, 0))
    >>> choose_endpoint(table, up, draws=(0.1, 0.9))        # b has fewer in flight
    1
    >>> choose_endpoint(table, up, draws=(0.1, 0.9), pinned_zone="eu")
    0
    >>> choose_endpoint(table, up, draws=(0.1, 0.9), exclude=frozenset({0, 1})) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What the pool knows of one endpoint at the moment of a decision."""

    healthy: bool  # active checks and outlier detection both let it serve
    drained: bool  # an operator drained it: never chosen
    in_flight: int  # requests it is serving now


@dataclass(frozen=True, slots=True)
class UpstreamSwitch:
    """The operator's switches for one upstream (audited, persisted, replicated)."""

    pinned_zone: str | None = None  # `strangler failover UPSTREAM --to ZONE`; None: health decides
    drained: frozenset[str] = frozenset()  # endpoint URLs `strangler drain` took out


NO_SWITCH = UpstreamSwitch()


@dataclass(frozen=True, slots=True)
class EndpointTable:
    """An upstream's endpoints, built once per config (index = position in the config)."""

    urls: tuple[str, ...]
    zones: tuple[str, ...]
    priorities: tuple[int, ...]
    weights: tuple[int, ...]
    failover_threshold: float
    levels: tuple[tuple[int, ...], ...] = field(default=())  # endpoint indices per priority, best first
    uniform: bool = True  # every weight the same: a draw is an index, nothing to add up

    @classmethod
    def build(
        cls, urls: Sequence[str], zones: Sequence[str], priorities: Sequence[int], weights: Sequence[int],
        failover_threshold: float,
    ) -> EndpointTable:
        levels = tuple(
            tuple(i for i, p in enumerate(priorities) if p == level) for level in sorted(set(priorities))
        )
        return cls(tuple(urls), tuple(zones), tuple(priorities), tuple(weights), failover_threshold, levels,
                   len(set(weights)) <= 1)

    def __len__(self) -> int:
        return len(self.urls)


def choose_endpoint(
    table: EndpointTable,
    states: Sequence[EndpointState],
    *,
    draws: tuple[float, float],
    pinned_zone: str | None = None,
    exclude: frozenset[int] = frozenset(),
) -> int | None:
    """The index of the endpoint to use, or None when no candidate is left.

    ``draws`` are two uniform numbers in [0, 1) (the caller's randomness, so the
    choice itself is a pure function of its arguments).
    """
    if len(table.urls) == 1:  # the common case: one endpoint, nothing to weigh
        return None if 0 in exclude or states[0].drained or (
            pinned_zone is not None and table.zones[0] != pinned_zone) else 0
    # One pass per level (this runs for every request: no generators, no sums).
    best: list[int] = []  # every usable candidate, for panic
    best_healthy: list[int] = []  # the healthy candidates of the level with the most
    chosen: list[int] | None = None
    zones = table.zones
    for level in table.levels:
        members = up = 0  # candidates of the level (not drained, in the pinned zone) and how many are healthy
        healthy: list[int] = []
        usable: list[int] = []
        for i in level:
            state = states[i]
            if state.drained or (pinned_zone is not None and zones[i] != pinned_zone):
                continue
            members += 1
            if state.healthy:
                up += 1
            if i in exclude:  # tried already: counts for the level's health, is not chosen again
                continue
            usable.append(i)
            if state.healthy:
                healthy.append(i)
        if not members:
            continue
        if healthy and up >= table.failover_threshold * members:
            chosen = healthy
            break
        if len(healthy) > len(best_healthy):
            best_healthy = healthy
        best.extend(usable)
    if chosen is None:
        chosen = best_healthy or best  # spill to the healthiest level; nothing healthy: panic over all
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]
    a, b = _weighted(table, chosen, draws[0]), _weighted(table, chosen, draws[1])
    # fewer in flight per unit of weight wins (cross-multiplied: no division)
    weights = table.weights
    return a if states[a].in_flight * weights[b] <= states[b].in_flight * weights[a] else b


def _weighted(table: EndpointTable, among: Sequence[int], draw: float) -> int:
    if table.uniform:
        return among[int(draw * len(among))]
    weights = table.weights
    total = 0
    for i in among:
        total += weights[i]
    point = draw * total
    for i in among:
        point -= weights[i]
        if point < 0:
            return i
    return among[-1]
