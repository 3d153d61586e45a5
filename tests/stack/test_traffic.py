"""`strangler traffic`: the plan, the pacing and the counting, against a real
aiohttp app on loopback that answers like the catalogue and records what it got."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from aiohttp import web
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner

from legacy_monolith.traffic_plan import EXPECTED_STATUSES, Catalogue, Kind, TrafficPlan, discover_titles
from strangler_proxy.cli import traffic_commands
from strangler_proxy.stack.traffic import TrafficOptions, run_traffic
from tests.stack.loopback import serving

TITLES = 50


@dataclass
class Recorder:
    """What the fake catalogue received, and how it should misbehave."""

    seen: list[tuple[float, str, str, Any]] = field(default_factory=list)
    delay_s: float = 0.0
    fail_cast: bool = False  # /cast answers 500
    graphql_errors: bool = False
    votes: set[tuple[str, str]] = field(default_factory=set)


def catalogue_app(rec: Recorder) -> web.Application:
    """Answers every path of the mix the way the monolith does (shapes only)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        rec.seen.append((time.monotonic(), request.method, request.path_qs, body))
        if rec.delay_s:
            await asyncio.sleep(rec.delay_s)
        path = request.path
        if path == "/api/titles":
            return web.json_response({"items": [], "total": TITLES})
        if path.endswith("/cast") and rec.fail_cast:
            return web.json_response({"error": {"code": "internal", "message": "boom"}}, status=500)
        if request.method == "POST" and path.endswith("/ratings"):
            key = (path.split("/")[3], body["user_id"])
            created = key not in rec.votes
            rec.votes.add(key)
            return web.json_response({"average_rating": 7.0, "num_votes": 1}, status=201 if created else 200)
        if request.method == "DELETE":
            parts = path.split("/")
            key = (parts[3], parts[5])
            if key not in rec.votes:
                return web.json_response({"error": {"code": "not_found", "message": "no vote"}}, status=404)
            rec.votes.discard(key)
            return web.Response(status=204)
        if path == "/graphql":
            if rec.graphql_errors:
                return web.json_response({"data": None, "errors": [{"message": "nope"}]})
            return web.json_response({"data": {"title": {"id": body["variables"]["id"]}}})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    async with serving(catalogue_app(rec)) as url:
        yield rec, url


def _client(url: str, concurrency: int = 8, timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=concurrency))


def test_plan_is_deterministic_by_seed_and_follows_the_mix() -> None:
    catalogue = Catalogue.of(TITLES)
    first = TrafficPlan(7, catalogue).take(3000)
    assert first == TrafficPlan(7, catalogue).take(3000)
    assert first != TrafficPlan(8, catalogue).take(3000)

    kinds = Counter(r.kind for r in first)
    writes = kinds[Kind.VOTE] + kinds[Kind.RETRACT]
    assert 0.08 < writes / 3000 < 0.12 and 0.08 < kinds[Kind.GRAPHQL] / 3000 < 0.12
    assert 0 < kinds[Kind.RETRACT] < kinds[Kind.VOTE]
    assert all(kinds[k] > 0 for k in Kind)
    # Ids stay inside the catalogue; popular titles recur.
    titles = Counter(r.path.split("/")[3] for r in first if r.path.startswith("/api/titles/"))
    assert all("tt0000001" <= t <= f"tt{TITLES:07d}" for t in titles)
    assert titles["tt0000001"] > titles[f"tt{TITLES:07d}"]
    people = {r.path.split("/")[3] for r in first if r.kind is Kind.KNOWN_FOR}
    assert all("nm0000001" <= p <= f"nm{catalogue.people:07d}" for p in people)
    # Most retractions name a vote the plan cast before them.
    cast: set[tuple[str, str]] = set()
    known = 0
    for r in first:
        if r.kind is Kind.VOTE:
            assert r.json is not None and 1 <= r.json["value"] <= 10
            cast.add((r.path.split("/")[3], r.json["user_id"]))
        elif r.kind is Kind.RETRACT:
            parts = r.path.split("/")
            known += (parts[3], parts[5]) in cast
    assert known > kinds[Kind.RETRACT] / 2


def test_plan_refuses_impossible_shares() -> None:
    with pytest.raises(ValueError):
        TrafficPlan(1, Catalogue.of(10), graphql_share=0.6, vote_share=0.6)
    with pytest.raises(ValueError):
        TrafficOptions(rate=0)


async def test_open_loop_pacing_holds_the_rate_despite_slow_answers(served: tuple[Recorder, str]) -> None:
    rec, url = served
    rec.delay_s = 0.04  # a closed loop of one would manage 25/s at most
    options = TrafficOptions(rate=100, duration_s=1.5, concurrency=8)
    async with _client(url) as client:
        summary = await run_traffic(options, TrafficPlan(3, Catalogue.of(TITLES)), client)
    assert summary.sent == 150 and summary.errors == 0 and summary.dropped == 0
    assert 85 <= summary.achieved_rate <= 115
    arrivals = sorted(t for t, *_ in rec.seen)
    span = arrivals[-1] - arrivals[0]
    assert 1.3 <= span <= 1.75, span  # 149 gaps of 10 ms
    # Evenly spread: every third of the run got about a third of the requests.
    thirds = Counter(min(2, int(3 * (t - arrivals[0]) / span)) for t in arrivals)
    assert all(35 <= thirds[i] <= 65 for i in range(3)), thirds
    assert summary.latency_ms(50) is not None and summary.latency_ms(50) >= 40


async def test_same_seed_sends_the_same_requests(served: tuple[Recorder, str]) -> None:
    rec, url = served
    runs = []
    for _ in range(2):
        rec.seen.clear()
        rec.votes.clear()
        async with _client(url, concurrency=1) as client:
            summary = await run_traffic(
                # 100 requests, 20 ms apart: one at a time, a slow machine still sends them all on time
                TrafficOptions(rate=50, duration_s=2.0, concurrency=1), TrafficPlan(11, Catalogue.of(TITLES)), client
            )
        assert summary.errors == 0
        runs.append([(m, p, b) for _, m, p, b in rec.seen])
    assert runs[0] == runs[1] and len(runs[0]) == 100


async def test_expected_statuses_are_not_errors_but_failures_are(served: tuple[Recorder, str]) -> None:
    rec, url = served
    rec.fail_cast = True
    rec.graphql_errors = True
    plan = TrafficPlan(5, Catalogue.of(TITLES), vote_share=0.3, graphql_share=0.1)
    async with _client(url) as client:
        assert await discover_titles(client) == TITLES
        summary = await run_traffic(TrafficOptions(rate=400, duration_s=1.0), plan, client)
    statuses = summary.statuses()
    reasons = summary.error_reasons()
    kinds = summary.by_kind
    # Retractions of votes that do not exist answer 404: expected, not errors.
    assert statuses.get("404", 0) > 0 and kinds["retract"]["errors"] == 0
    assert kinds["vote"]["errors"] == 0 and kinds["vote"]["ok"] > 0
    # A 500 and a GraphQL answer with errors are errors, counted by reason.
    assert kinds["cast"]["errors"] == kinds["cast"]["requests"] > 0
    assert kinds["graphql"]["errors"] == kinds["graphql"]["requests"] > 0
    assert reasons["unexpected 500"] == kinds["cast"]["requests"]
    assert reasons["graphql: errors"] == kinds["graphql"]["requests"]
    assert summary.errors == kinds["cast"]["requests"] + kinds["graphql"]["requests"]
    assert summary.failed  # well above 1%
    assert EXPECTED_STATUSES[Kind.RETRACT] == {204, 404}


async def test_connection_failures_are_errors_and_the_run_stays_bounded() -> None:
    # A port that was just free: nothing listens there.
    server = TestServer(web.Application(), host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    await server.close()
    started = time.monotonic()
    async with _client(url) as client:
        summary = await run_traffic(TrafficOptions(rate=50, duration_s=1.0), TrafficPlan(1, Catalogue.of(9)), client)
    assert time.monotonic() - started < 3
    assert summary.sent == 50 and summary.errors == 50 and summary.ok == 0
    assert summary.statuses() == {"no answer": 50}
    assert set(summary.error_reasons()) == {"transport: ConnectError"}


async def test_stops_at_the_duration_when_answers_hang(served: tuple[Recorder, str]) -> None:
    rec, url = served
    rec.delay_s = 5.0
    started = time.monotonic()
    async with _client(url, concurrency=2, timeout=0.3) as client:
        summary = await run_traffic(
            TrafficOptions(rate=50, duration_s=0.6, concurrency=2, timeout_s=0.3),
            TrafficPlan(2, Catalogue.of(TITLES)),
            client,
        )
    took = time.monotonic() - started
    assert took < 0.6 + 0.3 + 0.5, took
    # Two slots, each request hangs until the 0.3 s timeout: only a few got out.
    assert 2 <= summary.sent <= 6 and summary.errors == summary.sent
    assert summary.dropped == 30 - summary.sent
    assert set(summary.error_reasons()) == {"timeout"}


# ------------------------------------------------------------------ the CLI
@pytest.fixture
def threaded_server() -> Iterator[tuple[Recorder, str]]:
    """The fake catalogue in its own thread and loop (the CLI runs asyncio.run itself)."""
    rec = Recorder()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(catalogue_app(rec), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield rec, f"http://127.0.0.1:{holder['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _cli() -> typer.Typer:
    app = typer.Typer()
    traffic_commands.register(app)
    return app


def test_cli_json_summary_and_exit_codes(threaded_server: tuple[Recorder, str]) -> None:
    rec, url = threaded_server
    runner = CliRunner()
    # 100 requests over 2 s: slack enough that a slow, shared machine sends them all on time.
    result = runner.invoke(_cli(), ["--url", url, "--rate", "50", "--duration", "2", "--seed", "4", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["sent"] == 100 and out["errors"] == 0 and out["failed"] is False
    assert sum(k["requests"] for k in out["kinds"].values()) == 100
    assert out["latency_ms"]["p50"] is not None and out["achieved_rate"] > 40
    assert len(rec.seen) == 101  # the catalogue size was asked first

    rec.fail_cast = True
    result = runner.invoke(_cli(), ["--url", url, "--rate", "200", "--duration", "0.5", "--titles", "5"])
    assert result.exit_code == 1, result.output
    assert "cast" in result.stdout and "errors" in result.stdout and "unexpected 500" in result.stdout


def test_cli_without_a_catalogue_says_what_to_do() -> None:
    result = CliRunner().invoke(_cli(), ["--url", "http://127.0.0.1:1", "--duration", "0.2"])
    assert result.exit_code == 2
    assert "--titles" in result.output and "strangler up" in result.output


def test_cli_without_a_traffic_plan_in_the_config_says_so(tmp_path: Path) -> None:
    config = tmp_path / "strangler.yaml"
    config.write_text("upstreams: {legacy: {url: 'http://127.0.0.1:8001'}}\n")
    result = CliRunner().invoke(_cli(), ["--url", "http://127.0.0.1:1", "--duration", "0.2", "--config", str(config)])
    assert result.exit_code == 2 and "names no traffic plan (stack.traffic" in result.output
