"""The cells' admin API and CLI against a whole running proxy (ProxyServer) with three cells whose
upstreams are real loopback servers: GET /cells (weights, key and traffic shares, health, per-cell
modes), GET /cells/which, flips of one cell through the API and `strangler flip --cell`, the
per-cell lines of `strangler routes` and `strangler audit --cell`."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from strangler_proxy.cli import cells_commands, proxy_commands
from strangler_proxy.config import Mode
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN, FakeUpstream

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NO_ENV = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None, "COLUMNS": "200"}
TENANTS = [f"tenant-{i}" for i in range(60)]

app = typer.Typer()
proxy_commands.register(app)
cells_commands.register(app)
runner = CliRunner()


def cells_config(ports: dict[str, int], *, health: bool = False) -> str:
    checks = ", health: {path: /healthz, interval_s: 0.1, timeout_s: 0.5, unhealthy_after: 1}" if health else ""
    listed = "".join(
        f'    - {{name: {c}, weight: {w}, upstreams: {{legacy: "http://127.0.0.1:{ports["legacy-" + c]}", '
        f'ratings: "http://127.0.0.1:{ports["ratings-" + c]}"}}}}\n'
        for c, w in (("c1", 2), ("c2", 1), ("c3", 1)))
    return f"""
proxy:
  admin_tokens: {{ops: "{ADMIN_TOKEN}"}}
  state_poll_interval_s: 0.1
upstreams:
  legacy: {{timeout_s: 2{checks}}}
  ratings: {{timeout_s: 2}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
  - {{name: cast, path: "/api/titles/{{id}}/cast", target: ratings}}
cells:
  partition_key: header:X-Tenant
  pins: {{acme: c2}}
  cells:
{listed}"""


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def servers(upstreams) -> dict[str, FakeUpstream]:  # type: ignore[no-untyped-def]
    return {f"{side}-{c}": await upstreams(f"{side}-{c}") for c in ("c1", "c2", "c3") for side in ("legacy", "ratings")}


def start(tmp_path: Path, sqlite_url: str, text: str) -> ProxyServer:
    path = tmp_path / "strangler.yaml"
    path.write_text(text)
    return ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False)


async def cli(*args: str) -> Any:
    """The CLI in a thread, so the admin server on this loop can answer it."""
    return await asyncio.to_thread(runner.invoke, app, list(args), env=NO_ENV)


async def _get(client: httpx.AsyncClient, server: ProxyServer, tenant: str) -> None:
    r = await client.get(f"{server.url}/api/titles/tt1/ratings", headers={"X-Tenant": tenant})
    assert r.status_code == 200, r.text


async def test_get_cells_shows_weights_shares_traffic_health_and_per_cell_modes(
        tmp_path: Path, servers, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ports = {name: s.port for name, s in servers.items()}
    async with start(tmp_path, sqlite_url, cells_config(ports)) as s, httpx.AsyncClient(timeout=5) as client:
        table = s.runtime.snapshot.cells
        assert table is not None
        for tenant in TENANTS:
            await _get(client, s, tenant)
        flip = await client.post(f"{s.admin_url}/routes/ratings/flip", headers=AUTH,
                                 json={"mode": "extracted", "cell": "c1", "reason": "c1 first"})
        assert flip.status_code == 200, flip.text
        assert (flip.json()["name"], flip.json()["source"]) == ("ratings@c1", "flip")

        body = (await client.get(f"{s.admin_url}/cells", headers=AUTH)).json()
        assert (body["enabled"], body["partition_key"], body["unkeyed"]) == (True, "header:X-Tenant", "refuse")
        cells = {c["name"]: c for c in body["cells"]}
        assert list(cells) == ["c1", "c2", "c3"]
        assert [cells[c]["weight"] for c in cells] == [2, 1, 1]
        assert abs(cells["c1"]["key_share"] - 0.5) < 0.03 and abs(cells["c3"]["key_share"] - 0.25) < 0.03
        assert cells["c2"]["pins"] == ["acme"]
        expected = {c: sum(1 for t in TENANTS if table.cell_of(t) == c) for c in cells}
        assert {c: cells[c]["traffic"]["requests"] for c in cells} == expected
        assert {c: cells[c]["traffic"]["share"] for c in cells} == {
            c: round(n / len(TENANTS), 6) for c, n in expected.items()}
        for c in cells.values():
            assert c["health"]["state"] == "healthy"
            assert [(u["name"], u["endpoints"], u["serving"]) for u in c["health"]["upstreams"]] == [
                (f"legacy@{c['name']}", 1, 1), (f"ratings@{c['name']}", 1, 1)]
        [override] = cells["c1"]["overrides"]
        assert (override["name"], override["mode"], override["source"], override["flipped_by"]) == (
            "ratings", "extracted", "cell", "ops")
        assert override["guardrails"]["state"] == "warming up"  # the window of (ratings, c1), just started
        assert next(m for m in cells["c2"]["modes"] if m["name"] == "ratings")["guardrails"] == {"state": "inactive"}
        assert cells["c1"]["following"] == ["cast"]
        assert cells["c2"]["overrides"] == [] and cells["c2"]["following"] == ["ratings", "cast"]
        shadow = next(m for m in cells["c2"]["modes"] if m["name"] == "ratings")
        assert (shadow["mode"], shadow["source"]) == ("shadow", "global")

        # Served per cell: c1's keys by c1's ratings service now, the others' by their monolith.
        before = {name: up.hits for name, up in servers.items()}
        for tenant in TENANTS[:20]:
            await _get(client, s, tenant)
        for tenant in TENANTS[:20]:
            cell = table.cell_of(tenant)
            assert servers[f"{'ratings' if cell == 'c1' else 'legacy'}-{cell}"].hits > before[
                f"{'ratings' if cell == 'c1' else 'legacy'}-{cell}"]

        # GET /routes carries each route's state per cell.
        routes = (await client.get(f"{s.admin_url}/routes", headers=AUTH)).json()
        per_cell = {e["cell"]: e for e in routes["cells"]["ratings"]}
        assert (per_cell["c1"]["mode"], per_cell["c1"]["source"]) == ("extracted", "cell")
        assert (per_cell["c3"]["mode"], per_cell["c3"]["source"]) == ("shadow", "global")


async def test_which_explains_pins_hashes_and_keyless_requests(tmp_path: Path, servers, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ports = {name: s.port for name, s in servers.items()}
    async with start(tmp_path, sqlite_url, cells_config(ports)) as s, httpx.AsyncClient(timeout=5) as client:
        table = s.runtime.snapshot.cells
        assert table is not None

        async def which(**params: str) -> httpx.Response:
            return await client.get(f"{s.admin_url}/cells/which", headers=AUTH, params=params)

        pinned = (await which(key="acme")).json()
        assert (pinned["cell"], pinned["pinned"], pinned["slot"], pinned["why"]) == ("c2", True, None, "pinned (cells.pins)")
        hashed = (await which(key="tenant-7")).json()
        assert hashed["cell"] == table.cell_of("tenant-7") and not hashed["pinned"]
        assert f"slot {hashed['slot']} of 16384" in hashed["why"]
        assert hashed["upstreams"] == [f"legacy@{hashed['cell']}", f"ratings@{hashed['cell']}"]
        keyless = (await which(key="")).json()
        assert keyless["cell"] is None and "refused" in keyless["why"]
        missing = await which()
        assert missing.status_code == 400 and "which?key=" in missing.json()["error"]["message"]


async def test_per_cell_flips_refuse_unknown_cells_and_bad_bodies(tmp_path: Path, servers, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ports = {name: s.port for name, s in servers.items()}
    async with start(tmp_path, sqlite_url, cells_config(ports)) as s, httpx.AsyncClient(timeout=5) as client:
        async def flip(name: str, **body: Any) -> httpx.Response:
            return await client.post(f"{s.admin_url}/routes/{name}/flip", headers=AUTH, json={"mode": "extracted", **body})

        unknown = await flip("ratings", cell="c9")
        assert unknown.status_code == 400
        assert unknown.json()["error"]["message"] == "no such cell 'c9' (cells: c1, c2, c3)"
        assert (await flip("ratings", cell=3)).status_code == 400
        twice = await flip("ratings@c1", cell="c2")
        assert twice.status_code == 400 and "already names a cell" in twice.json()["error"]["message"]
        assert (await flip("nope", cell="c1")).status_code == 404
        assert (await flip("ratings@c9")).status_code == 404
        # Nothing of that changed anything.
        assert s.runtime.snapshot.tables.by_cell == {}
        assert await s.flips.audit() == []
        # The scoped name in the path is the same flip as "cell" in the body.
        assert (await flip("ratings@c3")).status_code == 200
        assert s.runtime.snapshot.tables.for_cell("c3").get("ratings").mode is Mode.EXTRACTED
        assert [a.name for a in await s.flips.audit()] == ["ratings@c3"]


async def test_a_cell_whose_upstream_is_dead_shows_down(tmp_path: Path, servers, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ports = {name: s.port for name, s in servers.items()} | {"legacy-c3": dead_port()}
    async with start(tmp_path, sqlite_url, cells_config(ports, health=True)) as s, \
            httpx.AsyncClient(timeout=5) as client:
        table = s.runtime.snapshot.cells
        assert table is not None
        # A request per cell opens the pools (and their health checks).
        for cell in ("c1", "c2", "c3"):
            tenant = next(t for t in TENANTS if table.cell_of(t) == cell)
            await client.get(f"{s.url}/api/titles/tt1/ratings", headers={"X-Tenant": tenant})
        deadline = time.monotonic() + 5
        while True:
            cells = {c["name"]: c for c in (await client.get(f"{s.admin_url}/cells", headers=AUTH)).json()["cells"]}
            if cells["c3"]["health"]["state"] == "down" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert cells["c3"]["health"]["state"] == "down"
        assert [(u["upstream"], u["serving"]) for u in cells["c3"]["health"]["upstreams"]] == [
            ("legacy", 0), ("ratings", 1)]
        assert cells["c1"]["health"]["state"] == cells["c2"]["health"]["state"] == "healthy"


async def test_the_cli_shows_cells_explains_keys_and_flips_one_cell(tmp_path: Path, servers, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ports = {name: s.port for name, s in servers.items()}
    async with start(tmp_path, sqlite_url, cells_config(ports)) as s, httpx.AsyncClient(timeout=5) as client:
        where = ["--admin-url", s.admin_url, "--token", ADMIN_TOKEN]
        for tenant in TENANTS[:12]:
            await _get(client, s, tenant)

        r = await cli("flip", "ratings", "canary", "--percent", "10", "--cell", "c2", "--reason", "c2 canary", *where)
        assert r.exit_code == 0, r.output
        assert "ratings@c2" in r.output and "canary 10%" in r.output
        assert s.runtime.snapshot.tables.for_cell("c2").get("ratings").percent == 10.0
        assert s.runtime.snapshot.tables.for_cell("c1").get("ratings").mode is Mode.SHADOW

        r = await cli("flip", "ratings", "extracted", "--cell", "c9", *where)
        assert r.exit_code == 1 and "no such cell 'c9' (cells: c1, c2, c3)" in r.output

        r = await cli("cells", *where)
        assert r.exit_code == 0, r.output
        for word in ("c1", "c2", "c3", "header:X-Tenant", "50.3%", "healthy", "ratings: canary 10% (ops)",
                     "pins: acme", "2 follow the global mode", "1 follow the global mode"):
            assert word in r.output, (word, r.output)
        r = await cli("cells", "--json", *where)
        assert r.exit_code == 0 and [c["name"] for c in json.loads(r.output)["cells"]] == ["c1", "c2", "c3"]

        r = await cli("cells", "which", "acme", *where)
        assert r.exit_code == 0 and "key 'acme' -> cell c2: pinned (cells.pins)" in r.output
        r = await cli("cells", "which", "tenant-3", "--json", *where)
        assert json.loads(r.output)["cell"] == s.runtime.snapshot.cells.cell_of("tenant-3")  # type: ignore[union-attr]

        r = await cli("routes", *where)
        assert r.exit_code == 0, r.output
        assert "@c2" in r.output and "cell flip (ops)" in r.output and "@c1" not in r.output

        r = await cli("audit", "--route", "ratings", "--cell", "c2", "--json", *where)
        [entry] = json.loads(r.output)["entries"]
        assert (entry["name"], entry["reason"], entry["to"]["percent"]) == ("ratings@c2", "c2 canary", 10.0)
        r = await cli("audit", "--cell", "c2", *where)
        assert r.exit_code == 1 and "--cell needs --route" in r.output


async def test_without_cells_the_commands_say_so(tmp_path: Path, upstreams, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    from .conftest import config_text

    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    async with start(tmp_path, sqlite_url, config_text(legacy_port=legacy.port, target_port=ratings.port)) as s, \
            httpx.AsyncClient(timeout=5) as client:
        where = ["--admin-url", s.admin_url, "--token", ADMIN_TOKEN]
        body = (await client.get(f"{s.admin_url}/cells", headers=AUTH)).json()
        assert body == {"enabled": False, "message": "this config has no cells: section", "cells": []}
        assert (await client.get(f"{s.admin_url}/routes", headers=AUTH)).json()["cells"] is None
        for args in (["cells"], ["cells", "which", "t1"]):
            r = await cli(*args, *where)
            assert r.exit_code == 0 and "this config has no cells: section" in r.output, r.output
        r = await client.post(f"{s.admin_url}/routes/ratings/flip", headers=AUTH, json={"mode": "extracted", "cell": "c1"})
        assert r.status_code == 400 and "no cells: section" in r.json()["error"]["message"]
