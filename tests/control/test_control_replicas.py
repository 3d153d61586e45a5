"""Two whole proxy replicas sharing one PostgreSQL see each other's flips within a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from strangler_proxy.config import Mode
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN, config_text

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROPAGATION_LIMIT_S = 1.0

pytestmark = pytest.mark.postgres


async def _seen_after(server: ProxyServer, mode: Mode, started: float) -> float:
    while server.runtime.table.get("ratings").mode is not mode:
        if time.monotonic() - started > 5:
            raise AssertionError(f"replica never saw {mode.value}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_replicas_on_postgresql_see_each_others_flips_within_a_second(
    tmp_path: Path, upstreams, pg_database
) -> None:
    url = await pg_database()
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"
    # The default poll interval (0.5 s), not the fast one of the other tests.
    path.write_text(config_text(legacy_port=legacy.port, target_port=ratings.port).replace(
        "  state_poll_interval_s: 0.1\n", ""))
    async with ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False) as a, \
            ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False) as b, \
            httpx.AsyncClient(timeout=5) as client:
        assert a.flips.poll_interval_s == 0.5
        delays = []
        for flipper, other, mode, body in (
            (a, b, Mode.CANARY, {"mode": "canary", "percent": 20}),
            (b, a, Mode.EXTRACTED, {"mode": "extracted"}),
            (a, b, Mode.LEGACY, {"mode": "legacy"}),
        ):
            started = time.monotonic()
            r = await client.post(f"{flipper.admin_url}/routes/ratings/flip", headers=AUTH, json=body)
            assert r.status_code == 200, r.text
            delays.append(await _seen_after(other, mode, started))
        assert max(delays) < PROPAGATION_LIMIT_S, delays
        print("propagation delays (s):", [round(d, 3) for d in delays])

        # The other replica now serves by the flip too: extracted sends traffic to the target.
        await client.post(f"{a.admin_url}/routes/ratings/flip", headers=AUTH, json={"mode": "extracted"})
        await _seen_after(b, Mode.EXTRACTED, time.monotonic())
        before = ratings.hits
        assert (await client.get(f"{b.url}/api/titles/tt1/ratings")).status_code == 200
        assert ratings.hits == before + 1

        # Concurrent flips of one route on both replicas: both apply, in some order, and the
        # audit's "from" of the second is the first one's "to" (no lost update).
        results = await asyncio.gather(
            client.post(f"{a.admin_url}/routes/ratings/flip", headers=AUTH, json={"mode": "canary", "percent": 5}),
            client.post(f"{b.admin_url}/routes/ratings/flip", headers=AUTH, json={"mode": "shadow"}),
        )
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        second, first = (await a.flips.audit(limit=2))
        assert (second.from_mode, second.from_percent) == (first.to_mode, first.to_percent)
        await asyncio.sleep(PROPAGATION_LIMIT_S)
        assert a.runtime.table.get("ratings").mode is b.runtime.table.get("ratings").mode is Mode(second.to_mode)
