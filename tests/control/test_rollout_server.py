"""Rollouts through whole proxies (ProxyServer) over 3 cells of loopback upstreams: one that
completes (across a restart), one that rolls back when wave 2's candidate mismatches, the
admin API's refusals and the CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from aiohttp import web
from typer.testing import CliRunner

from strangler_proxy.cli import rollout_commands
from strangler_proxy.config import Mode
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CELLS = ("c1", "c2", "c3")
DEADLINE_S = 30.0


@dataclass
class CellUpstreams:
    """One cell's monolith and ratings service; ``diverging``: the service answers differently."""

    name: str
    legacy_port: int = 0
    ratings_port: int = 0
    diverging: bool = False


async def cell_upstreams(catch_all: Callable[..., Awaitable[int]]) -> list[CellUpstreams]:
    cells = []
    for name in CELLS:
        cell = CellUpstreams(name)

        async def legacy(request: web.Request) -> web.Response:
            return web.json_response({"title": request.match_info["tail"], "rating": 7})

        def ratings(cell: CellUpstreams) -> Callable[[web.Request], Awaitable[web.Response]]:
            async def handle(request: web.Request) -> web.Response:
                return web.json_response({"title": request.match_info["tail"], "rating": 8 if cell.diverging else 7})

            return handle

        cell.legacy_port = await catch_all(legacy)
        cell.ratings_port = await catch_all(ratings(cell))
        cells.append(cell)
    return cells


def rollout_config(cells: list[CellUpstreams], *, min_samples: int = 20, guardrails: str = "{enabled: false}") -> str:
    listed = "".join(
        f'    - {{name: {c.name}, upstreams: {{legacy: "http://127.0.0.1:{c.legacy_port}", '
        f'ratings: "http://127.0.0.1:{c.ratings_port}"}}}}\n' for c in cells)
    # Tiny samples and one-second buckets keep each step to a second or two; the guardrails are
    # off so the rollout's own gate is what decides (their windows are tested elsewhere).
    return f"""
proxy:
  admin_tokens: {{ops: "{ADMIN_TOKEN}"}}
  state_poll_interval_s: 0.1
upstreams: {{legacy: {{timeout_s: 2}}, ratings: {{timeout_s: 2}}}}
store: {{bucket_s: 1, flush_interval_s: 0.1}}
readiness: {{min_samples: {min_samples}, max_mismatch_rate: 0.2, max_error_rate: 0.1, latency_factor: 1000}}
guardrails: {guardrails}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
cells:
  partition_key: header:X-Tenant
  cells:
{listed}"""


async def traffic(url: Callable[[], str], stop: asyncio.Event, *, limit: int = 20_000) -> int:
    """GETs with 60 tenants in turn (so every cell gets some) until ``stop`` or ``limit`` answered;
    returns how many were answered.

    Only answers count, and a round without one waits a little: while no proxy listens at
    ``url()`` (one stopped, or its successor not started yet, whose url is ``http://:0``) every
    request fails at once, and counting those spent the whole limit in a second or so of
    spinning -- the load then ended before a restarted proxy was up."""
    answered = n = 0
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set() and answered < limit:
            results = await asyncio.gather(*(client.get(f"{url()}/api/titles/tt{n + i}/ratings",
                                                        headers={"X-Tenant": f"tenant-{(n + i) % 60}"})
                                             for i in range(8)), return_exceptions=True)
            n += 8
            got = sum(isinstance(r, httpx.Response) for r in results)
            answered += got
            if not got:
                await asyncio.sleep(0.05)
    return answered


async def admin(client: httpx.AsyncClient, server: ProxyServer, method: str, path: str, **kwargs: Any
                ) -> httpx.Response:
    return await client.request(method, f"{server.admin_url}{path}", headers=AUTH, **kwargs)


async def wait_for_state(client: httpx.AsyncClient, server: ProxyServer, rollout_id: int, states: set[str],
                         timeout_s: float = DEADLINE_S) -> dict[str, Any]:
    started = time.monotonic()
    while True:
        body = (await admin(client, server, "GET", f"/rollouts/{rollout_id}")).json()
        if body["state"] in states:
            return body
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"rollout still {body['state']} after {timeout_s}s: {body['message']}")
        await asyncio.sleep(0.1)


def start_body(**over: Any) -> dict[str, Any]:
    return {"name": "ratings", "to": "extracted", "waves": "c1;rest", "steps": "50", "bake": "0.2s",
            "max_wait": "20s", "reason": "cut over cell by cell"} | over


@pytest.fixture
async def cells(catch_all) -> list[CellUpstreams]:  # type: ignore[no-untyped-def]
    return await cell_upstreams(catch_all)


@pytest.fixture
def config_path(tmp_path: Path, cells: list[CellUpstreams]) -> Path:
    path = tmp_path / "strangler.yaml"
    path.write_text(rollout_config(cells))
    return path


def audit_rows(entries: list[Any], who: str) -> list[tuple[str, str, str, str]]:
    """(name, kind, from, to) of ``who``'s audit rows, oldest first."""
    def text(mode: str, percent: float) -> str:
        return f"canary {percent:g}%" if mode == "canary" else mode

    return [(e.name, e.kind, text(e.from_mode, e.from_percent), text(e.to_mode, e.to_percent))
            for e in reversed(entries) if e.who == who]


async def test_a_healthy_rollout_completes_across_a_restart(config_path: Path, sqlite_url: str) -> None:
    stop = asyncio.Event()
    server = ProxyServer(config_path, port=0, admin_port=0, state_url=sqlite_url, watch=False)
    await server.start()
    load = asyncio.create_task(traffic(lambda: server.url, stop))
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await admin(client, server, "POST", "/rollouts", json=start_body())
            assert r.status_code == 201, r.text
            rollout_id = r.json()["id"]
            assert [s["status"] for s in r.json()["plan"]] == ["current", "pending", "pending", "pending"]
            # Mid-way (wave 1 done), the proxy restarts: the new one resumes from the persisted step.
            started = time.monotonic()
            while (await admin(client, server, "GET", f"/rollouts/{rollout_id}")).json()["step"]["index"] < 3:
                assert time.monotonic() - started < DEADLINE_S
                await asyncio.sleep(0.05)
            await server.stop()
            server = ProxyServer(config_path, port=0, admin_port=0, state_url=sqlite_url, watch=False)
            await server.start()
            body = await wait_for_state(client, server, rollout_id, {"completed", "rolled_back", "paused"})
            assert body["state"] == "completed", body["message"]
            assert "per-cell overrides cleared: c1, c2, c3" in body["message"]
    finally:
        stop.set()
        await load
    try:
        # The route itself is extracted now; no cell keeps an override of its own.
        assert server.flips.state("ratings") == server.flips.state("ratings@c2")
        assert server.runtime.table.get("ratings").mode is Mode.EXTRACTED
        assert not [n for n in server.flips.overrides() if n.startswith("ratings@")]
        entries = await server.flips.audit(limit=100)
        rows = audit_rows(entries, f"rollout:{rollout_id}")
        assert rows == [
            ("ratings@c1", "rollout", "shadow", "canary 50%"),
            ("ratings@c1", "rollout", "canary 50%", "extracted"),
            ("ratings@c2", "rollout", "shadow", "canary 50%"),
            ("ratings@c3", "rollout", "shadow", "canary 50%"),
            ("ratings@c2", "rollout", "canary 50%", "extracted"),
            ("ratings@c3", "rollout", "canary 50%", "extracted"),
            ("ratings", "rollout", "shadow", "extracted"),
            ("ratings@c1", "rollout", "extracted", "extracted"),  # overrides cleared: they follow the route
            ("ratings@c2", "rollout", "extracted", "extracted"),
            ("ratings@c3", "rollout", "extracted", "extracted"),
        ]
        step_rows = [e for e in entries if e.who == f"rollout:{rollout_id}" and e.details and "step" in e.details]
        assert all(e.details and e.details["rollout"] == rollout_id for e in step_rows)
        history = await server.rollouts.events(rollout_id)
        applied = [e.step for e in history if e.kind == "step-applied"]
        passed = [e.step for e in history if e.kind == "gate-passed"]
        assert applied == passed == [0, 1, 2, 3]  # each step applied and passed once, restart included
        assert [e.kind for e in history][-1] == "completed"
        gate = [e for e in history if e.kind == "gate-passed"][-1].details
        assert gate is not None and set(gate) == {"c2", "c3"}
        assert all(g["samples"] >= 20 and g["mismatches"] == 0 for g in gate.values())
    finally:
        await server.stop()


async def test_a_candidate_mismatching_in_wave_2_rolls_back_waves_2_and_1(
        config_path: Path, sqlite_url: str, cells: list[CellUpstreams]) -> None:
    cells[1].diverging = True  # c2's ratings service answers another rating
    stop = asyncio.Event()
    async with ProxyServer(config_path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server, \
            httpx.AsyncClient(timeout=5) as client:
        # c2 had an override of its own before (legacy): a rollback restores it, not the route's mode.
        await server.flips.flip("ratings@c2", "legacy", who="ops", reason="c2 stays on the monolith for now")
        load = asyncio.create_task(traffic(lambda: server.url, stop))
        try:
            r = await admin(client, server, "POST", "/rollouts", json=start_body(waves="c1;c2,c3"))
            assert r.status_code == 201, r.text
            rollout_id = r.json()["id"]
            body = await wait_for_state(client, server, rollout_id, {"completed", "rolled_back", "paused"})
        finally:
            stop.set()
            await load
        assert body["state"] == "rolled_back", body["message"]
        assert body["step"]["index"] == 3  # wave 2's first step (canary 50 %) failed
        assert "c2: mismatch rate" in body["message"]
        assert body["gate"]["c2"]["verdict"] == "fail" and body["gate"]["c3"]["verdict"] == "pass"

        entries = await server.flips.audit(limit=100)
        rows = audit_rows(entries, f"rollout:{rollout_id}")
        assert rows == [
            ("ratings@c1", "rollout", "shadow", "canary 50%"),
            ("ratings@c1", "rollout", "canary 50%", "extracted"),
            ("ratings@c2", "rollout", "legacy", "canary 50%"),
            ("ratings@c3", "rollout", "shadow", "canary 50%"),
            # reverse order: wave 2 (c3, then c2), then wave 1
            ("ratings@c3", "rollback", "canary 50%", "shadow"),
            ("ratings@c2", "rollback", "canary 50%", "legacy"),
            ("ratings@c1", "rollback", "extracted", "shadow"),
        ]
        rollback = next(e for e in entries if e.kind == "rollback" and e.name == "ratings@c2")
        assert rollback.details is not None and rollback.details["gate"]["c2"]["mismatches"] > 0
        assert "mismatch rate" in rollback.reason
        # Every cell is where it was: c1 and c3 follow the route again; c2 keeps its own override.
        assert {n: s.text() for n, s in server.flips.overrides().items() if n.startswith("ratings")} == {
            "ratings@c2": "legacy"}
        assert server.flips.state("ratings") == server.flips.state("ratings@c1") == server.flips.state("ratings@c3")
        history = [e.kind for e in await server.rollouts.events(rollout_id)]
        assert history.count("gate-failed") == 1 and history[-1] == "rolled_back"

        # The route is free for another rollout now.
        again = await admin(client, server, "POST", "/rollouts", json=start_body(waves="c1", bake="1h"))
        assert again.status_code == 201, again.text


async def test_the_admin_api_refuses_bad_rollouts_and_pauses_resumes_aborts(config_path: Path,
                                                                            sqlite_url: str) -> None:
    async with ProxyServer(config_path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server, \
            httpx.AsyncClient(timeout=5) as client:
        for body, status, says in (
            (start_body(waves="c1;c9"), 400, "no such cell 'c9'"),
            (start_body(waves="c1;c1,c2"), 400, "is in wave 1 and wave 2"),
            (start_body(waves="c1;;c2"), 400, "wave 2 is empty"),
            (start_body(name="nope"), 400, "nope: no such route or field"),
            (start_body(to="shadow"), 400, "'extracted' or 'canary:P'"),
            (start_body(bake="soon"), 400, "'soon' is not a duration"),
            (start_body(steps="50,10"), 400, "must increase"),
            (start_body(on_failure="retry"), 400, "rollback or pause"),
            (start_body(colour="blue"), 400, "unknown key 'colour'"),
            ({"to": "extracted"}, 400, '"name"'),
        ):
            r = await admin(client, server, "POST", "/rollouts", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (status, "bad_request"), r.text
            assert says in r.json()["error"]["message"], r.text
        assert (await admin(client, server, "GET", "/rollouts")).json() == {"rollouts": []}

        # No traffic at all: the step waits for samples, never passes.
        r = await admin(client, server, "POST", "/rollouts", json=start_body(bake="0s", max_wait="1h"))
        rollout_id = r.json()["id"]
        second = await admin(client, server, "POST", "/rollouts", json=start_body())
        assert second.status_code == 409 and f"#{rollout_id} is still active" in second.text
        started = time.monotonic()
        while "0/20 samples" not in (body := (await admin(client, server, "GET", f"/rollouts/{rollout_id}")).json()
                                     )["message"]:
            assert time.monotonic() - started < 10, body["message"]
            await asyncio.sleep(0.05)
        assert body["state"] == "running" and body["step"]["index"] == 1
        assert server.flips.state("ratings@c1").text() == "canary 50%"

        r = await admin(client, server, "POST", f"/rollouts/{rollout_id}/pause", json={"reason": "lunch"})
        assert r.json()["state"] == "paused" and "paused by ops: lunch" in r.json()["message"]
        assert (await admin(client, server, "POST", f"/rollouts/{rollout_id}/pause")).json()["state"] == "paused"
        r = await admin(client, server, "POST", f"/rollouts/{rollout_id}/resume")
        assert r.json()["state"] == "running"
        r = await admin(client, server, "POST", f"/rollouts/{rollout_id}/abort", json={"reason": "not today"})
        assert r.json()["state"] == "rolling_back"
        body = await wait_for_state(client, server, rollout_id, {"aborted"})
        assert server.flips.state("ratings@c1").text() == "shadow" and not server.flips.overrides()
        kinds = [e["kind"] for e in body["history"]]
        assert kinds[0] == "started" and {"paused", "resumed", "aborted"} <= set(kinds)
        assert (await admin(client, server, "POST", f"/rollouts/{rollout_id}/resume")).status_code == 409
        assert (await admin(client, server, "GET", "/rollouts/999")).status_code == 404
        assert (await admin(client, server, "POST", "/rollouts/999/abort")).status_code == 404
        assert (await client.get(f"{server.admin_url}/rollouts")).status_code == 401


async def test_a_rollout_that_gets_too_little_traffic_pauses_and_says_why(config_path: Path,
                                                                          sqlite_url: str) -> None:
    async with ProxyServer(config_path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server, \
            httpx.AsyncClient(timeout=5) as client:
        r = await admin(client, server, "POST", "/rollouts", json=start_body(bake="0.1s", max_wait="0.5s"))
        body = await wait_for_state(client, server, r.json()["id"], {"paused"}, timeout_s=10)
        assert "without a decision" in body["message"] and "c1: 0/20 samples" in body["message"]
        assert server.flips.state("ratings@c1").text() == "canary 50%"  # paused: left as it is


app = typer.Typer()
rollout_commands.register(app)
runner = CliRunner()


async def cli(*args: str) -> Any:
    """The CLI in a thread, so the admin API on this loop can answer it."""
    env = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def test_the_cli_starts_shows_pauses_and_aborts(config_path: Path, sqlite_url: str) -> None:
    async with ProxyServer(config_path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server:
        where = ["--admin-url", server.admin_url, "--token", ADMIN_TOKEN]
        r = await cli("rollout", "status", *where)
        assert r.exit_code == 0 and "no rollout yet" in r.output, r.output
        r = await cli("rollout", "start", "ratings", "--to", "canary:50", "--waves", "c3;rest", "--steps", "10",
                      "--bake", "1h", "--reason", "try it", *where)
        assert r.exit_code == 0, r.output
        assert "rollout #1 started" in r.output and "canary 10%" in r.output
        r = await cli("rollout", "start", "ratings", "--to", "extracted", "--waves", "c3;c3", *where)
        assert r.exit_code == 1 and "cell 'c3' is in wave 1 and wave 2" in r.output
        r = await cli("rollout", "status", *where)
        assert r.exit_code == 0 and "active rollouts" in r.output and "#1" in r.output
        r = await cli("rollout", "pause", "1", "--reason", "wait", *where)
        assert r.exit_code == 0 and "paused" in r.output
        r = await cli("rollout", "status", "1", *where)
        assert r.exit_code == 0 and "history" in r.output and "started" in r.output
        r = await cli("rollout", "abort", "1", *where)
        assert r.exit_code == 0 and "rolling_back" in r.output
        r = await cli("rollout", "status", "1", "--json", *where)
        assert r.exit_code == 0 and '"name": "ratings"' in r.output
        r = await cli("rollout", "resume", "7", *where)
        assert r.exit_code == 1 and "no rollout #7" in r.output


async def test_a_reload_that_removes_a_cell_pauses_the_rollout_and_abort_restores_the_rest(
        config_path: Path, sqlite_url: str, cells: list[CellUpstreams]) -> None:
    async with ProxyServer(config_path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server, \
            httpx.AsyncClient(timeout=5) as client:
        r = await admin(client, server, "POST", "/rollouts", json=start_body(waves="c1;c2,c3", bake="1h"))
        rollout_id = r.json()["id"]
        started = time.monotonic()
        while server.flips.state("ratings@c1").text() != "canary 50%":
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.05)
        config_path.write_text(rollout_config(cells[:2]))
        assert (await admin(client, server, "POST", "/reload")).status_code == 200
        body = await wait_for_state(client, server, rollout_id, {"paused"}, timeout_s=10)
        assert "cell c3 was removed from the file" in body["message"]
        await admin(client, server, "POST", f"/rollouts/{rollout_id}/abort")
        body = await wait_for_state(client, server, rollout_id, {"aborted"}, timeout_s=10)
        assert server.flips.state("ratings@c1").text() == "shadow" and not server.flips.overrides()


async def test_a_cell_the_guardrails_roll_back_fails_the_step_and_the_rollout_rolls_back_the_rest(
        tmp_path: Path, sqlite_url: str, cells: list[CellUpstreams]) -> None:
    # The rollout's own gate wants far more samples than the guardrails' window: the guardrails act first.
    path = tmp_path / "guarded.yaml"
    path.write_text(rollout_config(cells, min_samples=100_000,
                                   guardrails="{min_samples: 10, window_s: 30, max_mismatch_rate: 0.1}"))
    cells[2].diverging = True
    stop = asyncio.Event()
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server, \
            httpx.AsyncClient(timeout=5) as client:
        load = asyncio.create_task(traffic(lambda: server.url, stop))
        try:
            r = await admin(client, server, "POST", "/rollouts", json=start_body(waves="c1,c3", to="canary:50", steps="",
                                                                                 bake="0s"))
            body = await wait_for_state(client, server, r.json()["id"], {"rolled_back", "paused"})
        finally:
            stop.set()
            await load
        assert body["state"] == "rolled_back", body["message"]
        # The gate saw the guardrails rolling c3 back, or c3 already rolled back by them.
        assert ("c3: changed meanwhile by guardrails (now shadow)" in body["message"]
                or "c3: the guardrails are rolling it back" in body["message"]), body["message"]
        entries = await server.flips.audit(limit=50)
        rollout_rows = audit_rows(entries, f"rollout:{r.json()['id']}")
        # c3 went back once (by whichever of the two got there first), and c1 after it.
        c3_back = audit_rows(entries, "guardrails") + [row for row in rollout_rows if row[0] == "ratings@c3"
                                                        and row[1] == "rollback"]
        assert c3_back == [("ratings@c3", "rollback", "canary 50%", "shadow")]
        assert rollout_rows[-1] == ("ratings@c1", "rollback", "canary 50%", "shadow")
        assert not server.flips.overrides()
