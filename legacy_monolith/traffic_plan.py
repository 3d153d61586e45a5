"""The demo's traffic: a realistic, repeatable mix of film-catalogue reads, votes and GraphQL.

``strangler.yaml`` names :func:`build_plan` as ``stack.traffic``; the toolkit's
``strangler traffic`` sends what it plans (``strangler_proxy/stack/traffic.py``).
The n-th request depends only on the seed, the catalogue size and the shares:
which titles (skewed, so popular titles recur as in real traffic), which
people, which user votes what, which vote is retracted. Responses never
change the plan, so two runs with one seed send the same requests in the same
order.

    plan = TrafficPlan(seed=1, catalogue=Catalogue.of(2000))
    summary = await run_traffic(TrafficOptions(rate=50, duration_s=10), plan, client)
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from legacy_monolith.seed import SeedPlan
from legacy_monolith.seed_words import ADJECTIVES, NOUNS
from strangler_proxy.stack.traffic import DEFAULT_GRAPHQL_SHARE, DEFAULT_WRITE_SHARE, PlannedRequest, PlanSettings

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


class Kind(enum.StrEnum):
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
        vote_share: float = DEFAULT_WRITE_SHARE,
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
                    EXPECTED_STATUSES[Kind.GRAPHQL], graphql=True,
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
            return PlannedRequest(kind, "GET", f"/api/search?q={rng.choice(ADJECTIVES + NOUNS)}&limit=10",
                                  expected=EXPECTED_STATUSES[kind])
        if kind is Kind.KNOWN_FOR:
            return PlannedRequest(kind, "GET", f"/api/people/{self._person(rng)}/known-for",
                                  expected=EXPECTED_STATUSES[kind])
        title = self._title(rng)
        suffix = {Kind.TITLE: "", Kind.RATINGS: "/ratings", Kind.CAST: "/cast", Kind.IMAGES: "/images"}[kind]
        return PlannedRequest(kind, "GET", f"/api/titles/{title}{suffix}", expected=EXPECTED_STATUSES[kind])

    def _write(self, rng: random.Random, cast: list[tuple[str, str]]) -> PlannedRequest:
        if cast and rng.random() < RETRACT_SHARE:
            if rng.random() < MISSING_RETRACT_SHARE:
                title, user = self._title(rng), f"{TRAFFIC_USER_PREFIX}never"
            else:
                title, user = cast.pop(rng.randrange(len(cast)))
            return PlannedRequest(Kind.RETRACT, "DELETE", f"/api/titles/{title}/ratings/{user}",
                                  expected=EXPECTED_STATUSES[Kind.RETRACT])
        title = self._title(rng)
        user = f"{TRAFFIC_USER_PREFIX}{rng.randint(1, TRAFFIC_USERS):03d}"
        # Votes lean high, as real ones do: 1..10 weighted towards 6..9.
        value = rng.choices(range(1, 11), (1, 1, 2, 3, 5, 8, 10, 10, 7, 4))[0]
        if (title, user) not in cast:
            cast.append((title, user))
        return PlannedRequest(Kind.VOTE, "POST", f"/api/titles/{title}/ratings", {"user_id": user, "value": value},
                              EXPECTED_STATUSES[Kind.VOTE])


async def discover_titles(client: httpx.AsyncClient) -> int:
    """How many titles the catalogue behind ``client`` has (``total`` of the title list).

    Raises httpx.HTTPError when it cannot be asked and ValueError when the answer is not a catalogue.
    """
    response = await client.get("/api/titles", params={"limit": 1})
    if response.status_code != 200:
        raise ValueError(f"GET /api/titles answered {response.status_code} {response.reason_phrase}")
    body = response.json()  # ValueError when it is not JSON
    total = body.get("total") if isinstance(body, dict) else None
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"GET /api/titles answered total={total!r}; is the catalogue seeded?")
    return total


async def build_plan(client: httpx.AsyncClient, settings: PlanSettings) -> TrafficPlan:
    """``stack.traffic`` of the demo: the mix over the catalogue behind ``client``
    (its size asked unless ``settings.size`` gives it)."""
    titles = settings.size
    if titles is None:
        try:
            titles = await discover_titles(client)
        except (httpx.HTTPError, ValueError) as exc:
            raise ValueError(
                f"cannot find out how many titles {client.base_url} has ({exc}); "
                "is the stack up (`strangler up`)? Or pass --titles N."
            ) from exc
    return TrafficPlan(settings.seed, Catalogue.of(titles), graphql_share=settings.graphql_share,
                       vote_share=settings.write_share)
