"""Two whole proxy replicas sharing one PostgreSQL see each other's per-cell flips within a second,
and only in that cell."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from strangler_proxy.config import Mode
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROPAGATION_LIMIT_S = 1.0

pytestmark = pytest.mark.postgres


def config(ports: dict[str, int]) -> str:
    # The default poll interval (0.5 s): what a deployment runs.
    listed = "".join(f'    - {{name: {c}, upstreams: {{legacy: "http://127.0.0.1:{ports["legacy-" + c]}", '
                     f'ratings: "http://127.0.0.1:{ports["ratings-" + c]}"}}}}\n' for c in ("c1", "c2"))
    return f"""
proxy:
  admin_tokens: {{ops: "{ADMIN_TOKEN}"}}
upstreams: {{legacy: {{timeout_s: 2}}, ratings: {{timeout_s: 2}}}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
cells:
  partition_key: header:X-Tenant
  cells:
{listed}"""


def mode_in(server: ProxyServer, cell: str) -> tuple[Mode, float]:
    route = server.runtime.snapshot.tables.for_cell(cell).get("ratings")
    assert route is not None
    return route.mode, route.percent


async def _seen_after(server: ProxyServer, cell: str, want: tuple[Mode, float], started: float) -> float:
    while mode_in(server, cell) != want:
        if time.monotonic() - started > 5:
            raise AssertionError(f"replica never saw {want} in {cell}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_per_cell_flips_reach_the_other_replica_within_a_second_in_that_cell_only(
        tmp_path: Path, upstreams, pg_database) -> None:  # type: ignore[no-untyped-def]
    url = await pg_database()
    ports = {f"{side}-{c}": (await upstreams(f"{side}-{c}")).port for c in ("c1", "c2") for side in ("legacy", "ratings")}
    path = tmp_path / "strangler.yaml"
    path.write_text(config(ports))
    async with ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False) as a, \
            ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False) as b, \
            httpx.AsyncClient(timeout=5) as client:
        assert a.flips.poll_interval_s == 0.5
        delays = []
        for flipper, other, cell, body, want in (
            (a, b, "c1", {"mode": "extracted"}, (Mode.EXTRACTED, 0.0)),
            (b, a, "c2", {"mode": "canary", "percent": 30}, (Mode.CANARY, 30.0)),
            (a, b, "c1", {"mode": "shadow"}, (Mode.SHADOW, 0.0)),  # back to the global mode: the override goes
        ):
            untouched = "c2" if cell == "c1" else "c1"
            before = mode_in(other, untouched)
            started = time.monotonic()
            r = await client.post(f"{flipper.admin_url}/routes/ratings/flip", headers=AUTH,
                                  json={**body, "cell": cell, "reason": "one cell"})
            assert r.status_code == 200, r.text
            delays.append(await _seen_after(other, cell, want, started))
            assert mode_in(other, untouched) == before
            assert other.runtime.snapshot.table.get("ratings").mode is Mode.SHADOW  # the global mode stays
        assert max(delays) < PROPAGATION_LIMIT_S, delays
        print("per-cell propagation delays (s):", [round(d, 3) for d in delays])
        assert b.flips.stored("ratings@c1") is None and b.flips.stored("ratings@c2") is not None

        # Replica b serves c2's keys by the flip a never made itself: its own GET /cells says so.
        cells = {c["name"]: c for c in (await client.get(f"{a.admin_url}/cells", headers=AUTH)).json()["cells"]}
        [override] = cells["c2"]["overrides"]
        assert (override["mode"], override["percent"], override["source"]) == ("canary", 30.0, "cell")
        assert cells["c1"]["overrides"] == []
        audit = [(e.name, e.to_mode) for e in await b.flips.audit()]
        assert audit == [("ratings@c1", "shadow"), ("ratings@c2", "canary"), ("ratings@c1", "extracted")]
