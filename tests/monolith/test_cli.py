"""`strangler db ...`, `strangler seed`, the `up` stack runner, docker-compose.yml."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import typer
from typer.testing import CliRunner

from legacy_monolith.stack import APP
from strangler_proxy.cli import db_commands, stack_commands
from strangler_proxy.stack.apps import SeedRequest
from strangler_proxy.stack.components import Component, run_stack
from strangler_proxy.stack.runners import AppServer
from tests.monolith.helpers import scalar

REPO = Path(__file__).resolve().parents[2]
# The stack section of the repo's strangler.yaml: how the CLI finds the demo's apps.
STACK_SECTION = (REPO / "strangler.yaml").read_text().partition("\nstack:\n")[2]


def monolith_component(url: str, *, host: str, port: int, titles: int | None, seed: int) -> Component:
    """The demo monolith as `strangler up` runs it: migrated, seeded when empty (if ``titles``), served."""
    request = SeedRequest(size=titles, seed=seed, if_empty=True) if titles else None
    server = AppServer("monolith", APP, url, host=host, port=port, seed=request)
    return Component("monolith", server.start, server.stop)


@pytest.fixture
def cli(data_dir: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> typer.Typer:
    monkeypatch.chdir(tmp_path)  # a strangler.yaml with only the demo's stack: database defaults apply
    (tmp_path / "strangler.yaml").write_text(
        "upstreams:\n  legacy: {url: 'http://127.0.0.1:8001'}\nstack:\n" + STACK_SECTION
    )
    for name in ("STRANGLER_DATABASE_URL", "STRANGLER_MONOLITH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    app = typer.Typer()
    db_commands.register(app)
    stack_commands.register(app)
    return app


def test_db_upgrade_seed_downgrade(cli: typer.Typer, data_dir: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "upgrade", "--database", "monolith", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["database"] == "monolith" and row["url"].endswith("monolith.sqlite3")
    url = f"sqlite+aiosqlite:///{Path(data_dir) / 'monolith.sqlite3'}"

    result = runner.invoke(cli, ["seed", "--titles", "40", "--seed", "9", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"]["titles"] == 40
    result = runner.invoke(cli, ["seed", "--titles", "40"])
    assert result.exit_code == 1 and "--replace" in result.output
    result = runner.invoke(cli, ["seed", "--if-empty", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["seeded"] is False

    result = runner.invoke(cli, ["db", "downgrade", "monolith", "0001"])
    assert result.exit_code == 0, result.output
    assert asyncio.run(scalar(url, "SELECT version_num FROM alembic_version_monolith")) == "0001"
    result = runner.invoke(cli, ["db", "downgrade", "nope", "base"])
    assert result.exit_code == 1 and "unknown database 'nope'" in result.output


def test_db_upgrade_puts_the_results_store_in_the_control_database(cli: typer.Typer, data_dir: str) -> None:
    """The proxy writes results into the control database; the CLI must migrate them there."""
    result = CliRunner().invoke(cli, ["db", "upgrade", "--json"])
    assert result.exit_code == 0, result.output
    urls = {row["database"]: row["url"] for row in json.loads(result.stdout)}
    assert urls["results"] == urls["control"] and urls["control"].endswith("control.sqlite3")
    control = f"sqlite+aiosqlite:///{Path(data_dir) / 'control.sqlite3'}"
    assert asyncio.run(scalar(control, "SELECT count(*) FROM result_buckets")) == 0
    assert not (Path(data_dir) / "results.sqlite3").exists()


def test_strangler_yaml_databases_key_is_honoured(cli: typer.Typer, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.sqlite3"
    (tmp_path / "strangler.yaml").write_text(
        "upstreams:\n  legacy: {url: 'http://127.0.0.1:8001'}\n"
        f"databases:\n  monolith: 'sqlite+aiosqlite:///{target}'\n"
        "stack:\n" + STACK_SECTION
    )
    result = CliRunner().invoke(cli, ["db", "upgrade", "--database", "monolith", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["url"].endswith("elsewhere.sqlite3") and target.is_file()


async def test_up_starts_serves_and_stops(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}"
    stop = asyncio.Event()
    ready: list[list[tuple[str, str]]] = []
    component = monolith_component(url, host="127.0.0.1", port=0, titles=30, seed=1)
    runner = asyncio.create_task(run_stack([component], stop, ready.append))
    for _ in range(200):
        if ready:
            break
        await asyncio.sleep(0.05)
    ((name, base),) = ready[0]
    assert name == "monolith"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/titles?limit=1") as resp:
            assert resp.status == 200 and (await resp.json())["total"] == 30  # migrated and seeded
        stop.set()
        assert await asyncio.wait_for(runner, 10) == [("monolith", base)]
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(base + "/healthz"):
                pass


async def test_up_stops_started_components_when_one_fails(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}"
    first = monolith_component(url, host="127.0.0.1", port=0, titles=10, seed=1)
    base = await first.start()
    port = int(base.rsplit(":", 1)[1])
    try:
        second_url = f"sqlite+aiosqlite:///{tmp_path / 'n.sqlite3'}"
        third = monolith_component(second_url, host="127.0.0.1", port=0, titles=None, seed=1)
        clash = monolith_component(second_url, host="127.0.0.1", port=port, titles=None, seed=1)
        started: list[str] = []

        async def note_start() -> str:
            started.append(await third.start())
            return started[-1]

        with pytest.raises(OSError):
            await run_stack([Component("third", note_start, third.stop), clash], asyncio.Event())
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.get(started[0] + "/healthz"):
                    pass
    finally:
        await first.stop()


def test_docker_compose_config_is_valid() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is required in CI (scripts/ensure-test-services installs it)")
        pytest.skip("docker-compose is not installed")
    done = subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
