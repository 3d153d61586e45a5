"""Requests served by the target (nothing compared) in all three report formats:
shown per key, never readiness samples; their candidate errors count."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from strangler_proxy.config import StoreSettings
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.store import ResultWriter
from tests.report.conftest import Store
from tests.report.test_report_cli import run
from tests.store.factory import BASE_T, migrated_sqlite, result, served

YAML = """
upstreams:
  legacy: {{url: "http://127.0.0.1:8001"}}
  ratings: {{url: "http://127.0.0.1:8101"}}
store: {{url: "{url}"}}
readiness: {{min_samples: 100, max_error_rate: 0.01}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: canary, percent: 50}}
  - {{name: images, path: "/api/titles/{{id}}/images", target: ratings, mode: extracted}}
"""


async def _populate(url: str) -> None:
    eng = make_engine(url)
    writer = ResultWriter(eng, StoreSettings())
    for i in range(500):  # canary 50 %: the legacy share compared, the target share served
        writer.observe(result("ratings", Verdict.MATCH, BASE_T + i, legacy_s=0.010, candidate_s=0.011))
        writer.observe(served("ratings", BASE_T + i, candidate_s=0.011, mode="canary"))
    writer.observe(served("ratings", BASE_T + 7, status=502, candidate_s=0.003, mode="canary"))
    for i in range(800):  # extracted without reverse shadow: nothing is ever compared
        writer.observe(served("images", BASE_T + i * 0.5, candidate_s=0.02))
    for i in range(12):  # ...and the target failed 12 times: 12 / 812 = 1.48 %
        writer.observe(served("images", BASE_T + i, status=None, candidate_s=0.0, error="timeout"))
    await writer.flush()
    await eng.dispose()


@pytest.fixture
def served_store(tmp_path: Path) -> Store:
    url = asyncio.run(migrated_sqlite(tmp_path, "served"))
    config_path = tmp_path / "strangler.yaml"
    config_path.write_text(YAML.format(url=url))
    asyncio.run(_populate(url))
    return Store(url, config_path)


def test_json_adds_served_and_judges_errors_over_all_handled_traffic(served_store: Store) -> None:
    out = run("--config", str(served_store.config_path), "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["schema"] == "strangler.report/v1"  # a field added, nothing renamed
    keys = {k["key"]: k for k in doc["keys"]}
    ratings, images = keys["ratings"], keys["images"]
    assert ratings["counts"] == {"match": 500, "mismatch": 0, "candidate_error": 1, "legacy_error": 0,
                                 "skipped": 0, "served": 500, "transient": 0, "total": 1001}
    assert ratings["samples"] == 501 and ratings["readiness"]["samples"] == 501  # served are no samples
    assert ratings["candidate_error_rate"] == round(1 / 1001, 6) == ratings["readiness"]["candidate_error_rate"]
    assert ratings["readiness"]["ready"]  # 0.1 % errors over everything the candidate handled
    assert sum(p["served"] for p in ratings["timeline"]) == 500
    assert images["counts"]["served"] == 800 and images["samples"] == 12
    assert images["candidate_error_rate"] == round(12 / 812, 6)
    assert images["readiness"]["status"] == "insufficient-samples"
    assert "candidate errors 1.48% >= 1.00%" in images["readiness"]["reasons"]
    # Served latencies are the candidate's real latencies (the timeouts' 0.0 is no measurement).
    assert 19 < images["latency_ms"]["candidate"]["p50"] < 22 and images["latency_ms"]["legacy"]["p50"] is None
    [example] = {e["reason"] for e in images["examples"]}
    assert example == "timeout"


def test_text_and_html_show_served_by_target(served_store: Store, tmp_path: Path) -> None:
    page = tmp_path / "served.html"
    out = run("--config", str(served_store.config_path), "--html", str(page))
    assert out.exit_code == 0, out.output
    assert "served by" in out.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.output.splitlines() if line.count("│") > 5}
    # key | samples | match | mismatch | transient | cand. errors | served by target | ...
    assert rows["images"][:6] == ["12", "0.0%", "0.0%", "0", "12", "800"]
    assert rows["ratings"][:6] == ["501", "99.8%", "0.0%", "0", "1", "500"]
    html = page.read_text()
    assert "<th>served by target</th>" in html
    assert '<td class="num">12</td><td class="num">800</td>' in html
    assert "800 served by target (not compared)" in html
