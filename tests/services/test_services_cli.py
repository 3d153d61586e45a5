"""`strangler backfill` and `strangler sync` end to end through the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from strangler_proxy.cli.main import _register_all, app
from tests.services.conftest import make_monolith_db, sqlite_url

_register_all()
REPO = Path(__file__).resolve().parents[2]


def test_backfill_verify_and_sync_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo's strangler.yaml (its stack: section); URLs come from the environment
    shutil.copy(REPO / "strangler.yaml", tmp_path / "strangler.yaml")
    mono = asyncio.run(make_monolith_db(tmp_path / "monolith.sqlite3", titles=30))
    monkeypatch.setenv("STRANGLER_MONOLITH_DATABASE_URL", mono)
    monkeypatch.setenv("STRANGLER_RATINGS_DATABASE_URL", sqlite_url(tmp_path / "ratings.sqlite3"))
    runner = CliRunner()

    result = runner.invoke(app, ["backfill", "ratings", "--verify", "--json", "--batch-size", "50"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["ok"] and [t["table"] for t in out["tables"]] == ["titles", "ratings", "votes"]
    assert out["total"]["rows"] == sum(t["rows"] for t in out["tables"]) > 0
    assert out["total"]["rows_per_second"] > 0

    result = runner.invoke(app, ["backfill", "ratings"])  # the table and progress output
    assert result.exit_code == 0 and "rows/s" in result.output

    result = runner.invoke(app, ["sync", "ratings", "--once", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["applied"] == 0

    result = runner.invoke(app, ["sync", "images", "--once"])
    assert result.exit_code == 1 and "backfill-only" in result.output

    result = runner.invoke(app, ["backfill", "orders"])  # the stack knows no such app, and says which it knows
    assert result.exit_code == 1 and "unknown app 'orders'" in result.output and "ratings" in result.output



async def test_up_backfills_a_service_once(monolith_url, service_db, engines):
    from extracted_services.common.registry import service_spec
    from strangler_proxy.datamove.backfill import verify
    from strangler_proxy.datamove.plan import backfill_unless_done

    spec = service_spec("credits")
    assert spec.datamove is not None
    url = await service_db("credits")
    assert await backfill_unless_done(spec.datamove, monolith_url, url) is True
    assert await backfill_unless_done(spec.datamove, monolith_url, url) is False  # a restart does not copy again
    assert all(c.ok for c in await verify(spec.datamove.backfill, engines(monolith_url), engines(url)))
