"""Traffic through the proxy: a plan's requests sent on schedule, and what came back.

Two halves, kept apart so each can be checked on its own:

- a :class:`Schedule` -- *what* to send and *when*: ``(due offset, request)``
  pairs. Two kinds exist:

  - :class:`SteadyRate` over a :class:`TrafficPlan` (a deterministic stream of
    :class:`PlannedRequest` s): request ``i`` is due at ``i / rate`` until
    ``duration_s``. Plans are the app's to write; ``stack.traffic`` in
    strangler.yaml names the :class:`PlanFactory` of ``strangler traffic``
    (the demo's: ``legacy_monolith.traffic_plan:build_plan``).
  - a replay of recorded traffic (:mod:`strangler_proxy.stack.har`): each
    entry at its recorded offset, scaled by a speed.

- :func:`run_schedule` -- the one runner. Open loop: a request is sent when it
  is due, whatever earlier answers took (a closed loop would slow down with the
  system under test and hide its latency). At most ``concurrency`` requests
  are in flight; a request that had to wait for a slot shows as schedule lag.
  A schedule with an end (the steady rate's ``duration_s``) stops there:
  requests not yet sent are dropped, those in flight get at most ``timeout_s``
  to finish. One without an end (a replay) sends everything, however late.
  :func:`run_traffic` is the steady rate's shorthand.

    plan = await build_plan(client, PlanSettings(seed=1, size=2000))
    summary = await run_traffic(TrafficOptions(rate=50, duration_s=10), plan, client)
    print(summary.ok, summary.errors, summary.latency_ms(99))

An *error* is a transport failure (refused, reset, timed out), a status the
request does not expect (a 5xx, a 400), or a GraphQL answer carrying
``errors``. Expected non-2xx answers -- a 404 for deleting something that does
not exist -- are counted by status, not as errors.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_RATE = 50.0
DEFAULT_DURATION_S = 30.0
DEFAULT_SEED = 1
DEFAULT_CONCURRENCY = 8
DEFAULT_GRAPHQL_SHARE = 0.1
DEFAULT_WRITE_SHARE = 0.1
DEFAULT_TIMEOUT_S = 10.0
# Above this share of errors the run failed (exit code 1 in the CLI).
MAX_ERROR_SHARE = 0.01
# Headers httpx adds to every request unless told otherwise; a client that must
# send exactly what a plan says (a replay) goes without them.
CLIENT_DEFAULT_HEADERS = ("Accept", "Accept-Encoding", "User-Agent")


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of a plan, and the statuses that are a correct answer to it.

    ``path`` is the request-target (path and query), sent byte for byte after
    the path of the client's base URL: no dot segments removed, nothing
    re-quoted, so it must be ASCII (percent-encode the rest). ``headers`` (names
    and values in Latin-1, order and repeats kept) go out besides the client's
    own; the body is ``json`` or the bytes of ``content``, never both.

    >>> PlannedRequest("title", "GET", "/api/titles/tt0000001").expected
    frozenset({200})
    """

    kind: str  # what it does, for the per-kind figures
    method: str
    path: str
    json: dict[str, Any] | None = None
    expected: frozenset[int] = frozenset({200})
    graphql: bool = False  # an answer carrying "errors" is an error
    headers: tuple[tuple[str, str], ...] = ()
    content: bytes | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or not self.path.isascii():
            raise ValueError(f"{self.path!r}: a planned path starts with / and is ASCII (percent-encoded)")
        if self.json is not None and self.content is not None:
            raise ValueError(f"{self.method} {self.path}: a body is json or content, not both")


class TrafficPlan(Protocol):
    """A deterministic stream of requests: two plans from one seed send the same."""

    def requests(self) -> Iterator[PlannedRequest]: ...


class Schedule(Protocol):
    """What to send and when, for :func:`run_schedule`.

    ``due()`` yields ``(offset_s, request)`` with non-decreasing offsets from
    the start of the run; each call starts afresh. Nothing is sent at or after
    ``end_s`` (None: everything is sent, however late). ``planned`` is how many
    ``due()`` yields at most; ``skipped`` counts, by reason, requests the
    schedule left out on purpose (None: it leaves none out)."""

    @property
    def planned(self) -> int: ...

    @property
    def end_s(self) -> float | None: ...

    @property
    def skipped(self) -> Mapping[str, int] | None: ...

    def due(self) -> Iterator[tuple[float, PlannedRequest]]: ...


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """What ``strangler traffic`` asks a plan for."""

    seed: int = DEFAULT_SEED
    size: int | None = None  # how many records the ids range over (None: ask the app)
    graphql_share: float = DEFAULT_GRAPHQL_SHARE
    write_share: float = DEFAULT_WRITE_SHARE


class PlanFactory(Protocol):
    """Builds a plan, asking the app behind ``client`` what it needs (e.g. its size).

    Raises ValueError (or httpx.HTTPError) with a sentence when it cannot."""

    def __call__(self, client: httpx.AsyncClient, settings: PlanSettings) -> Awaitable[TrafficPlan]: ...


@dataclass(frozen=True, slots=True)
class TrafficOptions:
    """How hard and how long to send (checked once here)."""

    rate: float = DEFAULT_RATE
    duration_s: float = DEFAULT_DURATION_S
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0 or self.concurrency < 1 or self.timeout_s <= 0:
            raise ValueError("rate, duration and timeout must be > 0 and concurrency >= 1")

    @property
    def planned(self) -> int:
        return max(1, int(self.rate * self.duration_s))


@dataclass(frozen=True, slots=True)
class SteadyRate:
    """A plan at a steady rate: request ``i`` due at ``i / rate``, until ``duration_s``.

    >>> class Same:
    ...     def requests(self):
    ...         while True:
    ...             yield PlannedRequest("title", "GET", "/")
    >>> [offset for offset, _ in SteadyRate(Same(), TrafficOptions(rate=4, duration_s=1)).due()]
    [0.0, 0.25, 0.5, 0.75]
    """

    plan: TrafficPlan
    options: TrafficOptions

    @property
    def planned(self) -> int:
        return self.options.planned

    @property
    def end_s(self) -> float | None:
        return self.options.duration_s

    @property
    def skipped(self) -> Mapping[str, int] | None:
        return None

    def due(self) -> Iterator[tuple[float, PlannedRequest]]:
        for i, request in zip(range(self.planned), self.plan.requests(), strict=False):
            yield i / self.options.rate, request


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one request."""

    kind: str
    status: int | None  # None: no HTTP answer
    latency_s: float  # send -> answer
    lag_s: float  # due -> sent (waiting for a free slot or a busy loop)
    error: str | None  # None: a correct answer


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


@dataclass(frozen=True)
class TrafficSummary:
    """The outcome of a run, with the figures the CLI prints."""

    planned: int
    outcomes: tuple[Outcome, ...]
    elapsed_s: float
    dropped: int  # due but never sent before the duration ended
    skipped: Mapping[str, int] | None = None  # left out by the schedule, by reason (None: it leaves none out)
    by_kind: dict[str, Counter[str]] = field(init=False)

    def __post_init__(self) -> None:
        by_kind: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            c = by_kind.setdefault(str(o.kind), Counter(requests=0, ok=0, errors=0))
            c["requests"] += 1
            c["errors" if o.error else "ok"] += 1
        object.__setattr__(self, "by_kind", dict(sorted(by_kind.items())))

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.error)

    @property
    def ok(self) -> int:
        return self.sent - self.errors

    @property
    def error_share(self) -> float:
        return self.errors / self.sent if self.sent else 1.0

    @property
    def failed(self) -> bool:
        return self.error_share > MAX_ERROR_SHARE

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def statuses(self) -> dict[str, int]:
        """Count per HTTP status (``"error"`` for no answer)."""
        c = Counter(str(o.status) if o.status is not None else "no answer" for o in self.outcomes)
        return dict(sorted(c.items()))

    def error_reasons(self) -> dict[str, int]:
        return dict(Counter(o.error for o in self.outcomes if o.error).most_common())

    def latency_ms(self, p: float, kind: str | None = None) -> float | None:
        values = [o.latency_s for o in self.outcomes if o.status is not None and (kind is None or o.kind == kind)]
        found = _percentile(values, p)
        return None if found is None else round(found * 1000, 2)

    def lag_ms(self, p: float) -> float | None:
        found = _percentile([o.lag_s for o in self.outcomes], p)
        return None if found is None else round(found * 1000, 2)

    def as_json(self) -> dict[str, Any]:
        skipped = {} if self.skipped is None else {"skipped": dict(self.skipped)}
        return {
            "planned": self.planned, "sent": self.sent, "dropped": self.dropped, **skipped, "ok": self.ok,
            "errors": self.errors, "error_share": round(self.error_share, 6), "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3), "achieved_rate": round(self.achieved_rate, 2),
            "latency_ms": {"p50": self.latency_ms(50), "p99": self.latency_ms(99)},
            "schedule_lag_ms": {"p50": self.lag_ms(50), "p99": self.lag_ms(99)},
            "statuses": self.statuses(),
            "error_reasons": self.error_reasons(),
            "kinds": {
                k: {**dict(c), "p50_ms": self.latency_ms(50, k), "p99_ms": self.latency_ms(99, k)}
                for k, c in self.by_kind.items()
            },
        }


def traffic_client(url: str, *, concurrency: int, timeout_s: float, default_headers: bool = True) -> httpx.AsyncClient:
    """The client of a run: ``concurrency`` connections to ``url``; without
    ``default_headers`` it sends only the headers each request names (besides
    ``Host``, ``Content-Length`` and ``Connection``)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits)
    if not default_headers:
        for name in CLIENT_DEFAULT_HEADERS:
            del client.headers[name]
    return client


async def _send(client: httpx.AsyncClient, request: PlannedRequest) -> tuple[int | None, float, str | None]:
    # The target goes out as planned: httpx would drop dot segments and empty
    # path segments, and a proxy routes on the raw target.
    target = client.base_url.raw_path.rstrip(b"/") + request.path.encode("ascii")
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
    started = time.perf_counter()
    try:
        response = await client.request(
            request.method, request.path, json=request.json, content=request.content,
            headers=headers or None, extensions={"target": target},
        )
    except httpx.TimeoutException:
        return None, time.perf_counter() - started, "timeout"
    except httpx.TransportError as exc:
        return None, time.perf_counter() - started, f"transport: {exc.__class__.__name__}"
    except httpx.HTTPError as exc:  # e.g. an answer whose Content-Encoding does not decode
        return None, time.perf_counter() - started, f"http: {exc.__class__.__name__}"
    latency = time.perf_counter() - started
    status = response.status_code
    if status not in request.expected:
        return status, latency, f"unexpected {status}"
    if request.graphql:
        try:
            body = response.json()
        except ValueError:
            return status, latency, "graphql: not JSON"
        if not isinstance(body, dict) or body.get("errors"):
            return status, latency, "graphql: errors"
    return status, latency, None


async def run_traffic(
    options: TrafficOptions,
    plan: TrafficPlan,
    client: httpx.AsyncClient,
    *,
    on_done: Callable[[Outcome], None] | None = None,
) -> TrafficSummary:
    """Send ``options.planned`` requests of ``plan`` at ``options.rate`` through ``client``."""
    return await run_schedule(
        SteadyRate(plan, options), client, concurrency=options.concurrency, timeout_s=options.timeout_s,
        on_done=on_done,
    )


async def run_schedule(
    schedule: Schedule,
    client: httpx.AsyncClient,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_done: Callable[[Outcome], None] | None = None,
) -> TrafficSummary:
    """Send what ``schedule`` says when it says, at most ``concurrency`` at a time, through ``client``.

    ``timeout_s`` bounds the wait for the last answers after ``schedule.end_s``
    (the client's own timeout bounds each request)."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    outcomes: list[Outcome] = []
    in_flight: set[asyncio.Task[None]] = set()
    start = loop.time()
    deadline = None if schedule.end_s is None else start + schedule.end_s

    async def one(request: PlannedRequest, due: float) -> None:
        async with slots:
            if deadline is not None and loop.time() >= deadline:
                return  # its turn came too late: dropped, not sent
            lag = loop.time() - due
            status, latency, error = await _send(client, request)
        outcome = Outcome(request.kind, status, latency, lag, error)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    for offset, request in schedule.due():
        due = start + offset
        if deadline is not None and due >= deadline:
            break
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        task = asyncio.create_task(one(request, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if deadline is None:
        # No end: everything sent gets its answer (each bounded by the client's timeout).
        if in_flight:
            await asyncio.wait(set(in_flight))
        elapsed = loop.time() - start
    else:
        # Stop at the end: the last requests get at most the request timeout.
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=max(0.0, deadline - loop.time()) + timeout_s)
        for task in list(in_flight):
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        elapsed = min(loop.time(), deadline + timeout_s) - start
    planned = schedule.planned
    return TrafficSummary(planned, tuple(outcomes), elapsed, dropped=planned - len(outcomes),
                          skipped=schedule.skipped)
