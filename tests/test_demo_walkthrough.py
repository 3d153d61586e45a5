"""The README's migration walkthrough, end to end and in-process.

The repo's own strangler.yaml (ports moved to free loopback ports, data in
tmp_path, a 200-title catalogue) runs the whole stack with ``run_stack``; the
traffic generator drives it through the proxy; then the report, the sync
worker, a tolerance rule (the file is saved, the proxy reloads) and two flips
are checked the way a user would see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from legacy_monolith.traffic_plan import Catalogue, TrafficPlan
from strangler_proxy.cli.stack_commands import up_components
from strangler_proxy.config import load_config
from strangler_proxy.databases import make_engine
from strangler_proxy.report.build import build_report
from strangler_proxy.report.json_report import report_to_json
from strangler_proxy.stack.components import StackOptions, run_stack
from strangler_proxy.stack.traffic import TrafficOptions, TrafficSummary, run_traffic

REPO = Path(__file__).resolve().parents[1]
TITLES = 200
ADMIN_TOKEN = "dev-admin-token"  # strangler.yaml's local development token
# The lines the README tells users to uncomment (the route's and Title.rating's).
TOLERANCE_LINE = "    # compare: {abs_tolerance: 0.05}"
TOLERANCE_ON = "    compare: {abs_tolerance: 0.05}"
ENV_OVERRIDES = (
    "STRANGLER_DATABASE_URL", "STRANGLER_MONOLITH_DATABASE_URL", "STRANGLER_CONTROL_DATABASE_URL",
    "STRANGLER_RATINGS_DATABASE_URL", "STRANGLER_CREDITS_DATABASE_URL", "STRANGLER_IMAGES_DATABASE_URL",
    "STRANGLER_ADMIN_TOKEN", "STRANGLER_ADMIN_URL", "RATINGS_ROUNDING",
)
SYNC_METRICS_OFFSET = 1000  # sync workers serve /metrics on their service's port + this


def _free_port(also_free_at: int = 0) -> int:
    """A free loopback port (and, with ``also_free_at``, free at that offset too)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not also_free_at:
            return port
        if port + also_free_at > 65535:
            continue
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port + also_free_at))
            return port
    raise RuntimeError("no free port pair")


@dataclass
class Stack:
    config: Path
    proxy: str
    admin: str
    monolith: str
    ratings: str


def _demo_config(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    text = (REPO / "strangler.yaml").read_text()
    assert TOLERANCE_LINE in text, "the README's tolerance line moved; update the walkthrough"
    ports = {
        "monolith": _free_port(), "ratings": _free_port(SYNC_METRICS_OFFSET),
        "credits": _free_port(SYNC_METRICS_OFFSET), "images": _free_port(), "proxy": _free_port(),
        "admin": _free_port(),
    }
    for name, default in (("monolith", 8001), ("ratings", 8101), ("credits", 8102), ("images", 8103)):
        text, n = re.subn(rf"127\.0\.0\.1:{default}\b", f"127.0.0.1:{ports[name]}", text)
        assert n == 1, name
    for name, default in (("proxy", 8080), ("admin", 9901)):
        text, n = re.subn(rf"port: {default}\b", f"port: {ports[name]}", text)
        assert n == 1, name
    path = tmp_path / "strangler.yaml"
    path.write_text(text)
    return path, ports


@pytest.fixture
async def stack(tmp_path: Path, data_dir: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    for name in ENV_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    config, ports = _demo_config(tmp_path)
    stop = asyncio.Event()
    ready: list[list[tuple[str, str]]] = []
    options = StackOptions(size=TITLES, seed=42)
    task = asyncio.create_task(run_stack(up_components(str(config), options), stop, ready.append))
    try:
        for _ in range(400):
            if ready or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # raise what failed
        started = dict(ready[0])
        assert set(started) == {
            "monolith", "ratings", "credits", "images", "sync ratings", "sync ratings (reverse)", "sync credits",
            "sync credits (from ratings)", "proxy",
        }
        # The services listen where the proxy's upstreams point.
        assert started["ratings"] == f"http://127.0.0.1:{ports['ratings']}"
        yield Stack(
            config, f"http://127.0.0.1:{ports['proxy']}", f"http://127.0.0.1:{ports['admin']}",
            started["monolith"], started["ratings"],
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def _traffic(stack: Stack, seconds: float, seed: int, *, vote_share: float) -> TrafficSummary:
    plan = TrafficPlan(seed, Catalogue.of(TITLES), vote_share=vote_share, graphql_share=0.1)
    async with httpx.AsyncClient(base_url=stack.proxy, timeout=10) as client:
        summary = await run_traffic(TrafficOptions(rate=120, duration_s=seconds), plan, client)
    assert summary.errors == 0, summary.error_reasons()
    return summary


async def _report(stack: Stack) -> dict[str, dict[str, Any]]:
    engine = make_engine(load_config(stack.config).control_database_url())
    try:
        report = await build_report(engine, load_config(stack.config))
    finally:
        await engine.dispose()
    return {k["key"]: k for k in report_to_json(report)["keys"]}


async def _report_when(stack: Stack, key: str, compared: int) -> dict[str, dict[str, Any]]:
    """The report once ``key`` has at least ``compared`` results stored (the writer flushes every 0.5 s)."""
    for _ in range(100):
        report = await _report(stack)
        if report.get(key, {}).get("counts", {}).get("total", 0) >= compared:
            return report
        await asyncio.sleep(0.1)
    raise AssertionError(f"{key}: fewer than {compared} results stored: {report.get(key, {}).get('counts')}")


async def _admin(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(base_url=stack.admin, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        response = await c.request(method, path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _admin_status(stack: Stack, method: str, path: str, body: dict[str, Any]) -> int:
    async with httpx.AsyncClient(base_url=stack.admin, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        return (await c.request(method, path, json=body)).status_code


async def _ratings_counters(stack: Stack) -> dict[str, int]:
    routes = (await _admin(stack, "GET", "/routes"))["routes"]
    return next(r["counters"] for r in routes if r["name"] == "ratings")


async def test_demo_walkthrough(stack: Stack) -> None:
    # 1. Reads through the proxy: the report finds the rounding and nothing else.
    reads = await _traffic(stack, 2.5, seed=1, vote_share=0)
    sent_ratings = reads.by_kind["ratings"]["requests"]
    report = await _report_when(stack, "ratings", sent_ratings)
    ratings = report["ratings"]
    assert ratings["counts"]["mismatch"] > 0 and ratings["counts"]["candidate_error"] == 0
    assert {p["path"] for p in ratings["top_paths"]} == {"$.average_rating"}
    assert {n["path"] for n in ratings["noise"]} == {"$.generated_at", "$.request_id"}  # filtered, not counted
    example = ratings["examples"][0]
    assert example["differences"][0]["candidate"] == round(example["differences"][0]["legacy"], 1)
    for key in ("cast", "images", "known-for"):
        assert report[key]["samples"] > 0 and report[key]["counts"]["mismatch"] == 0, report[key]
    assert {p["path"] for p in report["graphql:Title.rating"]["top_paths"]} <= {"$.averageRating"}

    # 2. Votes through the proxy land in the monolith; the sync worker carries them to the service
    #    (the service's mirrored copies were dry runs, rolled back).
    mixed = await _traffic(stack, 1.5, seed=2, vote_share=0.3)
    # Every vote sent succeeded (how many get sent in 1.5 s depends on the machine).
    assert mixed.by_kind["vote"]["ok"] == mixed.by_kind["vote"]["requests"] > 0
    title = "tt0000150"
    async with httpx.AsyncClient(timeout=5) as http:
        before = (await http.get(f"{stack.monolith}/api/titles/{title}/ratings")).json()["num_votes"]
        voted = await http.post(f"{stack.proxy}/api/titles/{title}/ratings",
                                json={"user_id": "walkthrough-user", "value": 10})
        assert voted.status_code == 201 and voted.json()["num_votes"] == before + 1
        for _ in range(100):
            service = (await http.get(f"{stack.ratings}/api/titles/{title}/ratings")).json()
            if service["num_votes"] == before + 1:
                break
            await asyncio.sleep(0.05)
        assert service["num_votes"] == before + 1, service
        monolith = (await http.get(f"{stack.monolith}/api/titles/{title}/ratings")).json()
        assert service["average_rating"] == round(monolith["average_rating"], 1)

    # 3. The tolerance rule: save the file, the proxy reloads, new comparisons agree.
    text = stack.config.read_text()
    stack.config.write_text(text.replace(TOLERANCE_LINE, TOLERANCE_ON))
    reloaded = await _admin(stack, "POST", "/reload")  # what saving does within a second, now
    assert reloaded["ok"] is True
    # Every ratings exchange so far (reads, votes mirrored as dry runs) is stored before the baseline.
    shadowed = sent_ratings + mixed.by_kind["ratings"]["requests"]  # votes are the ratings-vote route
    settled = await _report_when(stack, "ratings", shadowed)
    baseline = settled["ratings"]["counts"]
    after = await _traffic(stack, 2.0, seed=3, vote_share=0)
    report = await _report_when(stack, "ratings", baseline["total"] + after.by_kind["ratings"]["requests"])
    counts = report["ratings"]["counts"]
    assert counts["mismatch"] == baseline["mismatch"], (baseline, counts)
    assert counts["match"] >= baseline["match"] + after.by_kind["ratings"]["requests"]

    # 4. Canary 50%: a title's ratings come from one side, sticky; about half from the service.
    probe = [f"tt{n:07d}" for n in range(1, TITLES + 1)]
    async with httpx.AsyncClient(timeout=5) as http:
        legacy_answers = {t: (await http.get(f"{stack.monolith}/api/titles/{t}/ratings")).json() for t in probe}
        distinct = [t for t in probe if (a := legacy_answers[t]["average_rating"]) is not None and a != round(a, 1)]
        distinct = distinct[:40]
        assert len(distinct) >= 20  # averages with more than one decimal tell the sides apart

        async def served_by_service(t: str) -> bool:
            answer = (await http.get(f"{stack.proxy}/api/titles/{t}/ratings")).json()
            assert answer["average_rating"] in (legacy_answers[t]["average_rating"],
                                                 round(legacy_answers[t]["average_rating"], 1))
            return bool(answer["average_rating"] != legacy_answers[t]["average_rating"])

        before_counters = await _ratings_counters(stack)
        flipped = await _admin(stack, "POST", "/routes/ratings/flip",
                               {"mode": "canary", "percent": 50, "reason": "walkthrough"})
        assert flipped["to"]["mode"] == "canary"
        sides = {t: await served_by_service(t) for t in distinct}
        assert 0.2 < sum(sides.values()) / len(sides) < 0.8, sides
        assert {t: await served_by_service(t) for t in distinct} == sides  # sticky by title
        counters = await _ratings_counters(stack)
        assert counters["target"] - before_counters["target"] == 2 * sum(sides.values())

        # 5. Extracted: the service answers every title.
        await _admin(stack, "POST", "/routes/ratings/flip", {"mode": "extracted", "reason": "walkthrough"})
        assert all([await served_by_service(t) for t in distinct])
        final = await _ratings_counters(stack)
        assert final["target"] - counters["target"] == len(distinct)

    # 6. Writes move in one step: shadow (dry runs) -> extracted. A vote through the
    #    proxy now lands in the service, and the reverse sync carries it to the monolith.
    await _admin(stack, "POST", "/routes/ratings-vote/flip", {"mode": "extracted", "reason": "walkthrough"})
    refused = await _admin_status(stack, "POST", "/routes/ratings-vote/flip", {"mode": "canary", "percent": 10})
    assert refused == 400  # writes never go to canary (two databases would write the same votes)
    async with httpx.AsyncClient(timeout=5) as http:
        title = "tt0000151"
        before = (await http.get(f"{stack.monolith}/api/titles/{title}/ratings")).json()["num_votes"]
        voted = await http.post(f"{stack.proxy}/api/titles/{title}/ratings",
                                json={"user_id": "walkthrough-writer", "value": 7})
        assert voted.status_code == 201 and voted.json()["num_votes"] == before + 1
        assert voted.json()["average_rating"] == round(voted.json()["average_rating"], 1)  # the service's answer
        for _ in range(100):
            monolith = (await http.get(f"{stack.monolith}/api/titles/{title}/ratings")).json()
            if monolith["num_votes"] == before + 1:
                break
            await asyncio.sleep(0.05)
        assert monolith["num_votes"] == before + 1, monolith

    audit = await _admin(stack, "GET", "/audit?name=ratings")
    assert [(e["to"]["mode"], e["who"], e["reason"]) for e in audit["entries"][:2]] == [
        ("extracted", "dev", "walkthrough"), ("canary", "dev", "walkthrough"),
    ]
