"""Reports and progress with cells, from a real store whose results are kept per (route, cell)
(``ratings@c1``) by the real ResultWriter, with a real audit log: each route once over all its
cells with a breakdown per cell (text, JSON, HTML), ``--cell``, gates per cell, and progress
grouped by route with each cell judged by its own mode history."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from strangler_proxy import migrate
from strangler_proxy.cli import progress_commands, report_commands
from strangler_proxy.config import Mode, StoreSettings, load_config
from strangler_proxy.control.state_store import FlipAuditRow, RouteStateRow
from strangler_proxy.databases import make_engine
from strangler_proxy.diff.result import Verdict
from strangler_proxy.report.progress import KeyState
from strangler_proxy.report.progress_load import load_progress
from strangler_proxy.store import ResultWriter
from tests.store.factory import result, served

T0 = 1_700_000_040.0  # a multiple of the 60 s bucket
PHASE_S = 600  # phase A: every cell in shadow; phase B: c1 flipped to extracted on its own
NOW = T0 + 2 * PHASE_S - 1
NO_ENV = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None, "COLUMNS": "200"}

YAML = """
upstreams: {{legacy: {{}}, ratings: {{}}, credits: {{}}}}
proxy: {{admin_tokens: {{ops: ops-token}}, admin: {{port: 9}}}}
store: {{url: "{url}"}}
readiness: {{min_samples: 50, max_mismatch_rate: 0.05}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
  - {{name: credits, path: "/api/titles/{{id}}/cast", target: credits, mode: shadow}}
cells:
  partition_key: header:X-Tenant
  cells:
{cells}"""


def yaml_text(url: str) -> str:
    cells = "".join(f'    - {{name: {c}, upstreams: {{legacy: "http://127.0.0.1:{9000 + i}", '
                    f'ratings: "http://127.0.0.1:{9100 + i}", credits: "http://127.0.0.1:{9200 + i}"}}}}\n'
                    for i, c in enumerate(("c1", "c2", "c3")))
    return YAML.format(url=url, cells=cells)


async def _write(url: str) -> None:
    engine = make_engine(url)
    writer = ResultWriter(engine, StoreSettings())
    a, b = T0, T0 + PHASE_S
    for i in range(100):
        writer.observe(result("ratings@c1", Verdict.MATCH, a + i * 5))  # shadow: the monolith served
        writer.observe(served("ratings@c1", b + i * 5))  # extracted in c1: its service served
        writer.observe(result("ratings@c2", Verdict.MATCH, a + i * 5))
        writer.observe(result("ratings@c2", Verdict.MATCH, b + i * 5))
    for i in range(30):  # c2's candidate disagrees on one path
        writer.observe(result("ratings@c2", Verdict.MISMATCH, b + i * 10, diffs=(("$.rating", 7.1, 7.2),)))
    for i in range(20):
        writer.observe(result("ratings@c3", Verdict.MATCH, a + i * 5))
    for i in range(10):  # stored before there were cells
        writer.observe(result("ratings", Verdict.MATCH, a + i * 5))
    for i in range(60):
        writer.observe(result("credits@c2", Verdict.MATCH, a + i * 5))
    await writer.flush()
    await engine.dispose()


async def _audit(url: str) -> None:
    """ratings was flipped to extracted in c1 alone, at the start of phase B; the flip is in force."""
    engine = make_engine(url)
    async with async_sessionmaker(engine).begin() as session:
        session.add(FlipAuditRow(at=dt.datetime.fromtimestamp(T0 + PHASE_S, dt.UTC), name="ratings@c1", who="ops",
                                 kind="flip", from_mode="shadow", from_percent=0.0, to_mode="extracted",
                                 to_percent=0.0, reason="c1 first"))
        session.add(RouteStateRow(name="ratings@c1", mode="extracted", percent=0.0, file_mode="shadow",
                                  file_percent=0.0, version=1, updated_by="ops"))
    await engine.dispose()


@dataclass(frozen=True)
class CellStore:
    url: str
    config_path: Path


@pytest.fixture
def store(tmp_path: Path) -> CellStore:
    url = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"

    async def make() -> None:
        await migrate.upgrade(migrate.RESULTS, url)
        await migrate.upgrade(migrate.CONTROL, url)
        await _write(url)
        await _audit(url)

    asyncio.run(make())
    path = tmp_path / "strangler.yaml"
    path.write_text(yaml_text(url))
    return CellStore(url, path)


def run(*args: str):  # type: ignore[no-untyped-def]
    app = typer.Typer()
    report_commands.register(app)
    progress_commands.register(app)
    return CliRunner().invoke(app, list(args), env=NO_ENV)


def test_json_shows_each_route_once_with_a_breakdown_per_cell(store: CellStore) -> None:
    out = run("report", "--config", str(store.config_path), "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [k["key"] for k in doc["keys"]] == ["credits", "ratings"]  # no ratings@c1 of its own
    ratings = next(k for k in doc["keys"] if k["key"] == "ratings")
    assert ratings["cell"] is None and ratings["samples"] == 100 + 230 + 20 + 10
    assert (ratings["counts"]["mismatch"], ratings["counts"]["served"]) == (30, 100)
    assert ratings["top_paths"] == [{"path": "$.rating", "kind": "value", "count": 30}]
    cells = {c["cell"]: c for c in ratings["cells"]}
    assert list(cells) == ["c1", "c2", "c3"]
    assert {c: (x["key"], x["samples"], x["readiness"]["status"]) for c, x in cells.items()} == {
        "c1": ("ratings@c1", 100, "ready"), "c2": ("ratings@c2", 230, "not-ready"),
        "c3": ("ratings@c3", 20, "insufficient-samples")}
    assert cells["c2"]["top_paths"] == ratings["top_paths"] and cells["c1"]["counts"]["served"] == 100
    assert ratings["ready"] is False and doc["ready"] is False
    assert any(e["key"] == "ratings@c2" and e["verdict"] == "mismatch" for e in ratings["examples"])
    credits = next(k for k in doc["keys"] if k["key"] == "credits")
    assert [(c["cell"], c["samples"]) for c in credits["cells"]] == [("c1", 0), ("c2", 60), ("c3", 0)]


def test_text_and_html_show_a_line_per_cell(store: CellStore, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    out = run("report", "--config", str(store.config_path), "--html", str(page))
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if line.count("│") > 5]
    labels = [line.split("│")[1].strip() for line in rows]
    # Each route once, its cells under it (the labels repeat per route: read them in order).
    assert labels == ["credits", "@c1", "@c2", "@c3", "ratings", "@c1", "@c2", "@c3"], out.output
    assert "360" in rows[4]
    assert "230" in rows[6] and "13.0%" in rows[6] and "not ready" in rows[6]
    html = page.read_text()
    assert 'class="cell-row"' in html and 'data-key="ratings@c2"' in html and "<h3>Per cell</h3>" in html
    assert 'data-cell="c3"' in html and "insufficient samples (20/50)" in html


def test_cell_filters_to_one_cell_and_gates_per_cell(store: CellStore) -> None:
    out = run("report", "--config", str(store.config_path), "--json", "--cell", "c2")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["cell"] == "c2"
    assert [(k["key"], k["cell"], k["samples"]) for k in doc["keys"]] == [
        ("credits@c2", "c2", 60), ("ratings@c2", "c2", 230)]
    assert all(k["cells"] == [] for k in doc["keys"])

    ok = run("report", "--config", str(store.config_path), "--cell", "c1", "--gate", "ratings")
    assert ok.exit_code == 0 and "gate PASS ratings@c1: ready" in ok.output, ok.output
    bad = run("report", "--config", str(store.config_path), "--cell", "c2", "--gate", "ratings")
    assert bad.exit_code == 1 and "gate FAIL ratings@c2: not ready" in bad.output
    # Over every cell: ready nowhere but c1, so the route's gate says which cells hold it back.
    whole = run("report", "--config", str(store.config_path), "--gate", "ratings")
    assert whole.exit_code == 1
    line = next(x for x in whole.output.splitlines() if x.startswith("gate FAIL ratings"))
    assert "in c2: not ready" in line and "in c3: insufficient samples (20/50)" in line and "in c1" not in line

    unknown = run("report", "--config", str(store.config_path), "--cell", "c9")
    assert unknown.exit_code == 2 and "no such cell 'c9' (cells: c1, c2, c3)" in unknown.output


async def test_progress_counts_each_cell_once_under_its_route_by_its_own_mode(store: CellStore) -> None:
    engine = make_engine(store.url)
    try:
        p = await load_progress(engine, load_config(store.config_path), now=NOW, points=2)
    finally:
        await engine.dispose()
    keys = {k.key: k for k in p.keys}
    assert list(keys) == ["credits", "ratings"]
    ratings = keys["ratings"]
    assert (ratings.served.extracted, ratings.served.requests) == (100, 460)
    cells = {c.cell: c for c in ratings.cells}
    assert list(cells) == ["c1", "c2", "c3"]
    # c1: shadow in phase A (the monolith served 100), extracted in phase B (its service served 100).
    assert [(x.served.extracted, x.served.requests) for x in cells["c1"].points] == [(0, 100), (100, 100)]
    assert cells["c1"].state == KeyState(Mode.EXTRACTED, 0.0, "flip")
    assert cells["c2"].state == ratings.state == KeyState(Mode.SHADOW, 0.0, "file")  # follows the route
    assert (cells["c2"].served.requests, cells["c3"].served.requests) == (230, 20)
    assert cells["c1"].readiness.status == "ready" and ratings.readiness.status == "not-ready"
    # No double count: the overall is the routes', each once.
    assert (p.served.extracted, p.served.requests) == (100, 460 + 60)


def test_the_progress_command_lists_routes_with_their_cells(store: CellStore) -> None:
    out = run("progress", "--config", str(store.config_path), "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [k["key"] for k in doc["keys"]] == ["credits", "ratings"]
    assert doc["overall"]["requests"] == 520
    [c1] = [c for c in doc["keys"][1]["cells"] if c["cell"] == "c1"]
    assert (c1["key"], c1["mode"], c1["source"], c1["served"]["extracted"]) == ("ratings@c1", "extracted", "flip", 100)
    text = run("progress", "--config", str(store.config_path))
    assert "@c1" in text.output and "extracted (flip)" in text.output and "ratings@c1" not in text.output


def test_the_running_proxys_per_cell_states_are_read_from_get_routes() -> None:
    body = {"cells": {"ratings": [
        {"cell": "c1", "mode": "extracted", "percent": 0.0, "source": "cell", "flipped_by": "ops"},
        {"cell": "c2", "mode": "canary", "percent": 5.0, "source": "global", "flipped_by": None}]}}
    states = progress_commands.cell_states(body)
    assert (states["ratings@c1"].mode, states["ratings@c1"].source, states["ratings@c1"].flipped_by) == (
        Mode.EXTRACTED, "flip", "ops")
    assert (states["ratings@c2"].mode, states["ratings@c2"].percent, states["ratings@c2"].source) == (
        Mode.CANARY, 5.0, "file")
    assert progress_commands.cell_states({"cells": None}) == {}
