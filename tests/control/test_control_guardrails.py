"""Diff-gated rollback: a failing candidate is rolled back; too few samples never decide."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from strangler_proxy.config import Mode
from strangler_proxy.control.guardrails import STATE_INSUFFICIENT, STATE_OK, STATE_WARMING_UP, Guardrails
from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.routing.canary import serves_target
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN, config_text, make_config

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GUARDS = "guardrails: {min_samples: 20, window: 50, window_s: 60, max_error_rate: 0.2, max_mismatch_rate: 0.2}\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def result(verdict: Verdict, mode: str = "canary", key: str = "ratings") -> ShadowResult:
    return ShadowResult(key=key, mode=mode, verdict=verdict, at=time.time())


async def test_two_bad_samples_never_roll_back_and_low_traffic_is_reported(services) -> None:
    svc = await services(make_config(extra=GUARDS))
    await svc.flip("ratings", "canary", 10, who="ops")
    clock = Clock()
    guard = Guardrails(svc, clock=clock)
    guard.start()
    try:
        for _ in range(19):  # one below min_samples, all failing
            guard.observe(result(Verdict.CANDIDATE_ERROR))
        await asyncio.sleep(0.05)
        assert svc.state("ratings").mode is Mode.CANARY
        status = guard.status("ratings")
        assert (status["state"], status["samples"], status["error_rate"]) == (STATE_WARMING_UP, 19, 1.0)
        clock.now += 61  # the window has passed and it is still under min_samples: insufficient traffic
        guard.observe(result(Verdict.MATCH))  # the old samples have aged out; one fresh one remains
        assert guard.status("ratings")["state"] == STATE_INSUFFICIENT
        assert svc.state("ratings").mode is Mode.CANARY  # neither rolled back...
        assert await guard.promote_once() == []          # ...nor promoted blind
    finally:
        await guard.stop()


async def test_observe_ignores_what_is_not_the_candidates_fault_and_never_raises(services) -> None:
    svc = await services(make_config(extra=GUARDS))
    await svc.flip("ratings", "canary", 10, who="ops")
    guard = Guardrails(svc)
    guard.start()
    try:
        for _ in range(40):
            guard.observe(result(Verdict.LEGACY_ERROR))
            guard.observe(result(Verdict.SKIPPED))
            guard.observe(result(Verdict.CANDIDATE_ERROR, mode="shadow"))  # counted only in canary/extracted
            guard.observe(result(Verdict.CANDIDATE_ERROR, key="no-such-route"))
        guard.observe(None)  # type: ignore[arg-type]  # garbage in: logged, not raised
        await asyncio.sleep(0.05)
        assert svc.state("ratings").mode is Mode.CANARY
        assert guard.status("ratings")["samples"] == 0
    finally:
        await guard.stop()


async def test_progressive_promotion_steps_up_while_ready(services) -> None:
    svc = await services(make_config(extra=GUARDS, ratings_extra="    promotion: {steps: [10, 50], interval_s: 5}\n"))
    await svc.flip("ratings", "canary", 10, who="ops")
    clock = Clock()
    guard = Guardrails(svc, clock=clock)
    for _ in range(25):
        guard.observe(result(Verdict.MATCH))
    assert guard.status("ratings")["state"] == STATE_OK
    assert await guard.promote_once() == []  # the interval has not passed
    clock.now += 6
    assert await guard.promote_once() == ["ratings"]
    assert svc.state("ratings").percent == 50.0
    clock.now += 6
    assert await guard.promote_once() == []  # the last step is reached; extracting is a person's call
    [entry, *_] = await svc.audit(name="ratings")
    assert (entry.who, entry.kind, entry.details["samples"]) == ("promotion", "promotion", 25)


async def test_served_traffic_is_ok_for_the_error_rate_and_not_a_comparison(services) -> None:
    svc = await services(make_config(extra=GUARDS))
    await svc.flip("ratings", "canary", 90, who="ops")
    guard = Guardrails(svc)
    guard.start()
    try:
        for i in range(50):  # 45 served, 5 failed: 10 % errors over all the candidate handled
            guard.observe(result(Verdict.CANDIDATE_ERROR if i % 10 == 0 else Verdict.SERVED))
        await asyncio.sleep(0.05)
        status = guard.status("ratings")
        assert (status["state"], status["samples"], status["served"], status["error_rate"]) == (STATE_OK, 50, 45, 0.1)
        assert svc.state("ratings").mode is Mode.CANARY
        # Mismatches are judged over compared results only: 5 of 20 compared is
        # 25 % > 20 %, though only 10 % of a window diluted by 30 served ones.
        for i in range(50):
            guard.observe(result(Verdict.SERVED if i < 30 else Verdict.MISMATCH if i % 4 == 0 else Verdict.MATCH))
        await asyncio.sleep(0.05)
        assert svc.state("ratings").mode is Mode.SHADOW
        [entry, *_] = await svc.audit(name="ratings")
        assert entry.details["tripped"] == ["mismatch_rate"]
        assert (entry.details["compared"], entry.details["mismatches"], entry.details["mismatch_rate"]) == (20, 5, 0.25)
    finally:
        await guard.stop()


@dataclass(frozen=True)
class FailingTarget:
    """How a route reaches the candidate before its target starts failing."""

    flips: tuple[tuple[str, float | None], ...]  # what a person flips, in order
    rolled_back_to: str  # the mode before it entered canary/extracted
    ratings_extra: str = ""
    served_only: bool = False  # nothing mirrored: only SERVED / CANDIDATE_ERROR results
    clients_see_errors: bool = True


FAILING_TARGETS = {
    # Legacy serves 90 % (mirrored and compared), the target 10 %.
    "canary-10-mirrored": FailingTarget(flips=(("canary", 10),), rolled_back_to="shadow"),
    # The target serves everything and nothing compares; it fails, legacy answers as a fallback,
    # so no client notices -- and the guardrails still see the candidate's errors.
    "extracted-no-reverse-shadow": FailingTarget(
        flips=(("legacy", None), ("extracted", None)), rolled_back_to="legacy",
        ratings_extra="    fallback: true\n", served_only=True, clients_see_errors=False,
    ),
    # Canary at 100 % mirrors nothing either.
    "canary-100-unmirrored": FailingTarget(flips=(("canary", 100),), rolled_back_to="shadow", served_only=True),
}


@pytest.mark.parametrize("case", list(FAILING_TARGETS.values()), ids=list(FAILING_TARGETS))
async def test_a_candidate_that_starts_failing_under_load_is_rolled_back(
    case: FailingTarget, tmp_path: Path, upstreams, sqlite_url
) -> None:
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text(legacy_port=legacy.port, target_port=ratings.port, extra=GUARDS,
                                ratings_extra=case.ratings_extra))
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as s, \
            httpx.AsyncClient(timeout=5) as client:
        for mode, percent in case.flips:
            r = await client.post(f"{s.admin_url}/routes/ratings/flip", headers=AUTH,
                                  json={"mode": mode} | ({"percent": percent} if percent is not None else {}))
            assert r.status_code == 200, r.text
        active = Mode(case.flips[-1][0])
        statuses: list[int] = []

        async def burst(n: int) -> None:
            answers = await asyncio.gather(*(client.get(f"{s.url}/api/titles/tt{i}/ratings") for i in range(n)))
            statuses.extend(a.status_code for a in answers)
            await s.shadow.drain()
            await asyncio.sleep(0)  # results reach the listeners on the next loop iteration

        await burst(60)  # healthy: nothing happens
        assert s.runtime.table.get("ratings").mode is active
        status = s.guardrails.status("ratings")
        assert status["state"] == STATE_OK and status["errors"] == 0
        if case.served_only:  # the window is full of requests nothing compared
            assert status["served"] == status["samples"] >= 20

        ratings.failing = True
        deadline = time.monotonic() + 10
        while s.runtime.table.get("ratings").mode is active and time.monotonic() < deadline:
            await burst(8)
        assert s.runtime.table.get("ratings").mode.value == case.rolled_back_to
        # In canary only the keys in the canary (tt0..tt7 while failing) reach the target.
        reach_target = active is not Mode.CANARY or any(serves_target(f"tt{i}", case.flips[-1][1]) for i in range(8))
        assert any(code >= 500 for code in statuses) is (case.clients_see_errors and reach_target)

        [entry, *_] = (await client.get(f"{s.admin_url}/audit", headers=AUTH)).json()["entries"]
        assert (entry["who"], entry["kind"], entry["from"]["mode"], entry["to"]["mode"]) == (
            "guardrails", "rollback", active.value, case.rolled_back_to)
        figures = entry["details"]
        assert figures["tripped"] == ["error_rate"] and figures["samples"] >= 20
        assert figures["error_rate"] > 0.2 and "error rate" in entry["reason"]
        if case.served_only:  # healthy served requests still in the window diluted the errors
            assert figures["served"] > 0 and figures["compared"] == figures["errors"]
        metrics = (await client.get(f"{s.admin_url}/metrics", headers=AUTH)).text
        assert 'strangler_rollbacks_total{route="ratings"} 1.0' in metrics

        # Clients are answered by legacy again.
        statuses.clear()
        hits = ratings.hits
        await burst(8)
        assert statuses == [200] * 8
        if case.rolled_back_to == "legacy":
            assert ratings.hits == hits  # the failing candidate gets no traffic at all
        print(f"{active.value}: rolled back to {case.rolled_back_to} after {figures['samples']} samples "
              f"({figures['served']} served), error rate {figures['error_rate']:.0%}: {entry['reason']}")
