"""`strangler routes|flip|audit|validate|proxy` against real running admin servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from strangler_proxy.cli import proxy_commands
from strangler_proxy.cli.proxy_commands import admin_target
from strangler_proxy.config import load_config
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN, config_text

# Only these commands: other areas' modules cannot break these tests (the subprocess test
# below goes through the real entry point, strangler_proxy.cli.main).
app = typer.Typer()
proxy_commands.register(app)
runner = CliRunner()
NO_ENV = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None}


async def cli(*args: str, env: dict[str, str | None] | None = None):  # type: ignore[no-untyped-def]
    """Invoke the CLI in a thread so the admin server on this loop can answer it."""
    return await asyncio.to_thread(runner.invoke, app, list(args), env={**NO_ENV, **(env or {})})


@pytest.fixture
async def proxy(tmp_path: Path, upstreams, sqlite_url):  # type: ignore[no-untyped-def]
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text(legacy_port=legacy.port, target_port=ratings.port))
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server:
        yield server, path


async def test_routes_flip_and_audit_print_tables_and_json(proxy) -> None:
    server, _ = proxy
    where = ["--admin-url", server.admin_url, "--token", ADMIN_TOKEN]

    r = await cli("routes", *where)
    assert r.exit_code == 0, r.output
    assert "ratings" in r.output and "shadow" in r.output and "Title.rating" in r.output

    r = await cli("flip", "ratings", "canary", "--percent", "5", "--reason", "first step", *where)
    assert r.exit_code == 0, r.output
    assert "canary 5%" in r.output and "ops" in r.output
    assert server.runtime.table.get("ratings").percent == 5.0

    r = await cli("routes", "--json", *where)
    ratings = next(x for x in json.loads(r.output)["routes"] if x["name"] == "ratings")
    assert (ratings["mode"], ratings["percent"], ratings["source"]) == ("canary", 5.0, "flip")

    r = await cli("audit", "--json", "--route", "ratings", *where)
    [entry] = json.loads(r.output)["entries"]
    assert (entry["who"], entry["reason"], entry["to"]["percent"]) == ("ops", "first step", 5.0)
    r = await cli("audit", *where)
    assert r.exit_code == 0 and "first step" in r.output

    r = await cli("flip", "ratings", "canary", "--percent", "5", *where)
    assert r.exit_code == 0 and "nothing changed" in r.output


async def test_the_cli_finds_url_in_the_env_and_token_in_the_config_file(proxy) -> None:
    server, path = proxy
    r = await cli("flip", "ratings", "extracted", "--config", str(path), env={"STRANGLER_ADMIN_URL": server.admin_url})
    assert r.exit_code == 0, r.output
    assert server.flips.stored("ratings").updated_by == "ops"  # the first token of the file is "ops"
    # STRANGLER_ADMIN_TOKEN beats the file's token (and is a token the server knows: it reads the env too).
    r = await cli("routes", "--config", str(path),
                  env={"STRANGLER_ADMIN_URL": server.admin_url, "STRANGLER_ADMIN_TOKEN": "robot-token"})
    assert r.exit_code == 0, r.output


async def test_refusals_exit_non_zero_with_the_reason(proxy) -> None:
    server, _ = proxy
    r = await cli("routes", "--admin-url", server.admin_url, "--token", "wrong")
    assert r.exit_code == 1 and "403" in r.output
    r = await cli("flip", "ratings", "sideways", "--admin-url", server.admin_url, "--token", ADMIN_TOKEN)
    assert r.exit_code == 1 and "unknown mode 'sideways'" in r.output
    r = await cli("flip", "nope", "shadow", "--admin-url", server.admin_url, "--token", ADMIN_TOKEN)
    assert r.exit_code == 1 and "404" in r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = await cli("routes", "--admin-url", dead, "--token", ADMIN_TOKEN)
    assert r.exit_code == 1 and "cannot reach the admin API" in r.output


def test_admin_target_reads_the_config_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("STRANGLER_ADMIN_URL", raising=False)
    monkeypatch.delenv("STRANGLER_ADMIN_TOKEN", raising=False)
    path = tmp_path / "s.yaml"
    path.write_text(config_text().replace("proxy:\n", "proxy:\n  admin: {port: 9999}\n"))
    assert admin_target(str(path), None, None) == ("http://127.0.0.1:9999", ADMIN_TOKEN)
    assert admin_target(str(tmp_path / "missing.yaml"), None, None) == ("http://127.0.0.1:9901", None)
    monkeypatch.setenv("STRANGLER_ADMIN_TOKEN", "from-env")
    assert admin_target(str(path), "http://h:1/", None) == ("http://h:1", "from-env")


def test_validate_reports_every_error_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: {legacy: {url: 'http://127.0.0.1:1'}}\nroutes:\n"
                   "  - {name: a, path: /a, mode: shaddow}\n  - {name: b, path: nope}\n")
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 1
    assert f"{bad}:3: routes[0].mode" in r.output and f"{bad}:4: routes[1].path: must start with '/'" in r.output
    shipped = Path(__file__).parents[2] / "strangler.yaml"
    r = runner.invoke(app, ["validate", str(shipped), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["routes"] == len(load_config(shipped).routes) > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_strangler_proxy_runs_alone_and_stops_on_sigterm(tmp_path: Path, upstreams) -> None:
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text(legacy_port=legacy.port, target_port=ratings.port))
    port, admin_port = _free_port(), _free_port()
    env = {**os.environ, "STRANGLER_DATA_DIR": str(tmp_path / "data")}
    env.pop("STRANGLER_ADMIN_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "strangler_proxy.cli.main", "proxy", "--config", str(path), "--port", str(port),
         "--admin-port", str(admin_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    r = await client.get(f"http://127.0.0.1:{admin_port}/healthz",
                                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                    break
                except httpx.ConnectError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        pytest.fail(f"the proxy did not start:\n{proc.communicate(timeout=5)}")
                    await asyncio.sleep(0.1)
            assert r.status_code == 200
            assert (await client.get(f"http://127.0.0.1:{port}/api/titles/tt1/ratings")).json()["value"] == 42
            r = await cli("flip", "ratings", "extracted", "--config", str(path))  # url and token from the file
            assert r.exit_code != 0  # the file names port 9901, not the one we started on...
            r = await cli("flip", "ratings", "extracted", "--config", str(path),
                          env={"STRANGLER_ADMIN_URL": f"http://127.0.0.1:{admin_port}"})
            assert r.exit_code == 0, r.output
    finally:
        out = err = ""
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"listening on http://127.0.0.1:{port}" in out
    # stdout carries the access log: one bare JSON object per request line
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {"route": "ratings", "method": "GET", "target": "/api/titles/tt1/ratings", "status": 200}.items() <= \
        access[0].items()
    assert "strangler.server" in err and "aiohttp.access" not in err + out  # diagnostics on stderr, no text copy
