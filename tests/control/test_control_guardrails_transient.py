"""Guardrails never count a transient result (a mismatch gone when asked again): not as a
sample, not as a mismatch -- replication lag must not roll a canary back."""

from __future__ import annotations

import asyncio
import time

from strangler_proxy.config import Mode
from strangler_proxy.control.guardrails import Guardrails
from strangler_proxy.diff.result import ShadowResult, Verdict

from .conftest import make_config

GUARDS = "guardrails: {min_samples: 20, window: 500, window_s: 60, max_error_rate: 0.2, max_mismatch_rate: 0.2}\n"


def result(verdict: Verdict) -> ShadowResult:
    return ShadowResult(key="ratings", mode="canary", verdict=verdict, at=time.time())


async def test_transients_are_neither_samples_nor_mismatches(services) -> None:
    svc = await services(make_config(extra=GUARDS))
    await svc.flip("ratings", "canary", 10, who="ops")
    guard = Guardrails(svc)
    guard.start()
    try:
        for _ in range(30):
            guard.observe(result(Verdict.MATCH))
        for _ in range(200):  # a burst of reads racing writes: 87 % of what was compared, were it counted
            guard.observe(result(Verdict.TRANSIENT))
        guard.observe(result(Verdict.MISMATCH))
        await asyncio.sleep(0.05)
        assert svc.state("ratings").mode is Mode.CANARY
        status = guard.status("ratings")
        assert (status["samples"], status["compared"], status["mismatches"]) == (31, 31, 1)
        # The same figures as mismatches do roll it back: the test can tell the two apart.
        for _ in range(10):
            guard.observe(result(Verdict.MISMATCH))
        for _ in range(100):
            if svc.state("ratings").mode is not Mode.CANARY:
                break
            await asyncio.sleep(0.02)
        assert svc.state("ratings").mode is Mode.SHADOW
    finally:
        await guard.stop()
