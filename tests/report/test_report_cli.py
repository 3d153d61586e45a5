"""`strangler report`: text, JSON, HTML and the CI gate, against real stores."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from strangler_proxy.cli import report_commands
from strangler_proxy.config import StoreSettings
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.store import ResultWriter
from tests.report.conftest import SECRET_HEADER, SECRET_TOKEN, Store
from tests.store.factory import result

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    report_commands.register(app)

    @app.callback()
    def _root() -> None:  # keeps "report" a subcommand, as in the real CLI
        pass

    return app


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(_app(), ["report", *args])


def test_empty_store_says_there_is_nothing(empty_store: Store, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no ./strangler.yaml: nothing configured either
    text_out = run("--database-url", empty_store.url)
    assert text_out.exit_code == 0, text_out.output
    assert "No shadow results stored yet" in text_out.output
    js = run("--database-url", empty_store.url, "--json")
    assert js.exit_code == 0
    doc = json.loads(js.stdout)
    assert doc["schema"] == "strangler.report/v1" and doc["empty"] is True and doc["keys"] == []
    assert doc["ready"] is False and "no shadow results" in doc["message"]
    page = tmp_path / "empty.html"
    html_out = run("--database-url", empty_store.url, "--html", str(page))
    assert html_out.exit_code == 0
    assert 'id="nothing"' in page.read_text() and "No shadow results stored yet" in page.read_text()


def test_text_report_shows_routes_and_fields_together(store: Store) -> None:
    out = run("--config", str(store.config_path))
    assert out.exit_code == 0, out.output
    lines = {line.split("│")[1].strip(): line for line in out.output.splitlines() if line.count("│") > 5}
    assert {"ratings", "credits", "images", "graphql:Title.rating"} <= set(lines)
    assert "ready" in lines["ratings"] and "100.0%" in lines["ratings"]
    assert "10.0%" in lines["credits"] and "not ready" in lines["credits"]
    assert "insufficient samples (20/100)" in lines["graphql:Title.rating"]
    assert "insufficient samples (0/5)" in lines["images"]  # configured, shadowed, no traffic
    assert "$.cast[0].name" in out.output


def test_json_report_is_complete_and_stable(store: Store) -> None:
    out = run("--config", str(store.config_path), "--json")
    assert out.exit_code == 0
    doc = json.loads(out.stdout)
    keys = {k["key"]: k for k in doc["keys"]}
    assert [k["key"] for k in doc["keys"]] == ["credits", "images", "ratings", "graphql:Title.rating"]
    credits = keys["credits"]
    assert credits["kind"] == "route" and keys["graphql:Title.rating"]["kind"] == "graphql-field"
    assert credits["samples"] == 300 and credits["counts"]["mismatch"] == 30
    assert credits["mismatch_rate"] == 0.1 and credits["match_rate"] == 0.9
    assert credits["top_paths"] == [{"path": "$.cast[0].name", "kind": "value", "count": 30}]
    assert credits["noise_paths"] == 1 and credits["noise"][0]["path"] == "$.generated_at"
    assert credits["readiness"]["status"] == "not-ready" and not credits["readiness"]["ready"]
    ratings = keys["ratings"]
    assert ratings["readiness"]["ready"] and ratings["readiness"]["mismatch_upper_bound"] < 0.01
    lat = ratings["latency_ms"]
    assert 9 < lat["legacy"]["p50"] < 15 and 10 < lat["candidate"]["p99"] < 12.5
    assert len(ratings["timeline"]) >= 2 and ratings["timeline"][0]["match_rate"] == 1.0
    assert keys["graphql:Title.rating"]["readiness"]["label"] == "insufficient samples (20/100)"
    assert credits["examples"] and credits["examples"][0]["differences"][0]["path"] == "$.cast[0].name"
    assert doc["ready"] is False


def test_one_key_only(store: Store) -> None:
    doc = json.loads(run("--config", str(store.config_path), "--json", "ratings").stdout)
    assert [k["key"] for k in doc["keys"]] == ["ratings"]


def test_secrets_do_not_reach_json_or_html(store: Store, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    out = run("--config", str(store.config_path), "--json", "--html", str(page))
    assert out.exit_code == 0
    html = page.read_text()
    assert "[REDACTED]" in out.stdout and "Anne" in html
    for secret in (SECRET_TOKEN, SECRET_HEADER):
        assert secret not in out.stdout and secret not in html


def test_gate_exit_codes(store: Store) -> None:
    cfg = str(store.config_path)
    ok = run("--config", cfg, "--gate", "ratings")
    assert ok.exit_code == 0 and "gate PASS ratings" in ok.output
    bad = run("--config", cfg, "--gate", "ratings", "credits")
    assert bad.exit_code == 1 and "gate FAIL credits" in bad.output
    few = run("--config", cfg, "--gate", "graphql:Title.rating")
    assert few.exit_code == 1 and "insufficient samples (20/100)" in few.output
    unknown = run("--config", cfg, "--gate", "nosuch")
    assert unknown.exit_code == 1 and "insufficient samples (0/100)" in unknown.output
    as_json = run("--config", cfg, "--json", "--gate", "credits")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["keys"][0]["key"] == "credits"
    assert run("--config", cfg, "--gate").exit_code == 2  # nothing named
    assert run("--database-url", "not a url", "--gate", "x").exit_code == 2
    missing = run("--database-url", f"sqlite+aiosqlite:///{store.config_path.parent / 'nope.sqlite3'}")
    assert missing.exit_code == 2 and "no results store" in missing.output



def test_since_leaves_out_older_buckets(store: Store) -> None:
    """After a fix, ``--since`` shows only what came after it: here ten fresh
    mismatches, not the 300 old results of the same route."""

    async def add_fresh() -> None:
        engine = make_engine(store.url)
        async with ResultWriter(engine, StoreSettings()) as writer:
            for _ in range(10):
                writer.observe(result("credits", Verdict.MISMATCH, time.time(), diffs=(("$.n", 1, 2),)))
        await engine.dispose()

    asyncio.run(add_fresh())
    everything = json.loads(run("--config", str(store.config_path), "--json").stdout)
    recent = json.loads(run("--config", str(store.config_path), "--json", "--since", "10m").stdout)
    by_key = {k["key"]: k for k in everything["keys"]}
    assert by_key["credits"]["samples"] == 310
    recent_credits = next(k for k in recent["keys"] if k["key"] == "credits")
    assert recent_credits["samples"] == 10 and recent_credits["counts"]["mismatch"] == 10
    assert recent_credits["top_paths"] == [{"path": "$.n", "kind": "value", "count": 10}]
    assert "ratings" not in {k["key"] for k in recent["keys"] if k["samples"]}
    # A window shorter than a bucket still shows the bucket it falls in, never an empty report.
    just_now = json.loads(run("--config", str(store.config_path), "--json", "--since", "1s").stdout)
    assert next(k for k in just_now["keys"] if k["key"] == "credits")["samples"] == 10
    bad = run("--config", str(store.config_path), "--since", "ten minutes")
    assert bad.exit_code == 2 and "use a number and a unit" in bad.output
