"""Transient results (mismatches gone when asked again) in all three report formats: their own
verdict and column, apart from mismatches, never in the samples or the mismatch rate."""

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
from tests.store.factory import BASE_T, migrated_sqlite, result

YAML = """
upstreams:
  legacy: {{url: "http://127.0.0.1:8001"}}
  ratings: {{url: "http://127.0.0.1:8101"}}
store: {{url: "{url}"}}
readiness: {{min_samples: 100}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
  - {{name: images, path: "/api/titles/{{id}}/images", target: ratings, mode: shadow}}
"""


async def _populate(url: str) -> None:
    eng = make_engine(url)
    writer = ResultWriter(eng, StoreSettings())
    for i in range(500):  # reads, 46 of which raced a vote: transient, not mismatches
        verdict = Verdict.TRANSIENT if i % 11 == 0 else Verdict.MATCH
        diffs = (("$.num_votes", 8, 7),) if verdict is Verdict.TRANSIENT else ()
        writer.observe(result("ratings", verdict, BASE_T + i, diffs=diffs))
    for i in range(120):  # a real divergence, rechecked and still different
        writer.observe(result("images", Verdict.MISMATCH, BASE_T + i, diffs=(("$.images[0].url", "a", "b"),)))
    await writer.flush()
    await eng.dispose()


@pytest.fixture
def transient_store(tmp_path: Path) -> Store:
    url = asyncio.run(migrated_sqlite(tmp_path, "transient"))
    config_path = tmp_path / "strangler.yaml"
    config_path.write_text(YAML.format(url=url))
    asyncio.run(_populate(url))
    return Store(url, config_path)


def test_json_counts_transients_apart_and_readiness_ignores_them(transient_store: Store) -> None:
    out = run("--config", str(transient_store.config_path), "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["schema"] == "strangler.report/v1"  # a key added, nothing renamed
    keys = {k["key"]: k for k in doc["keys"]}
    ratings, images = keys["ratings"], keys["images"]
    assert ratings["counts"] == {"match": 454, "mismatch": 0, "candidate_error": 0, "legacy_error": 0,
                                 "skipped": 0, "served": 0, "transient": 46, "total": 500}
    assert ratings["samples"] == 454 and ratings["mismatch_rate"] == 0.0
    assert ratings["top_paths"] == [] and ratings["examples"] == []  # a transient path is no differing path
    assert ratings["readiness"]["ready"], ratings["readiness"]["label"]
    assert sum(p["transient"] for p in ratings["timeline"]) == 46
    assert images["counts"]["transient"] == 0 and images["counts"]["mismatch"] == 120
    assert not images["readiness"]["ready"]


def test_text_and_html_have_a_transient_column(transient_store: Store, tmp_path: Path) -> None:
    page = tmp_path / "transient.html"
    out = run("--config", str(transient_store.config_path), "--html", str(page))
    assert out.exit_code == 0, out.output
    header = next(line for line in out.output.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:6]] == ["key", "samples", "match", "mismatch", "transient"]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.output.splitlines() if line.count("│") > 5}
    # key | samples | match | mismatch | transient | cand. errors | ...
    assert rows["ratings"][:5] == ["454", "100.0%", "0.0%", "46", "0"]
    assert rows["images"][:5] == ["120", "0.0%", "100.0%", "0", "0"]
    html = page.read_text()
    assert "<th>mismatch</th><th>transient</th>" in html
    assert '<td class="num">0.0%</td><td class="num">46</td>' in html
    assert "46 transient (gone when asked again)" in html
