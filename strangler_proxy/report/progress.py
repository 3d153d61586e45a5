"""Migration progress: how much of the traffic the extracted services already serve.

Computed from the results store (per key and time bucket) -- not from a
process's memory -- so it covers every replica and survives restarts. The
store does not say which side served each request; that follows from the
verdict and the mode the key was in at the time (the audit log says when it
changed, :class:`ModeHistory`):

=============================  ===============================  ===========================
recorded as                    legacy, shadow, canary           extracted
=============================  ===============================  ===========================
``served``                     the extracted service            the extracted service
``candidate-error``            a request, not served by it      a request, not served by it
compared (match, mismatch,     the monolith (the candidate      the extracted service
legacy-error, ...), skipped    was mirrored); scaled by         (REST reverse shadow); a
                               1 / ``sample_rate``              field's or a skip repeats a
                                                                ``served`` record: not counted
=============================  ===============================  ===========================

So "served by the extracted service" means *answered by it without failing*:
a candidate error is counted as a request but never as served (in canary it
cannot be told from a failed mirror, and a failed target request may have
been answered by the monolith as a fallback). The share is over the requests
the store records -- every request of a route or field in shadow, canary or
extracted (reads; writes only when mirrored as dry runs or served by the
target). Requests no route matched, and routes in ``legacy`` mode, are never
recorded: they are not in this share (the proxy's live counters, when asked,
give the share of *all* its requests, :class:`LiveShare`). For a GraphQL field
the monolith's side is counted per compared entity and the service's per
request, so the share leans to the monolith for list queries.

    >>> served_by_extracted(VerdictCounts(match=90, served=10), Mode.CANARY)
    Served(extracted=10.0, requests=100.0)
    >>> served_by_extracted(VerdictCounts(match=9, served=10), Mode.CANARY, sample_rate=0.1)
    Served(extracted=10.0, requests=100.0)
    >>> served_by_extracted(VerdictCounts(match=40, served=58, candidate_error=2), Mode.EXTRACTED)
    Served(extracted=98.0, requests=100.0)
    >>> served_by_extracted(VerdictCounts(match=40, served=60), Mode.EXTRACTED, field=True)
    Served(extracted=60.0, requests=60.0)

With cells, results are stored per (route, cell) (``ratings@c1``), each judged by
the mode that cell was in (:func:`cell_history`); a route is listed once, its
share summed over its cells (and any results stored without a cell), with the
cells as its breakdown (:attr:`KeyProgress.cells`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from strangler_proxy.config import Mode, StranglerConfig
from strangler_proxy.control.readiness import Readiness, evaluate, rules_for_key
from strangler_proxy.diff.keys import KeyKind, configured_for_key, configured_keys, key_kind
from strangler_proxy.routing.cells import scoped, split_scoped
from strangler_proxy.routing.router import RouteState
from strangler_proxy.store.counts import VerdictCounts
from strangler_proxy.store.queries import TimePoint

DEFAULT_POINTS = 24
ModesFrom = Literal["admin", "control-database", "file", "none"]


@dataclass(frozen=True, slots=True)
class Served:
    """Requests over some span: how many were recorded, how many the extracted
    service answered. Floats: a sampled mirror stands for 1 / sample_rate requests."""

    extracted: float = 0.0
    requests: float = 0.0

    @property
    def share(self) -> float | None:
        """0..1, or None when nothing was recorded."""
        return self.extracted / self.requests if self.requests else None

    def __add__(self, other: Served) -> Served:
        return Served(self.extracted + other.extracted, self.requests + other.requests)


def served_by_extracted(counts: VerdictCounts, mode: Mode, *, field: bool = False, sample_rate: float = 1.0) -> Served:
    """Who served the requests of one key and bucket, given its mode then (module docstring)."""
    failed = counts.candidate_error
    if mode is Mode.EXTRACTED:
        if field:  # comparisons of a reverse shadow repeat the field's served record
            return Served(float(counts.served), float(counts.served + failed))
        answered = counts.total - counts.skipped - failed  # a skipped mirror is also recorded as served
        return Served(float(answered), float(answered + failed))
    mirrored = counts.total - counts.served - failed  # compared or skipped: the monolith answered
    scale = 1.0 / sample_rate if sample_rate > 0 else 1.0
    return Served(float(counts.served), counts.served + failed + mirrored * scale)


@dataclass(frozen=True, slots=True)
class Switch:
    """One change of a key's mode, from the audit log (``at``: epoch seconds)."""

    at: float
    from_mode: Mode
    to_mode: Mode
    from_percent: float = 0.0
    to_percent: float = 0.0


class ModeHistory:
    """The mode a key was in at any time: the audit log's changes, then the mode now.

    Before its oldest recorded change a key was in that change's ``from`` mode;
    a key never changed was always in its mode now.

        >>> h = ModeHistory([Switch(100.0, Mode.SHADOW, Mode.CANARY), Switch(200.0, Mode.CANARY, Mode.EXTRACTED)],
        ...                 now=Mode.EXTRACTED)
        >>> [h.at(t).value for t in (50, 150, 250)]
        ['shadow', 'canary', 'extracted']
    """

    def __init__(self, switches: Sequence[Switch], now: Mode) -> None:
        self._switches = sorted(switches, key=lambda s: s.at)
        self._times = [s.at for s in self._switches]
        self.now = now

    def at(self, t: float) -> Mode:
        i = bisect.bisect_right(self._times, t)
        return self._switches[i].from_mode if i < len(self._switches) else self.now


def cell_history(route: Sequence[Switch], cell: Sequence[Switch], now: Mode) -> ModeHistory:
    """The mode a route had in one cell over time: the cell's own flips (audited as
    ``route@cell``) and, while the cell had no override of its own, the route's.

    A cell flip to what the route says ends its override (as a flip does); a cell
    whose first recorded flip starts from another state than the route's had an
    override before it.

        >>> s = Switch
        >>> h = cell_history([s(100.0, Mode.SHADOW, Mode.CANARY, 0, 10), s(300.0, Mode.CANARY, Mode.EXTRACTED, 10, 0)],
        ...                  [s(200.0, Mode.CANARY, Mode.LEGACY, 10, 0)], now=Mode.LEGACY)
        >>> [h.at(t).value for t in (50, 150, 250, 350)]  # the route's extracted at 300 does not reach the cell
        ['shadow', 'canary', 'legacy', 'legacy']
    """
    events = sorted([(sw.at, 0, sw) for sw in route] + [(sw.at, 1, sw) for sw in cell], key=lambda e: (e[0], e[1]))
    first_route = min(route, key=lambda sw: sw.at, default=None)
    state = (first_route.from_mode, first_route.from_percent) if first_route else None
    own: tuple[Mode, float] | None = None
    first_cell = min(cell, key=lambda sw: sw.at, default=None)
    if first_cell is not None:
        before = state
        for at, _, sw in events:
            if at >= first_cell.at:
                break
            before = (sw.to_mode, sw.to_percent)
        if before is not None and (first_cell.from_mode, first_cell.from_percent) != before:
            own = (first_cell.from_mode, first_cell.from_percent)  # an override older than the audit log
        if state is None:
            state = (first_cell.from_mode, first_cell.from_percent)
    switches: list[Switch] = []
    for at, is_cell, sw in events:
        was = own or state
        if is_cell:
            to = (sw.to_mode, sw.to_percent)
            own = to if to != state else None
        else:
            state = (sw.to_mode, sw.to_percent)
        after = own or state
        if was is not None and after is not None and after[0] is not was[0]:
            switches.append(Switch(at, was[0], after[0], was[1], after[1]))
    return ModeHistory(switches, now)


@dataclass(frozen=True, slots=True)
class KeyState:
    """A route's or field's mode now, and where it comes from (``file`` or ``flip``)."""

    mode: Mode
    percent: float
    source: str

    def text(self) -> str:
        mode = RouteState(self.mode, self.percent).text()
        return f"{mode} (flip)" if self.source == "flip" else mode


@dataclass(frozen=True, slots=True)
class ProgressPoint:
    start: int
    end: int
    served: Served


@dataclass(frozen=True, slots=True)
class KeyProgress:
    """One route or field: its mode now, its share over the span and over time, readiness."""

    key: str
    kind: KeyKind
    state: KeyState | None  # None: no longer in the config (its history still counts)
    readiness: Readiness
    served: Served
    points: tuple[ProgressPoint, ...]
    sample_rate: float
    cells: tuple[KeyProgress, ...] = ()  # the breakdown per cell (empty without cells)

    @property
    def cell(self) -> str | None:
        return split_scoped(self.key)[1]

    @property
    def latest(self) -> float | None:
        """The share of the newest point with any recorded request."""
        return next((p.served.share for p in reversed(self.points) if p.served.requests), None)


@dataclass(frozen=True, slots=True)
class LiveShare:
    """The proxy's own counters since it started (one replica, REST requests only):
    every request, those that matched no route included."""

    requests: int
    extracted: int
    unmatched: int

    @property
    def share(self) -> float | None:
        return self.extracted / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class Progress:
    generated_at: float
    since: float | None
    start: int | None  # the time axis: every point is (end - start) / len(points) wide
    end: int | None
    modes_from: ModesFrom
    modes_note: str  # how the modes were found, in a sentence
    keys: tuple[KeyProgress, ...]
    points: tuple[ProgressPoint, ...]  # all keys together
    served: Served
    live: LiveShare | None = None

    @property
    def empty(self) -> bool:
        return not self.served.requests


def sample_rate_of(config: StranglerConfig | None, key: str) -> float:
    target = configured_for_key(config, key)
    return target.sample_rate if target is not None else 1.0


def _axis(series: Mapping[str, Sequence[TimePoint]], since: float | None, now: float, bucket_s: int,
          points: int) -> tuple[int, int, int] | None:
    """(start, end, span) of the common time axis; None without any data."""
    starts = [p.start for tl in series.values() for p in tl]
    if not starts:
        return None
    start = int(since // bucket_s * bucket_s) if since is not None else min(starts)
    start = min(start, min(starts))
    end = max(int(now // bucket_s + 1) * bucket_s, max(p.end for tl in series.values() for p in tl))
    buckets = (end - start) // bucket_s
    span = math.ceil(buckets / max(1, points)) * bucket_s
    return start, start + math.ceil((end - start) / span) * span, span


def build_progress(
    series: Mapping[str, Sequence[TimePoint]],
    readiness: Mapping[str, Readiness],
    states: Mapping[str, KeyState],
    histories: Mapping[str, ModeHistory],
    config: StranglerConfig | None,
    *,
    bucket_s: int,
    now: float,
    since: float | None = None,
    points: int = DEFAULT_POINTS,
    modes_from: ModesFrom = "file",
    modes_note: str = "",
    live: LiveShare | None = None,
) -> Progress:
    """Pure: ``series`` are per-bucket time points per key (the store's buckets),
    ``states`` the modes now and ``histories`` the modes over time, both by key
    (``ratings@c1`` for a cell; one without its own follows its route's).
    Keys: every configured route and field, plus every key with results; a
    cell's key counts under its route, once."""
    names = list(dict.fromkeys([*configured_keys(config), *(split_scoped(k)[0] for k in sorted(series))]))
    names.sort(key=lambda k: (key_kind(k) != "route", k))
    axis = _axis(series, since, now, bucket_s, points)
    n_points = (axis[1] - axis[0]) // axis[2] if axis else 0
    known_cells = config.cells.names if config is not None and config.cells is not None else ()

    def per_point(key: str, rate: float) -> list[Served]:
        state = states.get(key) or states.get(split_scoped(key)[0])
        history = histories.get(key) or ModeHistory((), state.mode if state else Mode.SHADOW)
        out = [Served() for _ in range(n_points)]
        for tp in series.get(key, ()):
            assert axis is not None
            mode = history.at(tp.start + (tp.end - tp.start) / 2)
            out[(tp.start - axis[0]) // axis[2]] += served_by_extracted(
                tp.counts, mode, field=key_kind(key) == "graphql-field", sample_rate=rate)
        return out

    def key_progress(key: str, served: list[Served], rate: float, cells: tuple[KeyProgress, ...] = ()) -> KeyProgress:
        judged = readiness.get(key) or evaluate(VerdictCounts(), None, None, rules_for_key(config, key))
        return KeyProgress(key=key, kind=key_kind(key), state=states.get(key) or states.get(split_scoped(key)[0]),
                           readiness=judged, served=sum(served, Served()), points=_points(axis, served),
                           sample_rate=rate, cells=cells)

    totals = [Served() for _ in range(n_points)]
    keys = []
    for key in names:
        rate = sample_rate_of(config, key)
        seen = {c for k in series if (c := split_scoped(k)[1]) is not None and split_scoped(k)[0] == key}
        configured = known_cells if configured_for_key(config, key) is not None else ()
        route = per_point(key, rate)  # results stored without a cell
        cells = []
        for cell in [*configured, *sorted(seen - set(configured))]:
            own = per_point(scoped(key, cell), rate)
            route = [a + b for a, b in zip(route, own, strict=True)]
            cells.append(key_progress(scoped(key, cell), own, rate))
        for i, s in enumerate(route):
            totals[i] += s
        keys.append(key_progress(key, route, rate, tuple(cells)))
    return Progress(
        generated_at=now, since=since, start=axis[0] if axis else None, end=axis[1] if axis else None,
        modes_from=modes_from, modes_note=modes_note, keys=tuple(keys), points=_points(axis, totals),
        served=sum(totals, Served()), live=live,
    )


def _points(axis: tuple[int, int, int] | None, served: list[Served]) -> tuple[ProgressPoint, ...]:
    if axis is None:
        return ()
    start, _, span = axis
    return tuple(ProgressPoint(start + i * span, start + (i + 1) * span, s) for i, s in enumerate(served))
