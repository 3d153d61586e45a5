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

:func:`choose_endpoint` is the two steps in one: :func:`candidates` (which
endpoints may serve -- it depends on health, drains and the pin, which change
rarely, so a pool may keep its answer until one of them changes) and
:func:`pick` (the two choices, by the requests in flight now).

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
    among = candidates(table, [s.healthy for s in states], [s.drained for s in states],
                       pinned_zone=pinned_zone, exclude=exclude)
    return pick(table, among, [s.in_flight for s in states], draws)


def candidates(
    table: EndpointTable,
    healthy: Sequence[bool],
    drained: Sequence[bool],
    *,
    pinned_zone: str | None = None,
    exclude: frozenset[int] = frozenset(),
) -> tuple[int, ...]:
    """The endpoints a request may be sent to now (rules 1-3 of the module
    docstring), by index; empty when none is left.

    >>> table = EndpointTable.build(("http://a", "http://b", "http://c"), ("eu", "eu", "us"), (0, 0, 1), (1, 1, 1), 0.7)
    >>> candidates(table, (True, True, True), (False, False, False))
    (0, 1)
    >>> candidates(table, (True, False, True), (False, False, False))   # 1 of 2 healthy < 0.7: failover
    (2,)
    >>> candidates(table, (False, False, False), (False, True, False))  # panic, never a drained one
    (0, 2)
    """
    if len(table.urls) == 1:  # the common case: one endpoint, whatever its health
        return () if 0 in exclude or drained[0] or (pinned_zone is not None and table.zones[0] != pinned_zone) else (0,)
    best: list[int] = []  # every usable candidate, for panic
    best_healthy: list[int] = []  # the healthy candidates of the level with the most
    zones = table.zones
    for level in table.levels:  # one pass per level: no generators, no sums
        members = up = 0  # candidates of the level (not drained, in the pinned zone) and how many are healthy
        ok: list[int] = []
        usable: list[int] = []
        for i in level:
            if drained[i] or (pinned_zone is not None and zones[i] != pinned_zone):
                continue
            members += 1
            if healthy[i]:
                up += 1
            if i in exclude:  # tried already: counts for the level's health, is not chosen again
                continue
            usable.append(i)
            if healthy[i]:
                ok.append(i)
        if not members:
            continue
        if ok and up >= table.failover_threshold * members:
            return tuple(ok)
        if len(ok) > len(best_healthy):
            best_healthy = ok
        best.extend(usable)
    return tuple(best_healthy or best)  # spill to the healthiest level; nothing healthy: panic over all


def pick(table: EndpointTable, among: Sequence[int], in_flight: Sequence[int],
         draws: tuple[float, float]) -> int | None:
    """Power of two choices among ``among``: two weighted draws, fewer requests in
    flight (``in_flight``, by endpoint index) per unit of weight wins; None when
    ``among`` is empty.

    >>> table = EndpointTable.build(("http://a", "http://b"), ("eu", "us"), (0, 0), (1, 1), 0.7)
    >>> pick(table, (0, 1), (3, 0), (0.1, 0.9)), pick(table, (0, 1), (3, 0), (0.1, 0.2))
    (1, 0)
    """
    if len(among) < 2:
        return among[0] if among else None
    if table.uniform:
        n = len(among)
        a, b = among[int(draws[0] * n)], among[int(draws[1] * n)]
        return a if in_flight[a] <= in_flight[b] else b
    a, b = _weighted(table, among, draws[0]), _weighted(table, among, draws[1])
    # cross-multiplied: no division
    weights = table.weights
    return a if in_flight[a] * weights[b] <= in_flight[b] * weights[a] else b


def _weighted(table: EndpointTable, among: Sequence[int], draw: float) -> int:
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
