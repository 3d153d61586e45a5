"""Migration progress: who served what, from a real results store written by the real
ResultWriter, with the mode history from a real audit log; `strangler progress` with and
without a running proxy; the progress section of the report's JSON and HTML."""

from __future__ import annotations

import asyncio
import datetime as dt
import doctest
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import typer
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from strangler_proxy import migrate
from strangler_proxy.cli import progress_commands, report_commands
from strangler_proxy.config import Mode, StoreSettings, load_config
from strangler_proxy.control.state_store import FlipAuditRow, RouteStateRow
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.report import progress as progress_module
from strangler_proxy.report import progress_render
from strangler_proxy.report.progress import KeyState, ModeHistory, Served, Switch, served_by_extracted
from strangler_proxy.report.progress_load import load_progress
from strangler_proxy.server import ProxyServer
from strangler_proxy.store import ResultsReader, ResultWriter
from strangler_proxy.store.counts import VerdictCounts
from tests.store.factory import result, served

T0 = 1_700_000_040.0  # a multiple of the 60 s bucket: each phase below is whole buckets
PHASE_S = 600
NOW = T0 + 3 * PHASE_S - 1  # the axis ends with the third phase: three points of one phase each

YAML = """
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy_port}"}}
  ratings: {{url: "http://127.0.0.1:{target_port}"}}
  credits: {{url: "http://127.0.0.1:{target_port}"}}
proxy: {{admin_tokens: {{ops: ops-token}}, admin: {{port: 9}}}}
store: {{url: "{url}", flush_interval_s: 0.05}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: {ratings_mode}}}
  - {{name: cast, path: "/api/titles/{{id}}/cast", target: credits, mode: shadow, sample_rate: 0.5}}
  - {{name: known-for, path: "/api/people/{{id}}/known-for", target: credits, mode: canary, percent: 50,
     sample_rate: 0.5}}
  - {{name: images, path: "/api/titles/{{id}}/images", target: credits}}
graphql:
  backends: {{legacy: {{upstream: legacy}}, ratings: {{upstream: ratings}}}}
  fields:
    Title.rating: {{target: ratings, mode: extracted, reverse_shadow: true}}
"""


def yaml_text(url: str, *, ratings_mode: str = "shadow", legacy_port: int = 9, target_port: int = 9) -> str:
    return YAML.format(url=url, ratings_mode=ratings_mode, legacy_port=legacy_port, target_port=target_port)


def test_the_examples_hold() -> None:
    for module in (progress_module, progress_render):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, module.__name__


# ------------------------------------------------------------------ the arithmetic


@pytest.mark.parametrize(("counts", "mode", "field", "rate", "expected"), [
    # shadow: the monolith served everything recorded; a skipped request too
    (VerdictCounts(match=8, mismatch=1, legacy_error=1, skipped=2), Mode.SHADOW, False, 1.0, (0, 12)),
    # canary: served is the target's share; a candidate error is a request, never served
    (VerdictCounts(match=70, served=25, candidate_error=5), Mode.CANARY, False, 1.0, (25, 100)),
    # a sampled mirror stands for 1 / sample_rate requests; served records are never sampled
    (VerdictCounts(match=30, served=60), Mode.CANARY, False, 0.5, (60, 120)),
    (VerdictCounts(match=30, served=60), Mode.CANARY, False, 0.0, (60, 90)),
    # extracted REST: reverse-shadow comparisons were served by the target; a skip repeats a served record
    (VerdictCounts(match=90, mismatch=5, legacy_error=1, served=4, skipped=3, candidate_error=2),
     Mode.EXTRACTED, False, 1.0, (100, 102)),
    # extracted field: each request has a served record; comparisons (per entity) repeat them
    (VerdictCounts(match=40, mismatch=3, served=40, candidate_error=2), Mode.EXTRACTED, True, 1.0, (40, 42)),
    # a field in canary: served per request, the monolith's side per compared entity
    (VerdictCounts(match=30, served=10), Mode.CANARY, True, 1.0, (10, 40)),
])
def test_who_served_the_recorded_requests(counts, mode, field, rate, expected) -> None:  # type: ignore[no-untyped-def]
    got = served_by_extracted(counts, mode, field=field, sample_rate=rate)
    assert (got.extracted, got.requests) == expected


def test_the_mode_at_a_time_follows_the_audit_log() -> None:
    h = ModeHistory([Switch(200.0, Mode.CANARY, Mode.EXTRACTED), Switch(100.0, Mode.SHADOW, Mode.CANARY)],
                    now=Mode.EXTRACTED)
    assert [h.at(t) for t in (0, 99.9, 100.0, 150, 200.0, 10_000)] == [
        Mode.SHADOW, Mode.SHADOW, Mode.CANARY, Mode.CANARY, Mode.EXTRACTED, Mode.EXTRACTED]
    assert ModeHistory([], now=Mode.LEGACY).at(5) is Mode.LEGACY
    assert Served(1, 4).share == 0.25 and Served().share is None


# ------------------------------------------------------------------ a real store


async def _write(url: str) -> None:
    """Three phases of ten minutes; see the module-level numbers in the tests."""
    engine = make_engine(url)
    writer = ResultWriter(engine, StoreSettings())
    a, b, c = T0, T0 + PHASE_S, T0 + 2 * PHASE_S
    for i in range(100):  # ratings: shadow, then canary 25 %, then extracted with reverse shadow
        writer.observe(result("ratings", Verdict.MATCH, a + i * 6))
        writer.observe(served("ratings", b + i * 6, mode="canary") if i % 4 == 0
                       else result("ratings", Verdict.MATCH, b + i * 6))
        writer.observe(served("ratings", c + i * 6, status=503) if i < 2 else result("ratings", Verdict.MATCH, c + i * 6))
    for i in range(60):  # cast: shadow, half the requests mirrored (10 of them too large)
        writer.observe(result("cast", Verdict.SKIPPED if i < 10 else Verdict.MATCH, a + i * 30))
    for i in range(90):  # known-for: canary 50 %, half the legacy share mirrored
        writer.observe(served("known-for", a + i * 20, mode="canary") if i < 60 else result("known-for", Verdict.MATCH, a + i * 20))
    for i in range(40):  # Title.rating: extracted with reverse shadow
        writer.observe(served("graphql:Title.rating", c + i * 10))
        writer.observe(result("graphql:Title.rating", Verdict.MATCH, c + i * 10))
    writer.observe(served("graphql:Title.rating", c + 500, status=500))
    writer.observe(served("graphql:Title.rating", c + 510, status=500))
    await writer.flush()
    await engine.dispose()


async def _audit(url: str) -> None:
    """ratings was flipped shadow -> canary 25 -> extracted by ops; the flip is in force."""
    engine = make_engine(url)
    async with async_sessionmaker(engine).begin() as session:
        for at, frm, to, pct in ((T0 + PHASE_S, "shadow", "canary", 25.0), (T0 + 2 * PHASE_S, "canary", "extracted", 0.0)):
            session.add(FlipAuditRow(at=dt.datetime.fromtimestamp(at, dt.UTC), name="ratings", who="ops", kind="flip",
                                     from_mode=frm, from_percent=0.0, to_mode=to, to_percent=pct, reason=""))
        session.add(RouteStateRow(name="ratings", mode="extracted", percent=0.0, file_mode="shadow", file_percent=0.0,
                                  version=2, updated_by="ops"))
    await engine.dispose()


@dataclass(frozen=True)
class Control:
    url: str
    config_path: Path


async def _store(tmp_path: Path, name: str, *, control_tables: bool) -> Control:
    url = f"sqlite+aiosqlite:///{tmp_path / (name + '.sqlite3')}"
    await migrate.upgrade(migrate.RESULTS, url)
    if control_tables:
        await migrate.upgrade(migrate.CONTROL, url)
    await _write(url)
    if control_tables:
        await _audit(url)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml_text(url))
    return Control(url, path)


@pytest.fixture
async def control(tmp_path: Path) -> Control:
    return await _store(tmp_path, "control", control_tables=True)


async def _progress(c: Control, **kwargs):  # type: ignore[no-untyped-def]
    engine = make_engine(c.url)
    try:
        return await load_progress(engine, load_config(c.config_path), now=NOW, points=3, **kwargs)
    finally:
        await engine.dispose()


async def test_progress_over_time_follows_each_keys_mode_history(control: Control) -> None:
    p = await _progress(control)
    keys = {k.key: k for k in p.keys}
    assert list(keys) == ["cast", "images", "known-for", "ratings", "graphql:Title.rating"]
    ratings = keys["ratings"]
    assert ratings.state == KeyState(Mode.EXTRACTED, 0.0, "flip")  # the stored flip, the file says shadow
    # 0 of 100 in shadow, 25 of 100 in canary, 98 of 100 extracted (2 candidate errors)
    assert [(x.served.extracted, x.served.requests) for x in ratings.points] == [(0, 100), (25, 100), (98, 100)]
    assert (ratings.served.extracted, ratings.served.requests, ratings.latest) == (123, 300, 0.98)
    assert (keys["cast"].served.extracted, keys["cast"].served.requests) == (0, 120)  # 60 recorded at rate 0.5
    assert (keys["known-for"].served.extracted, keys["known-for"].served.requests) == (60, 120)
    assert (keys["graphql:Title.rating"].served.extracted, keys["graphql:Title.rating"].served.requests) == (40, 42)
    images = keys["images"]
    assert images.state == KeyState(Mode.LEGACY, 0.0, "file") and images.served.share is None
    assert images.readiness.status == "insufficient-samples"
    assert (p.served.extracted, p.served.requests) == (223, 582)
    assert [x.start for x in p.points] == [T0, T0 + PHASE_S, T0 + 2 * PHASE_S] and p.end == T0 + 3 * PHASE_S
    assert p.modes_from == "control-database" and p.live is None


async def test_without_an_audit_log_every_key_is_taken_to_have_had_its_mode_now(tmp_path: Path) -> None:
    bare = await _store(tmp_path, "results-only", control_tables=False)
    p = await _progress(bare)
    ratings = next(k for k in p.keys if k.key == "ratings")
    # No flips, no history: the file's shadow all along, so only served records count.
    assert ratings.state == KeyState(Mode.SHADOW, 0.0, "file")
    assert (ratings.served.extracted, ratings.served.requests) == (25, 300)
    assert p.modes_from == "file" and "no audit log" in p.modes_note


async def test_since_reads_only_the_newer_buckets(control: Control) -> None:
    p = await _progress(control, since=T0 + 2 * PHASE_S + 30)  # inside the third phase's first bucket
    ratings = next(k for k in p.keys if k.key == "ratings")
    assert (ratings.served.extracted, ratings.served.requests) == (98, 100)
    assert p.start == T0 + 2 * PHASE_S


# ------------------------------------------------------------------ the CLI and the report

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    progress_commands.register(app)
    report_commands.register(app)

    @app.callback()
    def _root() -> None:  # keeps the commands subcommands, as in the real CLI
        pass

    return app


NO_ENV = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None}


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(_app(), list(args), env=NO_ENV)


def test_cli_without_a_proxy_says_where_the_modes_come_from(control: Control) -> None:
    out = run("progress", "--config", str(control.config_path), "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["schema"] == "strangler.progress/v1" and doc["modes_from"] == "control-database"
    assert "cannot reach the admin API at http://127.0.0.1:9" in doc["modes_note"] and doc["live"] is None
    assert doc["overall"] == {"share": round(223 / 582, 6), "extracted": 223, "requests": 582}
    ratings = next(k for k in doc["keys"] if k["key"] == "ratings")
    assert (ratings["mode"], ratings["source"], ratings["served"]["share"]) == ("extracted", "flip", 0.41)
    assert next(k for k in doc["keys"] if k["key"] == "cast")["sample_rate"] == 0.5

    text = run("progress", "--config", str(control.config_path))
    assert text.exit_code == 0, text.output
    assert "Off the monolith: 38.3% of 582 recorded requests" in text.output
    assert "cannot reach the admin API" in text.output  # the warning on stderr
    rows = {line.split("│")[1].strip(): line for line in text.output.splitlines() if line.count("│") > 5}
    # Up to now (years after these results) the newest point holds them all: latest = overall.
    assert "extracted (flip)" in rows["ratings"] and rows["ratings"].count("41.0%") == 2
    assert "legacy" in rows["images"] and "–" in rows["images"]
    assert "120*" in rows["cast"]  # estimated from a sampled mirror


def test_cli_since_and_a_missing_store(control: Control, tmp_path: Path) -> None:
    out = run("progress", "--config", str(control.config_path), "--json", "--since", "1h")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["empty"] is True and doc["overall"]["requests"] == 0  # every result is from 2023
    out = run("progress", "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'nope.sqlite3'}")
    assert out.exit_code == 2 and "no results store" in out.output


def test_report_json_and_html_carry_the_progress(control: Control, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    out = run("report", "--config", str(control.config_path), "--json", "--html", str(page))
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["schema"] == "strangler.report/v1" and [k["key"] for k in doc["keys"]][:2] == ["cast", "known-for"]
    assert doc["progress"]["schema"] == "strangler.progress/v1"
    assert doc["progress"]["overall"]["extracted"] == 223
    html = page.read_text()
    progress_at, summary_at = html.index('<section id="progress">'), html.index('<table id="summary">')
    assert progress_at < summary_at  # at the top
    assert "38.3% <span>of 582 recorded requests" in html and 'id="progress-table"' in html
    assert html.count('<svg class="spark"') == 5


# ------------------------------------------------------------------ with a running proxy


@pytest.fixture
async def answering() -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server.port
    await server.close()


async def test_cli_asks_the_running_proxy_for_modes_and_live_counters(tmp_path: Path, answering: int) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.sqlite3'}"
    path = tmp_path / "strangler.yaml"
    path.write_text(yaml_text(url, ratings_mode="extracted", legacy_port=answering, target_port=answering))
    async with ProxyServer(path, port=0, admin_port=0, state_url=url, watch=False) as server, \
            httpx.AsyncClient(timeout=5) as client:
        for i in range(3):
            assert (await client.get(f"{server.url}/api/titles/tt{i}/ratings")).status_code == 200
        for _ in range(2):
            assert (await client.get(f"{server.url}/somewhere/else")).status_code == 200
        reader = ResultsReader(make_engine(url))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the proxy's writer flushes every 50 ms
            if any(s.key == "ratings" and s.counts.served == 3 for s in await reader.summaries()):
                break
            await asyncio.sleep(0.05)
        await reader.engine.dispose()
        out = await asyncio.to_thread(
            runner.invoke, _app(),
            ["progress", "--config", str(path), "--json", "--admin-url", server.admin_url, "--token", "ops-token"],
            env=NO_ENV,
        )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["modes_from"] == "admin" and server.admin_url in doc["modes_note"]
    assert doc["live"] == {"share": 0.6, "requests": 5, "extracted": 3, "unmatched": 2}
    ratings = next(k for k in doc["keys"] if k["key"] == "ratings")
    assert (ratings["mode"], ratings["source"]) == ("extracted", "file")
    assert ratings["served"] == {"share": 1.0, "extracted": 3, "requests": 3}
