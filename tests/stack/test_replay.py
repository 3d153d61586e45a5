"""`strangler traffic --replay`: a HAR recording sent to a real aiohttp server on
loopback that records every request it gets (time, method, raw target, raw
headers, body) -- at the recorded pace, faster, with or without writes, and
nothing at all for what cannot be replayed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from aiohttp import web
from typer.testing import CliRunner, Result

from strangler_proxy.cli import traffic_commands
from strangler_proxy.stack.har import Replay, parse_har
from strangler_proxy.stack.traffic import TrafficSummary, run_schedule, traffic_client
from tests.stack.harfiles import BROWSER_VISIT, OTHER_HOSTS, READS, VOTE_BODY, WRITES, entry, har
from tests.stack.loopback import serving

# What any client library adds on its own and a replay cannot avoid: the target's
# Host, the body's length, and keep-alive.
TRANSPORT_HEADERS = {"host", "content-length", "connection"}


@dataclass(frozen=True)
class Seen:
    at: float
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def sent_headers(self) -> tuple[tuple[str, str], ...]:
        return tuple((n, v) for n, v in self.headers if n.lower() not in TRANSPORT_HEADERS)


@dataclass
class Recorder:
    seen: list[Seen] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # path -> status to answer instead
    graphql_errors: bool = False

    def targets(self) -> list[tuple[str, str]]:
        return [(s.method, s.target) for s in self.seen]


def recording_app(rec: Recorder) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec.seen.append(Seen(
            time.monotonic(), request.method, request.raw_path,
            tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in request.raw_headers), body,
        ))
        if request.path in rec.statuses:
            return web.json_response({"error": "told to"}, status=rec.statuses[request.path])
        if request.path == "/graphql":
            if rec.graphql_errors:
                return web.json_response({"data": None, "errors": [{"message": "nope"}]})
            return web.json_response({"data": {"title": {"id": "tt0000001"}}})
        if request.method == "POST":
            return web.json_response({"num_votes": 1}, status=201)
        if request.method == "DELETE":
            return web.Response(status=204)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    async with serving(recording_app(rec)) as url:
        yield rec, url


async def _replay(url: str, replay: Replay, concurrency: int = 8) -> TrafficSummary:
    async with traffic_client(url, concurrency=concurrency, timeout_s=5, default_headers=False) as client:
        return await run_schedule(replay, client, concurrency=concurrency, timeout_s=5)


def _offsets(rec: Recorder) -> list[float]:
    return [s.at - rec.seen[0].at for s in rec.seen]


async def test_reads_arrive_as_recorded_at_the_recorded_pace(served: tuple[Recorder, str]) -> None:
    rec, url = served
    recording = parse_har(BROWSER_VISIT.read_bytes())
    summary = await _replay(url, Replay(recording))
    # Only the reads of the main host, in order, their targets byte for byte.
    assert rec.targets() == [(m, p) for _, m, p, _ in READS]
    # Each at its recorded offset from the first (0, 0.3, 0.7, 1.0 s), not all at once.
    for got, (_, _, _, want) in zip(_offsets(rec), READS, strict=True):
        assert got == pytest.approx(want, abs=0.1), _offsets(rec)
    # Exactly the recorded headers (minus pseudo, hop-by-hop, host and length), none of the client's own.
    by_target = {r.request.path: r.request for r in recording.requests}
    for seen in rec.seen:
        assert seen.sent_headers() == by_target[seen.target].headers
    first = rec.seen[0]
    assert ("cookie", "session=s3cr3t-session; theme=dark") in first.headers
    assert not any(n.lower() == "user-agent" and "python-httpx" in v for n, v in first.headers)
    assert dict((n.lower(), v) for n, v in first.headers)["host"] == url.removeprefix("http://")
    graphql = next(s for s in rec.seen if s.target == "/graphql")
    assert json.loads(graphql.body)["operationName"] == "Title" and graphql.body == by_target["/graphql"].content
    # The same summary as the generated mix, with what was skipped.
    assert summary.sent == summary.ok == summary.planned == 4 and summary.errors == 0 and summary.dropped == 0
    assert summary.skipped == {"write": 2, "other host": 2, "invalid": 0}
    assert summary.as_json()["skipped"] == {"write": 2, "other host": 2, "invalid": 0}
    assert set(summary.by_kind) == {"GET /api/titles", "GET /api/search", "POST /graphql"}
    assert 0.95 <= summary.elapsed_s < 1.5


async def test_speed_four_is_four_times_faster_and_writes_go_when_asked(served: tuple[Recorder, str]) -> None:
    rec, url = served
    summary = await _replay(url, Replay(parse_har(BROWSER_VISIT.read_bytes()), speed=4, include_writes=True))
    everything = sorted(READS + WRITES, key=lambda r: r[3])
    assert rec.targets() == [(m, p) for _, m, p, _ in everything]
    for got, (_, _, _, want) in zip(_offsets(rec), everything, strict=True):
        assert got == pytest.approx(want / 4, abs=0.05), _offsets(rec)
    assert 0.2 <= _offsets(rec)[-1] <= 0.35
    vote = next(s for s in rec.seen if s.method == "POST" and s.target.endswith("/ratings"))
    assert vote.body == VOTE_BODY
    headers = {n.lower(): v for n, v in vote.headers}
    assert headers["content-type"] == "application/json" and headers["content-length"] == str(len(VOTE_BODY))
    assert headers["authorization"] == "Bearer eyJhbGciOiJIUzI1NiJ9.demo.sig"
    assert summary.sent == 6 and summary.errors == 0
    assert summary.statuses() == {"200": 4, "201": 1, "204": 1}
    assert summary.skipped == {"write": 0, "other host": 2, "invalid": 0}


async def test_speed_zero_sends_everything_at_once_within_the_concurrency(served: tuple[Recorder, str]) -> None:
    rec, url = served
    started = time.monotonic()
    summary = await _replay(url, Replay(parse_har(BROWSER_VISIT.read_bytes()), speed=0, include_writes=True),
                            concurrency=2)
    assert time.monotonic() - started < 0.5 and summary.sent == 6 and summary.errors == 0
    assert sorted(rec.targets()) == sorted((m, p) for _, m, p, _ in READS + WRITES)


async def test_an_answer_of_another_status_class_than_recorded_is_an_error(served: tuple[Recorder, str]) -> None:
    rec, url = served
    rec.statuses = {
        "/api/titles/tt0000002/cast": 404,  # recorded 200
        "/api/titles/tt0000001/ratings": 200,  # recorded 201: same class, fine
        "/api/search": 503,
    }
    rec.graphql_errors = True  # recorded without errors
    summary = await _replay(url, Replay(parse_har(BROWSER_VISIT.read_bytes()), speed=0, include_writes=True))
    assert summary.sent == 6 and summary.errors == 3
    assert summary.error_reasons() == {"unexpected 404": 1, "unexpected 503": 1, "graphql: errors": 1}
    assert summary.by_kind["POST /api/titles"] == {"requests": 1, "ok": 1, "errors": 0}
    assert summary.failed


async def test_the_target_goes_out_byte_for_byte(served: tuple[Recorder, str]) -> None:
    rec, url = served
    recording = parse_har(har(
        entry("GET", "https://api.example/a/../b//c?x=%7e&y=a+b&z=%zz#frag"),
        entry("GET", "https://api.example/films/Amélie?q=a b", at=0.01),
        entry("GET", "https://api.example/x", at=0.02, headers=[
            ("Host", "api.example"), ("X-Strangler-Dry-Run", "1"), ("Connection", "close, X-Hop"), ("X-Hop", "1"),
            ("X-Request-Id", "r-1"), ("X-Request-Id", "r-2"),
        ]),
    ))
    summary = await _replay(url, Replay(recording))
    assert rec.targets() == [("GET", "/a/../b//c?x=%7e&y=a+b&z=%zz"), ("GET", "/films/Am%C3%A9lie?q=a%20b"),
                             ("GET", "/x")]
    assert rec.seen[2].sent_headers() == (("X-Request-Id", "r-1"), ("X-Request-Id", "r-2"))
    assert summary.errors == 0


# ------------------------------------------------------------------ the CLI
def _cli() -> typer.Typer:
    app = typer.Typer()
    traffic_commands.register(app)
    return app


async def _invoke(*args: str) -> Result:
    """The CLI runs its own event loop: in a thread, while this loop serves the recorder."""
    return await asyncio.to_thread(CliRunner().invoke, _cli(), list(args))


async def test_cli_replays_and_prints_the_summary_and_what_it_skipped(served: tuple[Recorder, str]) -> None:
    rec, url = served
    result = await _invoke("--replay", str(BROWSER_VISIT), "--url", url, "--speed", "4")
    assert result.exit_code == 0, result.output
    assert rec.targets() == [(m, p) for _, m, p, _ in READS]
    assert f"replaying 4 requests of {BROWSER_VISIT}" in result.stdout and "films.example.com" in result.stdout
    assert "GET /api/titles" in result.stdout and "POST /graphql" in result.stdout
    assert "write: 2 (--include-writes sends them), other host: 2" in result.stdout
    # Each refused entry named on stderr, with its index and URL.
    for index, other in OTHER_HOSTS:
        assert f"entry {index} (" in result.stderr and other in result.stderr


async def test_cli_json_lists_every_problem_and_include_writes_sends_writes(served: tuple[Recorder, str]) -> None:
    rec, url = served
    result = await _invoke("--replay", str(BROWSER_VISIT), "--url", url, "--speed", "0", "--include-writes", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["sent"] == 6 and out["errors"] == 0 and out["skipped"] == {"write": 0, "other host": 2, "invalid": 0}
    assert out["replay"]["host"] == "films.example.com" and out["replay"]["entries"] == 8
    assert [(p["entry"], p["url"], p["reason"]) for p in out["replay"]["problems"]] == [
        (i, u, "other host") for i, u in OTHER_HOSTS
    ]
    assert sorted(rec.targets()) == sorted((m, p) for _, m, p, _ in READS + WRITES)


async def test_cli_host_replays_another_host_of_the_recording(served: tuple[Recorder, str]) -> None:
    rec, url = served
    result = await _invoke("--replay", str(BROWSER_VISIT), "--url", url, "--host", "fonts.example.net", "--json")
    assert result.exit_code == 0, result.output
    assert rec.targets() == [("GET", "/css2?family=Inter:wght@400;700&display=swap")]


@pytest.mark.parametrize(("content", "says"), [
    (b"<html>not exported</html>", "not JSON"),
    (BROWSER_VISIT.read_bytes()[:3000], "truncated"),
    (b'{"log": {"pages": []}}', "not a HAR file"),
    (har(entry("GET", "https://a.example/x"), version="2.0").encode(), "HAR version '2.0' is not supported"),
    (har().encode(), "nothing to replay: the recording has no entries"),
    (har(entry("POST", "https://a.example/w", post={"mimeType": "text/plain", "text": "x"}),
         entry("DELETE", "https://a.example/w/1", at=0.1)).encode(),
     "nothing to replay: all 2 requests to a.example are writes (--include-writes sends them)"),
    (har(entry("GET", "ftp://a.example/x"), {"request": {}}).encode(), "none of its 2 entries can be replayed"),
])
async def test_cli_file_that_cannot_be_replayed_exits_2_and_sends_nothing(
    served: tuple[Recorder, str], tmp_path: Path, content: bytes, says: str,
) -> None:
    rec, url = served
    path = tmp_path / "visit.har"
    path.write_bytes(content)
    result = await _invoke("--replay", str(path), "--url", url)
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and says in result.stderr
    assert "Traceback" not in result.output
    assert rec.seen == []


async def test_cli_names_each_bad_entry_and_sends_only_the_good_ones(
    served: tuple[Recorder, str], tmp_path: Path,
) -> None:
    rec, url = served
    no_time = {k: v for k, v in entry("GET", "https://a.example/never/3", at=0.03).items() if k != "startedDateTime"}
    path = tmp_path / "mixed.har"
    path.write_text(har(
        entry("GET", "https://a.example/good/0"),
        {"startedDateTime": "2024-05-14T09:21:07.500Z", "response": {"status": 200}},  # no request
        {**entry("GET", "https://a.example/never/2", at=0.02), "request": {"url": "https://a.example/never/2"}},
        no_time,
        entry("GET", "https://elsewhere.example/never/4", at=0.04),
        entry("GET", "https://a.example/good/5", at=0.05),
    ))
    result = await _invoke("--replay", str(path), "--url", url, "--speed", "0")
    assert result.exit_code == 0, result.output
    assert rec.targets() == [("GET", "/good/0"), ("GET", "/good/5")]
    assert f"{path}: entry 1: no request" in result.stderr
    assert f"{path}: entry 2 (https://a.example/never/2): the request has no method" in result.stderr
    assert f"{path}: entry 3 (GET https://a.example/never/3): no startedDateTime" in result.stderr
    assert f"{path}: entry 4 (GET https://elsewhere.example/never/4): to host elsewhere.example" in result.stderr
    assert "other host: 1, invalid: 3" in result.stdout


async def test_cli_many_problems_are_counted_after_twenty_lines(served: tuple[Recorder, str], tmp_path: Path) -> None:
    rec, url = served
    path = tmp_path / "page.har"
    path.write_text(har(*[entry("GET", f"https://cdn.example/{i}.js", at=i / 1000) for i in range(25)],
                        *[entry("GET", f"https://a.example/{i}", at=i / 100) for i in range(30)]))
    result = await _invoke("--replay", str(path), "--url", url, "--speed", "0")
    assert result.exit_code == 0, result.output
    assert len(rec.seen) == 30
    assert "entry 19 (" in result.stderr and "entry 20 (" not in result.stderr
    assert "5 more entries (--json lists every one)" in result.stderr


async def test_cli_exits_1_when_the_answers_differ_from_the_recording(served: tuple[Recorder, str]) -> None:
    rec, url = served
    rec.statuses = {"/api/search": 500}
    result = await _invoke("--replay", str(BROWSER_VISIT), "--url", url, "--speed", "0")
    assert result.exit_code == 1, result.output
    assert "unexpected 500" in result.stdout and len(rec.seen) == 4


@pytest.mark.parametrize(("args", "says"), [
    (["--replay", str(BROWSER_VISIT), "--rate", "5", "--seed", "2"], "--rate, --seed: only without --replay"),
    (["--replay", str(BROWSER_VISIT), "--config", "strangler.yaml"], "--config: only without --replay"),
    (["--speed", "2"], "--speed: only with --replay FILE"),
    (["--include-writes", "--host", "a.example"], "--include-writes, --host: only with --replay FILE"),
    (["--replay", "/nonexistent/visit.har"], "cannot read /nonexistent/visit.har"),
])
def test_cli_refuses_options_that_do_not_go_together(args: list[str], says: str) -> None:
    result = CliRunner().invoke(_cli(), ["--url", "http://127.0.0.1:1", *args])
    assert result.exit_code == 2 and says in result.stderr, result.output
