"""Diff-gated rollback: a failing candidate is rolled back; too few samples never decide."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from strangler_proxy.config import Mode
from strangler_proxy.guardrails import STATE_INSUFFICIENT, STATE_OK, STATE_WARMING_UP, Guardrails
from strangler_proxy.result import ShadowResult, Verdict
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


async def test_a_candidate_that_starts_failing_under_load_is_rolled_back(tmp_path: Path, upstreams, sqlite_url) -> None:
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text(legacy_port=legacy.port, target_port=ratings.port, extra=GUARDS))
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as s, \
            httpx.AsyncClient(timeout=5) as client:
        r = await client.post(f"{s.admin_url}/routes/ratings/flip", headers=AUTH, json={"mode": "canary", "percent": 10})
        assert r.status_code == 200

        async def burst(n: int) -> None:
            await asyncio.gather(*(client.get(f"{s.url}/api/titles/tt{i}/ratings") for i in range(n)))
            await s.shadow.drain()

        await burst(60)  # healthy: every comparison matches, nothing happens
        assert s.runtime.table.get("ratings").mode is Mode.CANARY
        assert s.guardrails.status("ratings")["state"] == STATE_OK

        ratings.failing = True
        deadline = time.monotonic() + 10
        while s.runtime.table.get("ratings").mode is Mode.CANARY and time.monotonic() < deadline:
            await burst(8)
        route = s.runtime.table.get("ratings")
        assert route.mode is Mode.SHADOW  # the mode before it entered canary

        [entry, *_] = (await client.get(f"{s.admin_url}/audit", headers=AUTH)).json()["entries"]
        assert (entry["who"], entry["kind"], entry["from"]["mode"], entry["to"]["mode"]) == (
            "guardrails", "rollback", "canary", "shadow")
        figures = entry["details"]
        assert figures["tripped"] == ["error_rate"] and figures["samples"] >= 20
        assert figures["error_rate"] > 0.2 and "error rate" in entry["reason"]
        metrics = (await client.get(f"{s.admin_url}/metrics", headers=AUTH)).text
        assert 'strangler_rollbacks_total{route="ratings"} 1.0' in metrics
        print(f"rolled back after {figures['samples']} samples, error rate {figures['error_rate']:.0%}: "
              f"{entry['reason']}")
