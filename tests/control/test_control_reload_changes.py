"""A typo'd or shrunk strangler.yaml in a running proxy: duplicates are refused, removals are named."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from strangler_proxy.cli import proxy_commands
from strangler_proxy.config import Mode
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN, config_text

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CAST_ROUTE = "  - name: cast\n    path: /api/titles/{id}/cast\n    target: ratings\n"
RATING_FIELD = "  fields:\n    Title.rating: {target: ratings}\n"

app = typer.Typer()
proxy_commands.register(app)


@pytest.fixture
async def running(tmp_path: Path, upstreams, sqlite_url) -> AsyncIterator[tuple[ProxyServer, Path, str]]:
    """A proxy started from a file (no watcher: each test reloads when it means to)."""
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"
    text = config_text(legacy_port=legacy.port, target_port=ratings.port)
    path.write_text(text)
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server:
        yield server, path, text


async def test_a_duplicate_key_saved_into_a_running_proxy_is_refused_and_the_routes_stay(running) -> None:
    server, path, text = running
    lines = text.count("\n")
    path.write_text(text + "routes: []\n")
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.post(f"{server.admin_url}/reload", headers=AUTH)
    assert r.status_code == 400
    [error] = r.json()["errors"]
    assert error.startswith(f"{path}:{lines + 1}: routes: duplicate key 'routes'")
    assert f"line {text.splitlines().index('routes:') + 1} and again on line {lines + 1}" in error
    assert r.json()["removed"] == {"routes": [], "fields": []}
    assert [r.name for r in server.runtime.config.routes] == ["ratings", "cast"]
    assert server.runtime.table.get("ratings").mode is Mode.SHADOW
    assert error in (server.reloader.last_error or "")


async def test_a_reload_that_removes_a_route_and_a_field_names_them_and_their_modes(running, caplog) -> None:
    server, path, text = running
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.post(f"{server.admin_url}/routes/Title.rating/flip", headers=AUTH,
                              json={"mode": "shadow", "reason": "compare it"})
        assert r.status_code == 200, r.text
        assert text.count(CAST_ROUTE) == 1 and text.count(RATING_FIELD) == 1
        path.write_text(text.replace(CAST_ROUTE, "").replace(RATING_FIELD, "  fields: {}\n"))
        with caplog.at_level(logging.INFO, logger="strangler.reload"):
            r = await client.post(f"{server.admin_url}/reload", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] and body["errors"] == []
    assert body["removed"] == {
        "routes": [{"name": "cast", "mode": "legacy", "percent": 0.0, "source": "file"}],
        "fields": [{"name": "Title.rating", "mode": "shadow", "percent": 0.0, "source": "flip"}],
    }
    # The dropped override is a change as before; the answer's old keys are unchanged.
    assert [c["name"] for c in body["changes"]] == ["Title.rating"]
    assert [r.name for r in server.runtime.config.routes] == ["ratings"]
    [record] = [r for r in caplog.records if "new config applied" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith(
        "; removed route(s): cast (legacy); removed GraphQL field(s): Title.rating (shadow, a runtime flip)")


async def test_a_reload_that_removes_nothing_says_so_quietly(running, caplog) -> None:
    server, path, text = running
    path.write_text(text.replace("mode: shadow", "mode: canary").replace("percent: 0", "percent: 5"))
    with caplog.at_level(logging.INFO, logger="strangler.reload"):
        result = await server.reloader.reload_now()
    assert result["ok"] and result["removed"] == {"routes": [], "fields": []}
    [record] = [r for r in caplog.records if "new config applied" in r.getMessage()]
    assert record.levelno == logging.INFO and "removed" not in record.getMessage()


def test_validate_refuses_duplicate_keys_and_invalid_yaml(tmp_path: Path) -> None:
    runner = CliRunner()
    text = config_text()
    dup = tmp_path / "dup.yaml"
    dup.write_text(text.replace("    mode: shadow\n", "    mode: shadow\n    mode: extracted\n"))
    mode_line = text.splitlines().index("    mode: shadow") + 1
    r = runner.invoke(app, ["validate", str(dup)])
    output = " ".join(r.output.split())  # the console may wrap a long line
    assert r.exit_code == 1
    assert f"{dup}:{mode_line + 1}: routes[0].mode: duplicate key 'mode'" in output
    assert f"line {mode_line} and again on line {mode_line + 1}" in output

    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("    methods: [GET]\n", "    methods: [GET\n"))
    methods_line = text.splitlines().index("    methods: [GET]") + 1
    r = runner.invoke(app, ["validate", str(bad), "--json"])
    assert r.exit_code == 1
    [error] = json.loads(r.output)["errors"]
    assert error.startswith(f"{bad}:{methods_line}: routes[0].methods: not valid YAML: line {methods_line}, column 14")
