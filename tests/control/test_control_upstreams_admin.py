"""The admin API's upstream calls on a whole running proxy (ProxyServer) with a legacy upstream
of two real loopback endpoints in two zones: what GET /upstreams shows, failover and drain
as traffic sees them, refusals in the API's error shape, restarts and reloads."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from strangler_proxy.routing.endpoints import UpstreamSwitch
from strangler_proxy.server import ProxyServer

from .switch_stack import AUTH, Endpoint, endpoints, eventually, zones_config  # noqa: F401 -- endpoints: a fixture

ERROR_ID = re.compile(r"^[0-9a-f]{12}$")


@pytest.fixture
async def stack(tmp_path: Path, endpoints, sqlite_url):  # type: ignore[no-untyped-def]
    eu, us, ratings = await endpoints("eu"), await endpoints("us"), await endpoints("ratings")
    path = tmp_path / "strangler.yaml"

    def write(**kwargs: object) -> None:
        path.write_text(zones_config(eu.port, us.port, ratings.port, **kwargs))  # type: ignore[arg-type]

    write()

    def server(**kwargs: object) -> ProxyServer:
        return ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False, **kwargs)  # type: ignore[arg-type]

    return {"eu": eu, "us": us, "path": path, "write": write, "server": server}


async def _gets(client: httpx.AsyncClient, server: ProxyServer, n: int) -> None:
    for i in range(n):
        r = await client.get(f"{server.url}/api/titles/tt{i}")  # no route: the legacy upstream serves
        assert r.status_code == 200, r.text


async def test_get_upstreams_shows_every_endpoint_with_what_its_pools_know(stack) -> None:  # type: ignore[no-untyped-def]
    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        await _gets(client, s, 20)
        r = await client.get(f"{s.admin_url}/upstreams", headers=AUTH)
        assert r.status_code == 200, r.text
        upstreams = {u["name"]: u for u in r.json()["upstreams"]}
        assert set(upstreams) == {"legacy", "ratings"}
        legacy = upstreams["legacy"]
        assert (legacy["pinned_zone"], legacy["zones"], legacy["switched_by"]) == (None, ["eu-west", "us-east"], None)
        eu, us = legacy["endpoints"]
        assert (eu["index"], eu["url"], eu["zone"], eu["priority"], eu["weight"]) == (
            0, stack["eu"].url, "eu-west", 0, 1)
        assert us["zone"] == "us-east" and us["index"] == 1
        for e in (eu, us):
            assert (e["drained"], e["drain"], e["excluded"], e["in_flight"]) == (False, None, None, 0)
            assert e["healthy"] is True and e["ejections"] == 0
        # The pools' own figures: both endpoints served, with latencies.
        assert eu["requests"] + us["requests"] == 20 and eu["requests"] and us["requests"]
        assert eu["p50_ms"] is not None and eu["p99_ms"] >= eu["p50_ms"]
        one = (await client.get(f"{s.admin_url}/upstreams/legacy", headers=AUTH)).json()
        assert [e["url"] for e in one["endpoints"]] == [stack["eu"].url, stack["us"].url]
        assert (await client.get(f"{s.admin_url}/upstreams", headers={})).status_code == 401
        r = await client.get(f"{s.admin_url}/upstreams/nope", headers=AUTH)
        assert r.status_code == 404 and "known: legacy, ratings" in r.json()["error"]["message"]


async def test_a_failover_sends_every_request_to_the_zone_and_survives_a_restart(stack) -> None:  # type: ignore[no-untyped-def]
    eu: Endpoint = stack["eu"]
    us: Endpoint = stack["us"]
    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        r = await client.post(f"{s.admin_url}/upstreams/legacy/failover", headers=AUTH,
                              json={"zone": "us-east", "reason": "eu-west is down"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["changed"], body["from"], body["to"], body["who"], body["pinned_zone"]) == (
            True, "auto", "us-east", "ops", "us-east")
        before = eu.hits
        await _gets(client, s, 20)
        assert eu.hits == before  # not one request to the other zone
        view = (await client.get(f"{s.admin_url}/upstreams/legacy", headers=AUTH)).json()
        assert view["pinned_zone"] == "us-east" and view["switched_by"] == "ops"
        assert [e["excluded"] for e in view["endpoints"]] == ["pinned to another zone", None]
        audit = (await client.get(f"{s.admin_url}/audit", headers=AUTH, params={"name": "upstream:legacy"})).json()
        [entry] = audit["entries"]
        assert (entry["kind"], entry["from"]["mode"], entry["to"]["mode"], entry["reason"]) == (
            "failover", "auto", "us-east", "eu-west is down")
        metrics = (await client.get(f"{s.admin_url}/metrics", headers=AUTH)).text
        assert 'strangler_failovers_total{upstream="legacy",zone="us-east"} 1.0' in metrics

    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        assert s.runtime.switches == {"legacy": UpstreamSwitch(pinned_zone="us-east")}
        before = eu.hits
        await _gets(client, s, 10)
        assert eu.hits == before  # pinned before the first request of the restarted proxy
        r = await client.post(f"{s.admin_url}/upstreams/legacy/failover", headers=AUTH,
                              json={"auto": True, "reason": "eu-west is back"})
        assert r.status_code == 200 and (r.json()["from"], r.json()["to"]) == ("us-east", "auto")
        await _gets(client, s, 30)
        assert eu.hits > before and us.hits > 0


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/upstreams/legacy/failover", {"zone": "mars"}, 400, "upstream 'legacy': no endpoint in zone 'mars' "
                                                           "(zones: eu-west, us-east)"),
    ("/upstreams/legasy/failover", {"zone": "eu-west"}, 404, "legasy: no such upstream"),
    ("/upstreams/legacy/failover", {"zone": "eu-west", "auto": True}, 400, 'give "zone" (pin to it) or "auto"'),
    ("/upstreams/legacy/failover", {"reason": "x"}, 400, 'give "zone" (pin to it) or "auto"'),
    ("/upstreams/legacy/failover", {"auto": "yes"}, 400, '"auto" must be true or false'),
    ("/upstreams/legacy/failover", {"zone": 7}, 400, '"zone" must be a zone name'),
    ("/upstreams/legacy/failover", {"zone": "eu-west", "reason": 5}, 400, '"reason" must be text'),
    ("/upstreams/legacy/failover", {"zone": "eu-west", "who": "mallory"}, 400,
     "unknown key 'who' in the body (allowed: zone, auto, reason)"),
    ("/upstreams/legacy/failover", [1], 400, "the body must be a JSON object"),
    ("/upstreams/legacy/drain", {"endpoint": "eu-west", "force": True}, 400,
     "unknown key 'force' in the body (allowed: endpoint, reason)"),
    ("/upstreams/legacy/drain", {}, 400, '"endpoint" must name one'),
    ("/upstreams/legacy/drain", {"endpoint": "http://127.0.0.1:1"}, 400, "no endpoint http://127.0.0.1:1"),
    ("/upstreams/ratings/drain", {"endpoint": 0}, 400, "is its last endpoint that is not drained"),
    ("/upstreams/nope/undrain", {"endpoint": "0"}, 404, "nope: no such upstream"),
])
async def test_refusals_name_why_and_change_nothing(stack, path, body, status, message) -> None:  # type: ignore[no-untyped-def]
    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        r = await client.post(f"{s.admin_url}{path}", headers=AUTH, json=body)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == ("not_found" if status == 404 else "bad_request")
        assert message in error["message"]
        assert s.runtime.switches == {} and await s.store.switches() == {} and await s.store.audit() == []
        r = await client.post(f"{s.admin_url}{path}", headers=AUTH, content=b"{not json")
        assert r.status_code == status and (status == 404 or "the body must be JSON like" in r.text)


async def test_a_failing_control_database_is_a_503_with_an_error_id(stack, caplog) -> None:  # type: ignore[no-untyped-def]
    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        async with s.store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE upstream_switch"))
        with caplog.at_level(logging.ERROR, logger="strangler.admin"):
            r = await client.post(f"{s.admin_url}/upstreams/legacy/drain", headers=AUTH, json={"endpoint": "0"})
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "store_unavailable" and ERROR_ID.match(error["error_id"])
        assert error["message"].startswith("legacy: the drain was not applied: the control database failed")
        assert "upstream_switch" not in r.text and "SQL" not in r.text
        assert s.runtime.switches == {}


async def test_a_drain_lets_requests_in_flight_finish_and_sends_no_new_ones(stack) -> None:  # type: ignore[no-untyped-def]
    eu: Endpoint = stack["eu"]
    us: Endpoint = stack["us"]
    async with stack["server"]() as s, httpx.AsyncClient(timeout=10) as client:
        # Two slow requests in flight, pinned to eu-west so they are certainly there.
        await client.post(f"{s.admin_url}/upstreams/legacy/failover", headers=AUTH, json={"zone": "eu-west"})
        eu.hold = True
        slow = [asyncio.create_task(client.get(f"{s.url}/api/titles/slow{i}")) for i in range(2)]
        await eventually(lambda: eu.held == 2, what="two requests held at eu-west")
        await client.post(f"{s.admin_url}/upstreams/legacy/failover", headers=AUTH, json={"auto": True})

        r = await client.post(f"{s.admin_url}/upstreams/legacy/drain", headers=AUTH,
                              json={"endpoint": "0", "reason": "kernel patch"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["endpoint"], body["zone"], body["changed"], body["in_flight"], body["drain"]) == (
            eu.url, "eu-west", True, 2, "draining")
        # New requests all go elsewhere while the old ones are still running.
        before = eu.hits
        await _gets(client, s, 20)
        assert eu.hits == before and us.hits >= 20
        view = (await client.get(f"{s.admin_url}/upstreams/legacy", headers=AUTH)).json()
        assert (view["endpoints"][0]["drain"], view["endpoints"][0]["in_flight"]) == ("draining", 2)
        # The requests in flight finish normally; then the endpoint is drained.
        eu.release.set()
        assert [(await t).status_code for t in slow] == [200, 200]
        view = (await client.get(f"{s.admin_url}/upstreams/legacy", headers=AUTH)).json()
        assert (view["endpoints"][0]["drain"], view["endpoints"][0]["in_flight"]) == ("drained", 0)
        assert view["endpoints"][0]["excluded"] == "drained"

        # The last endpoint is refused; undrain puts it back.
        r = await client.post(f"{s.admin_url}/upstreams/legacy/drain", headers=AUTH, json={"endpoint": "us-east"})
        assert r.status_code == 400 and "last endpoint" in r.json()["error"]["message"]
        r = await client.post(f"{s.admin_url}/upstreams/legacy/undrain", headers=AUTH,
                              json={"endpoint": eu.url, "reason": "patched"})
        assert r.status_code == 200 and r.json()["changed"] and r.json()["drain"] is None
        await _gets(client, s, 30)
        assert eu.hits > before
        kinds = [e["kind"] for e in (await client.get(f"{s.admin_url}/audit", headers=AUTH)).json()["entries"]]
        assert kinds == ["undrain", "drain", "failover", "failover"]
        metrics = (await client.get(f"{s.admin_url}/metrics", headers=AUTH)).text
        assert 'strangler_drains_total{action="drain",upstream="legacy"} 1.0' in metrics


async def test_a_reload_drops_switches_the_file_no_longer_allows_and_says_so(stack) -> None:  # type: ignore[no-untyped-def]
    eu: Endpoint = stack["eu"]
    async with stack["server"]() as s, httpx.AsyncClient(timeout=5) as client:
        await client.post(f"{s.admin_url}/upstreams/legacy/failover", headers=AUTH, json={"zone": "us-east"})
        # The new file has only the eu-west endpoint: the pin goes in the same step as the file.
        stack["write"](legacy=f'  legacy:\n    endpoints: [{{url: "{eu.url}", zone: eu-west}}]\n')
        r = await client.post(f"{s.admin_url}/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        [dropped] = r.json()["switches"]
        assert (dropped["name"], dropped["from"], dropped["to"]) == ("upstream:legacy", "us-east", "auto")
        assert "no endpoint in zone 'us-east'" in dropped["reason"]
        assert s.runtime.switches == {} and await s.store.switches() == {}
        await _gets(client, s, 5)
        [entry, _] = (await client.get(f"{s.admin_url}/audit", headers=AUTH)).json()["entries"]
        assert (entry["who"], entry["kind"]) == ("file", "file")
