"""Two whole proxy replicas sharing one PostgreSQL: a failover or a drain made on one is in
force on the other within a second, and survives a restart of both."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from strangler_proxy.routing.endpoints import UpstreamSwitch
from strangler_proxy.server import ProxyServer

from .switch_stack import AUTH, Endpoint, endpoints, eventually, zones_config  # noqa: F401 -- endpoints: a fixture

PROPAGATION_LIMIT_S = 1.0

pytestmark = pytest.mark.postgres


async def test_failover_and_drain_reach_the_other_replica_within_a_second(
    tmp_path: Path, endpoints, pg_database  # type: ignore[no-untyped-def]
) -> None:
    url = await pg_database()
    eu: Endpoint = await endpoints("eu")
    us: Endpoint = await endpoints("us")
    ratings: Endpoint = await endpoints("ratings")
    path = tmp_path / "strangler.yaml"
    path.write_text(zones_config(eu.port, us.port, ratings.port, poll=0.5))  # the default poll interval

    def replica() -> ProxyServer:
        return ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False)

    async with replica() as a, replica() as b, httpx.AsyncClient(timeout=5) as client:
        assert b.switches.poll_interval_s == 0.5
        delays = []
        for actor, other, call, body, expected in (
            (a, b, "failover", {"zone": "us-east", "reason": "eu-west is down"}, UpstreamSwitch("us-east")),
            (b, a, "failover", {"auto": True}, None),
            (a, b, "drain", {"endpoint": "us-east"}, UpstreamSwitch(None, frozenset({us.url}))),
            (b, a, "undrain", {"endpoint": us.url}, None),
        ):
            started = time.monotonic()
            r = await client.post(f"{actor.admin_url}/upstreams/legacy/{call}", headers=AUTH, json=body)
            assert r.status_code == 200, r.text
            want = {"legacy": expected} if expected else {}
            await eventually(lambda o=other, w=want: o.runtime.switches == w, within_s=5, what=f"{call} on the other")
            delays.append(time.monotonic() - started)
            # The other replica's pools follow too (the endpoint board every pool reads).
            assert other.runtime.endpoints.switch("legacy") == (expected or UpstreamSwitch())
        assert max(delays) < PROPAGATION_LIMIT_S, delays
        print("propagation delays (s):", [round(d, 3) for d in delays])

        # Traffic through the other replica follows the pin.
        r = await client.post(f"{a.admin_url}/upstreams/legacy/failover", headers=AUTH, json={"zone": "us-east"})
        assert r.status_code == 200
        await eventually(lambda: b.runtime.switches == {"legacy": UpstreamSwitch("us-east")})
        before = eu.hits
        for i in range(10):
            assert (await client.get(f"{b.url}/api/titles/tt{i}")).status_code == 200
        assert eu.hits == before
        # The audit log, shared, says who did what on which replica's API.
        entries = (await client.get(f"{b.admin_url}/audit", headers=AUTH, params={"name": "upstream:legacy"})).json()
        assert [e["kind"] for e in entries["entries"]] == ["failover", "undrain", "drain", "failover", "failover"]

    async with replica() as c:
        assert c.runtime.switches == {"legacy": UpstreamSwitch("us-east")}
