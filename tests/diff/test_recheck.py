"""The recheck decision: a mismatch asked again is transient only when both sides then agree;
anything else keeps the mismatch, and the budget and the in-flight bound hold."""

from __future__ import annotations

import asyncio
import time

import pytest

from strangler_proxy.config import CompareConfig, ShadowSettings, load_config_text
from strangler_proxy.diff.recheck import (
    EXTRA_KEY,
    OUTCOME_ERROR,
    OUTCOME_MISMATCH,
    OUTCOME_OVER_BUDGET,
    OUTCOME_TRANSIENT,
    Rechecker,
    recheck_delay,
)
from strangler_proxy.diff.result import Difference, DiffKind, ShadowResult, Verdict
from strangler_proxy.errors import ConfigErrors


def mismatch(key: str = "ratings", at: float = 1.0) -> ShadowResult:
    return ShadowResult(key=key, mode="shadow", verdict=Verdict.MISMATCH, at=at, method="GET",
                        differences=(Difference(DiffKind.VALUE, "$.num_votes", 8, 7),), extra={"noise_sources": []})


def again(verdict: Verdict) -> ShadowResult:
    return ShadowResult(key="ratings", mode="shadow", verdict=verdict, at=2.0)


class Published:
    def __init__(self) -> None:
        self.results: list[ShadowResult] = []
        self.counted: list[tuple[str, str]] = []

    def __call__(self, r: ShadowResult) -> None:
        self.results.append(r)

    def count(self, key: str, outcome: str) -> None:
        self.counted.append((key, outcome))


def rechecker(published: Published, **kwargs: float) -> Rechecker:
    return Rechecker(published, count=published.count, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("second", "outcome", "verdict"), [
    (Verdict.MATCH, OUTCOME_TRANSIENT, Verdict.TRANSIENT),
    (Verdict.MISMATCH, OUTCOME_MISMATCH, Verdict.MISMATCH),
    (Verdict.CANDIDATE_ERROR, OUTCOME_ERROR, Verdict.MISMATCH),
    (Verdict.LEGACY_ERROR, OUTCOME_ERROR, Verdict.MISMATCH),
    (Verdict.SKIPPED, OUTCOME_ERROR, Verdict.MISMATCH),
])
async def test_only_agreement_the_second_time_makes_a_mismatch_transient(
    second: Verdict, outcome: str, verdict: Verdict
) -> None:
    published = Published()
    asked: list[float] = []

    async def ask() -> ShadowResult:
        asked.append(time.monotonic())
        return again(second)

    checker = rechecker(published)
    first = mismatch()
    start = time.monotonic()
    checker.submit([first], 0.05, ask)
    assert published.results == []  # nothing is recorded before the recheck decides
    await checker.drain()
    assert len(asked) == 1 and asked[0] - start >= 0.045  # asked again only after recheck_after_s
    [decided] = published.results
    # The first result, relabelled at most: its time, differences and extra stay (plus the outcome).
    assert decided.verdict is verdict and decided.at == first.at and decided.differences == first.differences
    assert decided.extra == {"noise_sources": [], EXTRA_KEY: outcome}
    assert published.counted == [("ratings", outcome)] and checker.outcomes[outcome] == 1


async def test_asking_again_that_raises_keeps_the_mismatch() -> None:
    published = Published()

    async def ask() -> ShadowResult:
        raise ConnectionError("gone")

    checker = rechecker(published)
    checker.submit([mismatch()], 0.0, ask)
    await checker.drain()
    assert [(r.verdict, r.extra[EXTRA_KEY]) for r in published.results] == [(Verdict.MISMATCH, OUTCOME_ERROR)]


async def test_one_recheck_decides_every_request_that_saw_the_comparison() -> None:
    published = Published()
    asks = 0

    async def ask() -> ShadowResult:
        nonlocal asks
        asks += 1
        return again(Verdict.MATCH)

    checker = rechecker(published, budget_per_s=1)
    checker.submit([mismatch(at=1.0), mismatch(at=2.0), mismatch(at=3.0)], 0.0, ask)
    await checker.drain()
    assert asks == 1  # one budget token, one question
    assert [(r.at, r.verdict) for r in published.results] == [(t, Verdict.TRANSIENT) for t in (1.0, 2.0, 3.0)]
    assert published.counted == [("ratings", OUTCOME_TRANSIENT)] * 3


async def test_over_the_budget_a_mismatch_is_recorded_at_once_and_counted() -> None:
    published = Published()
    asks = 0

    async def ask() -> ShadowResult:
        nonlocal asks
        asks += 1
        return again(Verdict.MATCH)

    now = [0.0]
    checker = Rechecker(published, budget_per_s=3, count=published.count, clock=lambda: now[0])
    for i in range(10):  # all in the same instant: one second's worth (3) is asked again
        checker.submit([mismatch(at=float(i))], 0.0, ask)
    over = [r for r in published.results if r.extra[EXTRA_KEY] == OUTCOME_OVER_BUDGET]
    assert len(over) == 7 and all(r.verdict is Verdict.MISMATCH for r in over)  # recorded before any recheck ran
    await checker.drain()
    assert asks == 3 and checker.outcomes == {OUTCOME_OVER_BUDGET: 7, OUTCOME_TRANSIENT: 3}
    now[0] = 1.0  # a second later the budget is back
    checker.submit([mismatch()], 0.0, ask)
    await checker.drain()
    assert asks == 4


async def test_no_more_than_max_inflight_rechecks_wait_at_once() -> None:
    published = Published()
    release = asyncio.Event()

    async def ask() -> ShadowResult:
        await release.wait()
        return again(Verdict.MISMATCH)

    checker = rechecker(published, budget_per_s=1000, max_inflight=2)
    for _ in range(5):
        checker.submit([mismatch()], 0.0, ask)
    assert checker.inflight == 2
    assert [r.extra[EXTRA_KEY] for r in published.results] == [OUTCOME_OVER_BUDGET] * 3
    release.set()
    await checker.drain()
    assert checker.outcomes == {OUTCOME_OVER_BUDGET: 3, OUTCOME_MISMATCH: 2} and checker.inflight == 0


async def test_drain_times_out_and_stop_drops_what_still_waits() -> None:
    published = Published()

    async def ask() -> ShadowResult:
        return again(Verdict.MATCH)

    checker = rechecker(published)
    checker.submit([mismatch()], 30.0, ask)
    with pytest.raises(TimeoutError):
        await checker.drain(0.05)
    await checker.stop()
    assert checker.inflight == 0 and published.results == []


def test_which_results_are_rechecked() -> None:
    rules = CompareConfig()
    assert recheck_delay(mismatch(), rules, safe=True) == 0.5  # the documented default
    assert recheck_delay(mismatch(), CompareConfig(recheck_after_s=0.2), safe=True) == 0.2
    assert recheck_delay(mismatch(), CompareConfig(recheck_after_s=0), safe=True) is None  # 0 disables
    assert recheck_delay(mismatch(), rules, safe=False) is None  # a (dry-run) write is never asked again
    for verdict in set(Verdict) - {Verdict.MISMATCH}:
        other = ShadowResult(key="ratings", mode="shadow", verdict=verdict, at=1.0)
        assert recheck_delay(other, rules, safe=True) is None


def test_recheck_settings_in_the_file() -> None:
    config = load_config_text("""
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  ratings: {url: "http://127.0.0.1:8101"}
shadow: {recheck_budget_per_s: 5, recheck_max_inflight: 7}
compare: {recheck_after_s: 0.8, ignore: ["$..request_id"]}
routes:
  - {name: ratings, path: "/r/{id}", target: ratings, mode: shadow}
  - {name: quick, path: "/q/{id}", target: ratings, mode: shadow, compare: {recheck_after_s: 0.2}}
  - {name: never, path: "/n/{id}", target: ratings, mode: shadow, compare: {recheck_after_s: 0}}
graphql:
  backends: {ratings: {upstream: ratings}}
  fields:
    Title.rating: {target: ratings, mode: shadow, compare: {recheck_after_s: 1.5}}
""")
    after = {r.name: config.compare_for(r).recheck_after_s for r in config.routes}
    assert after == {"ratings": 0.8, "quick": 0.2, "never": 0.0}  # the route's own wins, 0 included
    assert config.compare_for(config.graphql.fields["Title.rating"]).recheck_after_s == 1.5
    assert (config.shadow.recheck_budget_per_s, config.shadow.recheck_max_inflight) == (5, 7)
    assert ShadowSettings().recheck_budget_per_s == 50 and CompareConfig().recheck_after_s is None
    with pytest.raises(ConfigErrors) as bad:
        load_config_text('upstreams: {legacy: {url: "http://127.0.0.1:1"}}\ncompare: {recheck_after_s: -1}\n')
    assert "compare.recheck_after_s" in str(bad.value)
