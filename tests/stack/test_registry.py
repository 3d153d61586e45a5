"""The stack: strangler.yaml's stack: section resolved, refused with file:line:field
when wrong, and a command app run as a real child process."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from legacy_monolith.stack import APP as MONOLITH
from strangler_proxy import migrate
from strangler_proxy.config import load_config, load_config_text
from strangler_proxy.errors import ConfigError, ConfigErrors, StranglerError
from strangler_proxy.stack.components import app_component
from strangler_proxy.stack.registry import load_stack

REPO = Path(__file__).resolve().parents[2]
UPSTREAMS = "upstreams: {legacy: {url: 'http://127.0.0.1:8001'}, orders: {url: 'http://127.0.0.1:8201'}}\n"
# A tiny HTTP program in another language would do as well: this one answers /healthz.
HEALTHY_PROGRAM = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_demo_stack_resolves_from_the_shipped_file() -> None:
    stack = load_stack(load_config(REPO / "strangler.yaml"))
    assert [(a.name, a.port) for a in stack.apps] == [
        ("monolith", 8001), ("ratings", 8101), ("credits", 8102), ("images", 8103)
    ]
    assert stack.legacy().spec is MONOLITH
    assert [a.name for a, _ in stack.services()] == ["ratings", "credits", "images"]
    assert [e.name for e in stack.migrations()] == ["control", "results", "monolith", "ratings", "credits", "images"]
    assert stack.migrations()[:2] == migrate.TOOLKIT_MIGRATIONS
    assert callable(stack.traffic)
    with pytest.raises(ConfigError, match="unknown app 'orders'.*monolith, ratings"):
        stack.app("orders")
    with pytest.raises(ConfigError, match="moves no data"):
        stack.service("monolith")


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_such_module:APP", "cannot import 'no_such_module'"),
        ("legacy_monolith.stack:NOPE", "has no 'NOPE'"),
        ("legacy_monolith.stack:seed", "not a AppSpec"),
    ],
)
def test_a_reference_that_names_no_app_spec_is_refused_with_its_entry(app: str, message: str) -> None:
    config = load_config_text(UPSTREAMS + f"stack: {{apps: [{{name: monolith, app: '{app}', upstream: legacy}}]}}")
    with pytest.raises(ConfigError, match=message) as info:
        load_stack(config)
    assert info.value.field == "stack.apps[0].app"


@pytest.mark.parametrize(
    ("apps", "line", "field", "message"),
    [
        ("- {name: a, app: 'x:Y', command: [./a]}", 4, "stack.apps[0]", "exactly one of app"),
        ("- {name: a, app: 'not a reference'}", 4, "stack.apps[0].app", "module:attribute"),
        ("- {name: orders, command: [./a], upstream: nowhere}", 4, "stack.apps[0].upstream", "not an upstream"),
        ("- {name: billing, command: [./a]}", 4, "stack.apps[0].upstream", "needs an upstream"),
        ("- {name: a, app: 'x:Y'}\n    - {name: a, app: 'x:Z'}", 5, "stack.apps[1].name", "earlier app"),
        ("- {name: control, app: 'x:Y'}", 4, "stack.apps[0].name", "toolkit"),
        ("- {name: orders, command: [./a], health: healthz}", 4, "stack.apps[0].health", "starting with /"),
    ],
)
def test_a_bad_stack_section_is_refused_with_file_line_and_field(apps: str, line: int, field: str,
                                                                 message: str) -> None:
    text = UPSTREAMS + "stack:\n  apps:\n    " + apps + "\n"
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, file="s.yaml")
    (err,) = info.value.errors
    assert (err.file, err.line, err.field) == ("s.yaml", line, field) and message in err.message


async def test_a_command_app_runs_until_its_health_answers_and_stops(tmp_path: Path) -> None:
    program = tmp_path / "orders.py"
    program.write_text(HEALTHY_PROGRAM)
    port = _free_port()
    config = load_config_text(
        f"upstreams: {{legacy: {{url: 'http://127.0.0.1:{port}'}}}}\n"
        f"stack: {{apps: [{{name: orders, command: ['{sys.executable}', '{program}', '{{port}}'], upstream: legacy}}]}}"
    )
    stack = load_stack(config)
    component = app_component(stack.legacy(), config, host="127.0.0.1")
    url = await component.start()
    try:
        assert url == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as resp:
            assert resp.status == 200
    finally:
        await component.stop()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(url + "/healthz"):
                pass


async def test_a_command_that_exits_or_never_gets_healthy_is_an_error(tmp_path: Path) -> None:
    port = _free_port()
    config = load_config_text(
        f"upstreams: {{legacy: {{url: 'http://127.0.0.1:{port}'}}}}\n"
        f"stack: {{apps: [{{name: broken, command: ['{sys.executable}', '-c', 'raise SystemExit(3)'], "
        "upstream: legacy}]}"
    )
    component = app_component(load_stack(config).legacy(), config, host="127.0.0.1")
    with pytest.raises(StranglerError, match="exited with 3"):
        await component.start()
