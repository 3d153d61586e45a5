"""Demo traffic: a realistic, repeatable mix of reads and votes sent through the proxy.

Two halves, kept apart so each can be checked on its own:

- :class:`TrafficPlan` -- *what* to send. The n-th request depends only on the
  seed, the catalogue size and the shares: which titles (skewed, so popular
  titles recur as in real traffic), which people, which user votes what, which
  vote is retracted. Responses never change the plan, so two runs with one
  seed send the same requests in the same order.
- :func:`run_traffic` -- *when* to send it. Open loop: request ``i`` is due at
  ``start + i / rate`` whatever earlier answers took (a closed loop would slow
  down with the system under test and hide its latency). At most
  ``concurrency`` requests are in flight; a request that had to wait for a
  slot shows as schedule lag. Everything stops at ``duration_s``: requests not
  yet sent are dropped, those in flight get at most ``timeout_s`` to finish.

    plan = TrafficPlan(seed=1, catalogue=Catalogue.of(2000))
    summary = await run_traffic(TrafficOptions(rate=50, duration_s=10), plan, client)
    print(summary.ok, summary.errors, summary.latency_ms(99))

An *error* is a transport failure (refused, reset, timed out), a status the
request kind does not expect (a 5xx, a 400), or a GraphQL answer carrying
``errors``. Expected non-2xx answers -- a 404 for retracting a vote that does
not exist -- are counted by status, not as errors.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from legacy_monolith.seed import SeedPlan
from legacy_monolith.seed_words import ADJECTIVES, NOUNS

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_RATE = 50.0
DEFAULT_DURATION_S = 30.0
DEFAULT_SEED = 1
DEFAULT_CONCURRENCY = 8
DEFAULT_GRAPHQL_SHARE = 0.1
DEFAULT_VOTE_SHARE = 0.1
DEFAULT_TIMEOUT_S = 10.0
# Above this share of errors the run failed (exit code 1 in the CLI).
MAX_ERROR_SHARE = 0.01
# Of the writes, this share are retractions (DELETE); the rest are votes.
RETRACT_SHARE = 0.15
# Of the retractions, this share target a vote the plan never cast (a 404).
MISSING_RETRACT_SHARE = 0.2
# Voters of the generated traffic; a name of their own so they never collide
# with the seeded users (u1, u2, ...) and a rerun shows re-votes (200s).
TRAFFIC_USERS = 300
TRAFFIC_USER_PREFIX = "traffic-u"
# Popularity skew: title index = N * r ** SKEW, r uniform -- a few hot titles, a long tail.
TITLE_SKEW = 2.5


class Kind(str, enum.Enum):
    """What one request of the mix does."""

    TITLE = "title"
    RATINGS = "ratings"
    CAST = "cast"
    KNOWN_FOR = "known-for"
    IMAGES = "images"
    SEARCH = "search"
    VOTE = "vote"
    RETRACT = "retract"
    GRAPHQL = "graphql"


# How the reads divide what is left after votes and GraphQL.
READ_MIX: tuple[tuple[Kind, float], ...] = (
    (Kind.TITLE, 0.25),
    (Kind.RATINGS, 0.30),
    (Kind.CAST, 0.15),
    (Kind.KNOWN_FOR, 0.10),
    (Kind.IMAGES, 0.10),
    (Kind.SEARCH, 0.10),
)

# Statuses that are a correct answer for each kind (anything else is an error).
EXPECTED_STATUSES: dict[Kind, frozenset[int]] = {
    **{kind: frozenset({200}) for kind, _ in READ_MIX},
    Kind.VOTE: frozenset({200, 201}),  # 201 a new vote, 200 a changed one
    Kind.RETRACT: frozenset({204, 404}),  # 404: no such vote (never cast, or already retracted)
    Kind.GRAPHQL: frozenset({200}),
}

GRAPHQL_QUERY = "query Demo($id: ID!) { title(id: $id) { id primaryTitle rating { averageRating numVotes } } }"


@dataclass(frozen=True, slots=True)
class Catalogue:
    """How many titles and people the ids may range over.

    >>> Catalogue.of(2000)
    Catalogue(titles=2000, people=1000)
    """

    titles: int
    people: int

    @classmethod
    def of(cls, titles: int, people: int | None = None) -> Catalogue:
        """``people`` defaults to what the demo seed makes for ``titles``."""
        return cls(titles, people if people is not None else SeedPlan(titles=titles).people)


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of the plan."""

    kind: Kind
    method: str
    path: str
    json: dict[str, Any] | None = None


class TrafficPlan:
    """A deterministic stream of requests.

    >>> plan = TrafficPlan(seed=1, catalogue=Catalogue.of(100))
    >>> [r.path for r in plan.take(2)] == [r.path for r in TrafficPlan(1, Catalogue.of(100)).take(2)]
    True
    """

    def __init__(
        self,
        seed: int,
        catalogue: Catalogue,
        *,
        graphql_share: float = DEFAULT_GRAPHQL_SHARE,
        vote_share: float = DEFAULT_VOTE_SHARE,
    ) -> None:
        if catalogue.titles < 1 or catalogue.people < 1:
            raise ValueError("the catalogue needs at least one title and one person")
        if graphql_share < 0 or vote_share < 0 or graphql_share + vote_share > 1:
            raise ValueError("graphql_share and vote_share must be >= 0 and add up to at most 1")
        self.seed = seed
        self.catalogue = catalogue
        self.graphql_share = graphql_share
        self.vote_share = vote_share

    def take(self, count: int) -> list[PlannedRequest]:
        it = self.requests()
        return [next(it) for _ in range(count)]

    def requests(self) -> Iterator[PlannedRequest]:
        """The endless stream; every call starts it afresh from the seed."""
        rng = random.Random(self.seed)
        cast: list[tuple[str, str]] = []  # (title, user) votes planned and not yet retracted
        read_kinds = [k for k, _ in READ_MIX]
        read_weights = [w for _, w in READ_MIX]
        while True:
            r = rng.random()
            if r < self.vote_share:
                yield self._write(rng, cast)
            elif r < self.vote_share + self.graphql_share:
                yield PlannedRequest(
                    Kind.GRAPHQL, "POST", "/graphql",
                    {"query": GRAPHQL_QUERY, "variables": {"id": self._title(rng)}},
                )
            else:
                yield self._read(rng, rng.choices(read_kinds, read_weights)[0])

    def _title(self, rng: random.Random) -> str:
        n = min(self.catalogue.titles, 1 + int(self.catalogue.titles * rng.random() ** TITLE_SKEW))
        return f"tt{n:07d}"

    def _person(self, rng: random.Random) -> str:
        n = min(self.catalogue.people, 1 + int(self.catalogue.people * rng.random() ** TITLE_SKEW))
        return f"nm{n:07d}"

    def _read(self, rng: random.Random, kind: Kind) -> PlannedRequest:
        if kind is Kind.SEARCH:
            return PlannedRequest(kind, "GET", f"/api/search?q={rng.choice(ADJECTIVES + NOUNS)}&limit=10")
        if kind is Kind.KNOWN_FOR:
            return PlannedRequest(kind, "GET", f"/api/people/{self._person(rng)}/known-for")
        title = self._title(rng)
        suffix = {Kind.TITLE: "", Kind.RATINGS: "/ratings", Kind.CAST: "/cast", Kind.IMAGES: "/images"}[kind]
        return PlannedRequest(kind, "GET", f"/api/titles/{title}{suffix}")

    def _write(self, rng: random.Random, cast: list[tuple[str, str]]) -> PlannedRequest:
        if cast and rng.random() < RETRACT_SHARE:
            if rng.random() < MISSING_RETRACT_SHARE:
                title, user = self._title(rng), f"{TRAFFIC_USER_PREFIX}never"
            else:
                title, user = cast.pop(rng.randrange(len(cast)))
            return PlannedRequest(Kind.RETRACT, "DELETE", f"/api/titles/{title}/ratings/{user}")
        title = self._title(rng)
        user = f"{TRAFFIC_USER_PREFIX}{rng.randint(1, TRAFFIC_USERS):03d}"
        # Votes lean high, as real ones do: 1..10 weighted towards 6..9.
        value = rng.choices(range(1, 11), (1, 1, 2, 3, 5, 8, 10, 10, 7, 4))[0]
        if (title, user) not in cast:
            cast.append((title, user))
        return PlannedRequest(Kind.VOTE, "POST", f"/api/titles/{title}/ratings", {"user_id": user, "value": value})


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
class Outcome:
    """What happened to one request."""

    kind: Kind
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
    by_kind: dict[str, Counter[str]] = field(init=False)

    def __post_init__(self) -> None:
        by_kind: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            c = by_kind.setdefault(o.kind.value, Counter(requests=0, ok=0, errors=0))
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

    def latency_ms(self, p: float, kind: Kind | None = None) -> float | None:
        values = [o.latency_s for o in self.outcomes if o.status is not None and (kind is None or o.kind is kind)]
        found = _percentile(values, p)
        return None if found is None else round(found * 1000, 2)

    def lag_ms(self, p: float) -> float | None:
        found = _percentile([o.lag_s for o in self.outcomes], p)
        return None if found is None else round(found * 1000, 2)

    def as_json(self) -> dict[str, Any]:
        return {
            "planned": self.planned, "sent": self.sent, "dropped": self.dropped, "ok": self.ok,
            "errors": self.errors, "error_share": round(self.error_share, 6), "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3), "achieved_rate": round(self.achieved_rate, 2),
            "latency_ms": {"p50": self.latency_ms(50), "p99": self.latency_ms(99)},
            "schedule_lag_ms": {"p50": self.lag_ms(50), "p99": self.lag_ms(99)},
            "statuses": self.statuses(),
            "error_reasons": self.error_reasons(),
            "kinds": {
                k: {**dict(c), "p50_ms": self.latency_ms(50, Kind(k)), "p99_ms": self.latency_ms(99, Kind(k))}
                for k, c in self.by_kind.items()
            },
        }


async def discover_titles(client: httpx.AsyncClient) -> int:
    """How many titles the catalogue behind ``client`` has (``total`` of the title list).

    Raises httpx.HTTPError when it cannot be asked and ValueError when the answer is not a catalogue.
    """
    response = await client.get("/api/titles", params={"limit": 1})
    response.raise_for_status()
    total = response.json().get("total")
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"GET /api/titles answered total={total!r}; is the catalogue seeded?")
    return total


async def _send(client: httpx.AsyncClient, request: PlannedRequest) -> tuple[int | None, float, str | None]:
    started = time.perf_counter()
    try:
        response = await client.request(request.method, request.path, json=request.json)
    except httpx.TimeoutException:
        return None, time.perf_counter() - started, "timeout"
    except httpx.TransportError as exc:
        return None, time.perf_counter() - started, f"transport: {exc.__class__.__name__}"
    latency = time.perf_counter() - started
    status = response.status_code
    if status not in EXPECTED_STATUSES[request.kind]:
        return status, latency, f"unexpected {status}"
    if request.kind is Kind.GRAPHQL:
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
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(options.concurrency)
    outcomes: list[Outcome] = []
    in_flight: set[asyncio.Task[None]] = set()
    start = loop.time()
    deadline = start + options.duration_s

    async def one(request: PlannedRequest, due: float) -> None:
        async with slots:
            if loop.time() >= deadline:
                return  # its turn came too late: dropped, not sent
            lag = loop.time() - due
            status, latency, error = await _send(client, request)
        outcome = Outcome(request.kind, status, latency, lag, error)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    requests = plan.requests()
    for i in range(options.planned):
        due = start + i / options.rate
        if due >= deadline:
            break
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        task = asyncio.create_task(one(next(requests), due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    # Stop at the duration: the last requests get at most the request timeout.
    if in_flight:
        await asyncio.wait(set(in_flight), timeout=max(0.0, deadline - loop.time()) + options.timeout_s)
    for task in list(in_flight):
        task.cancel()
    if in_flight:
        await asyncio.gather(*in_flight, return_exceptions=True)
    elapsed = min(loop.time(), deadline + options.timeout_s) - start
    return TrafficSummary(options.planned, tuple(outcomes), elapsed, dropped=options.planned - len(outcomes))
