"""`strangler upstreams|failover|drain|undrain` (and `audit --upstream`) against a real proxy's
admin API on loopback, with a legacy upstream of two real endpoints in two zones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from strangler_proxy.cli import proxy_commands, upstream_commands
from strangler_proxy.routing.endpoints import UpstreamSwitch
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN
from .switch_stack import Endpoint, endpoints, eventually, zones_config  # noqa: F401 -- endpoints: a fixture

app = typer.Typer()
proxy_commands.register(app)
upstream_commands.register(app)
runner = CliRunner()
NO_ENV = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None, "COLUMNS": "200"}


async def cli(*args: str):  # type: ignore[no-untyped-def]
    """Invoke the CLI in a thread so the admin server on this loop can answer it."""
    return await asyncio.to_thread(runner.invoke, app, list(args), env=NO_ENV)


@pytest.fixture
async def proxy(tmp_path: Path, endpoints, sqlite_url):  # type: ignore[no-untyped-def]
    eu, us, ratings = await endpoints("eu"), await endpoints("us"), await endpoints("ratings")
    path = tmp_path / "strangler.yaml"
    path.write_text(zones_config(eu.port, us.port, ratings.port))
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server:
        yield server, eu, us, ["--admin-url", server.admin_url, "--token", ADMIN_TOKEN]


async def test_upstreams_failover_and_audit(proxy) -> None:  # type: ignore[no-untyped-def]
    server, eu, us, where = proxy
    r = await cli("upstreams", *where)
    assert r.exit_code == 0, r.output
    for text in ("legacy", "ratings", eu.url, us.url, "eu-west", "us-east", "healthy"):
        assert text in r.output

    r = await cli("failover", "legacy", "--to", "us-east", "--reason", "eu-west is down", *where)
    assert r.exit_code == 0, r.output
    assert "legacy: auto -> us-east by ops" in r.output
    assert server.runtime.switches == {"legacy": UpstreamSwitch(pinned_zone="us-east")}
    r = await cli("failover", "legacy", "--to", "us-east", *where)
    assert r.exit_code == 0 and "already us-east; nothing changed" in r.output

    r = await cli("upstreams", "--json", *where)
    legacy = next(u for u in json.loads(r.output)["upstreams"] if u["name"] == "legacy")
    assert legacy["pinned_zone"] == "us-east"
    r = await cli("upstreams", *where)
    assert "pinned: us-east" in r.output and "not in the pinned zone" in r.output

    r = await cli("failover", "legacy", "--auto", "--json", *where)
    assert r.exit_code == 0 and json.loads(r.output)["to"] == "auto"

    r = await cli("audit", "--upstream", "legacy", *where)
    assert r.exit_code == 0 and "failover" in r.output and "eu-west is down" in r.output
    r = await cli("audit", "--upstream", "legacy", "--json", *where)
    assert [e["to"]["mode"] for e in json.loads(r.output)["entries"]] == ["auto", "us-east"]


async def test_drain_waits_for_the_requests_in_flight(proxy) -> None:  # type: ignore[no-untyped-def]
    server, eu, us, where = proxy
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        await client.post(f"{server.admin_url}/upstreams/legacy/failover", json={"zone": "eu-west"},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        eu.hold = True
        slow = asyncio.create_task(client.get(f"{server.url}/api/titles/slow"))
        await eventually(lambda: eu.held == 1, what="a request held at eu-west")
        await client.post(f"{server.admin_url}/upstreams/legacy/failover", json={"auto": True},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

        # Without --wait: it says the endpoint is draining, and returns at once.
        r = await cli("drain", "legacy", "eu-west", "--reason", "kernel patch", *where)
        assert r.exit_code == 0, r.output
        assert f"legacy {eu.url}: draining, 1 request(s) in flight -- no new ones are sent" in r.output

        # --wait with a timeout that passes: exit 1, one line, the drain stays.
        r = await cli("drain", "legacy", "0", "--wait", "--timeout", "0.3", *where)
        assert r.exit_code == 1
        assert f"legacy {eu.url}: still 1 request(s) in flight after 0.3s; it stays drained" in r.output
        assert "Traceback" not in r.output

        # --wait until the request in flight finishes.
        waiting = asyncio.create_task(cli("drain", "legacy", eu.url, "--wait", "--json", *where))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        eu.release.set()
        assert (await slow).status_code == 200
        r = await waiting
        assert r.exit_code == 0, r.output
        body = json.loads(r.output)
        assert (body["drain"], body["in_flight"], body["changed"]) == ("drained", 0, False)
        assert body["waited_s"] > 0.3

    r = await cli("drain", "legacy", "1", *where)
    assert r.exit_code == 1 and "last endpoint" in r.output
    r = await cli("undrain", "legacy", "0", "--reason", "patched", *where)
    assert r.exit_code == 0 and f"legacy {eu.url}: back in service" in r.output
    assert server.runtime.switches == {}
    r = await cli("undrain", "legacy", "0", *where)
    assert r.exit_code == 0 and "was not drained; nothing changed" in r.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (("failover", "legacy"), 2, "give --to ZONE or --auto, one of them"),
    (("failover", "legacy", "--to", "eu-west", "--auto"), 2, "give --to ZONE or --auto, one of them"),
    (("failover", "legacy", "--to", "mars"), 1, "400: upstream 'legacy': no endpoint in zone 'mars'"),
    (("failover", "legasy", "--to", "eu-west"), 1, "404: legasy: no such upstream"),
    (("drain", "legacy", "eu"), 1, "400: upstream 'legacy': no endpoint 'eu'"),
    (("undrain", "nope", "0"), 1, "404: nope: no such upstream"),
])
async def test_failures_are_one_line_and_a_non_zero_exit(proxy, args, code, message) -> None:  # type: ignore[no-untyped-def]
    server, _, _, where = proxy
    r = await cli(*args, *where)
    assert r.exit_code == code, r.output
    assert message in r.output and "Traceback" not in r.output
    assert server.runtime.switches == {}


async def test_an_unreachable_proxy_is_one_line() -> None:
    r = await cli("upstreams", "--admin-url", "http://127.0.0.1:9", "--token", "x")
    assert r.exit_code == 1 and "cannot reach the admin API at http://127.0.0.1:9" in r.output
    r = await cli("drain", "legacy", "0", "--wait", "--admin-url", "http://127.0.0.1:9", "--token", "x")
    assert r.exit_code == 1 and "cannot reach the admin API" in r.output
