"""The CLI against an admin API (and ``strangler traffic`` against a proxy) that fails in every
way a network and a server can: each ends in one line saying what happened and a non-zero exit,
never a traceback.

The failures are staged with respx at the httpx transport (no server runs): connection refused,
timeouts, 401/403/500 and a load balancer's HTML 502, a body that is not JSON, a body cut off
midway, JSON of another shape. The happy paths run against real servers in test_control_cli.py
and tests/stack/test_traffic.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import typer
from typer.testing import CliRunner, Result

from strangler_proxy.cli import proxy_commands, traffic_commands

ADMIN = "http://127.0.0.1:9901"
PROXY = "http://127.0.0.1:8080"
REPO = Path(__file__).resolve().parents[2]
NO_ENV = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None}


class CutOff(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that stops midway, as when the server dies while writing it."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def cut_off(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "application/json", "Content-Length": "4096"},
                          stream=CutOff(b'{"routes": [{"name": "rat'))


def admin_error(status: int, code: str, message: str) -> httpx.Response:
    """The admin API's own error shape."""
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


LB_PAGE = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n</body>\n</html>\n"

# name -> (what the admin API does, words the one line must contain)
ADMIN_FAILURES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "connection refused": (httpx.ConnectError("[Errno 111] Connection refused"), ("cannot reach", ADMIN)),
    "connect timeout": (httpx.ConnectTimeout("timed out"), ("did not answer within 10 s",)),
    "read timeout": (httpx.ReadTimeout("timed out"), ("did not answer within 10 s",)),
    "401": (admin_error(401, "unauthorized", "send Authorization: Bearer <admin token>"),
            ("401", "--token", "STRANGLER_ADMIN_TOKEN")),
    "403": (admin_error(403, "forbidden", "this token is not an admin token"), ("403", "not an admin token")),
    "500": (admin_error(500, "internal", "routes: the admin API failed (error id 0123456789ab; the details are in "
                                         "the proxy's log)"), ("500", "error id 0123456789ab")),
    "502 from a load balancer": (httpx.Response(502, text=LB_PAGE, headers={"Content-Type": "text/html"}),
                                 ("502", "Bad Gateway")),
    "malformed JSON": (httpx.Response(200, content=b'{"routes": [', headers={"Content-Type": "application/json"}),
                       ("not JSON",)),
    "an HTML page": (httpx.Response(200, text="<html><body>hello</body></html>", headers={"Content-Type": "text/html"}),
                     ("not JSON", "text/html")),
    "half-written body": (cut_off, ("broke off", "RemoteProtocolError")),
    "JSON of another shape": (httpx.Response(200, json=["not", "an", "object"]), ("not what this strangler expects",)),
    "an empty object": (httpx.Response(200, json={}), ("not what this strangler expects",)),
    "markup in a message": (httpx.Response(500, text="[/bold] [red]boom"), ("500", "[/bold] [red]boom")),
}

COMMANDS = {
    "routes": (["routes"], "GET", "/routes"),
    "flip": (["flip", "ratings", "canary", "--percent", "5", "--reason", "r"], "POST", "/routes/ratings/flip"),
    "audit": (["audit"], "GET", "/audit"),
}


def error_lines(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def assert_one_line_failure(result: Result, code: int | None = None) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code != 0 if code is None else result.exit_code == code, (result.exit_code, result.output)
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("failure", list(ADMIN_FAILURES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_admin_api_failures_end_in_one_line(command: str, failure: str, tmp_path: Path) -> None:
    args, method, path = COMMANDS[command]
    effect, words = ADMIN_FAILURES[failure]
    app = typer.Typer()
    proxy_commands.register(app)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.request(method, f"{ADMIN}{path}")
        if isinstance(effect, httpx.Response):
            route.mock(return_value=effect)
        else:
            route.mock(side_effect=effect)
        result = CliRunner().invoke(app, [*args, "--admin-url", ADMIN, "--token", "t",
                                          "--config", str(tmp_path / "none.yaml")], env=NO_ENV)
    line = assert_one_line_failure(result, code=1)
    for word in words:
        assert word in line, (word, line)
    assert route.calls.last.request.headers["Authorization"] == "Bearer t"


def test_a_refused_flip_still_says_every_reason() -> None:
    """The one case with more than one line: the admin API refused for several reasons."""
    app = typer.Typer()
    proxy_commands.register(app)
    with respx.mock() as mock:
        mock.post(f"{ADMIN}/routes/ratings/flip").mock(return_value=httpx.Response(
            400, json={"errors": ["ratings: percent 120 is not in 0..100", "ratings: canary needs a target"]}))
        result = CliRunner().invoke(app, ["flip", "ratings", "canary", "--admin-url", ADMIN], env=NO_ENV)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "percent 120" in result.output and "canary needs a target" in result.output


# ---------------------------------------------------------------- strangler traffic

def traffic(*args: str) -> Result:
    app = typer.Typer()
    traffic_commands.register(app)
    return CliRunner().invoke(app, ["--url", PROXY, "--config", str(REPO / "strangler.yaml"), *args])


DISCOVERY_FAILURES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "connection refused": (httpx.ConnectError("[Errno 111] Connection refused"), ("cannot find out", "--titles")),
    "read timeout": (httpx.ReadTimeout("timed out"), ("cannot find out", "timed out")),
    "401": (httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}}), ("401",)),
    "403": (httpx.Response(403, text="forbidden"), ("403",)),
    "500": (httpx.Response(500, text="Internal Server Error\n\ntraceback of the app"), ("500",)),
    "502 from a load balancer": (httpx.Response(502, text=LB_PAGE, headers={"Content-Type": "text/html"}), ("502",)),
    "malformed JSON": (httpx.Response(200, content=b'{"total": ', headers={"Content-Type": "application/json"}),
                       ("cannot find out",)),
    "half-written body": (cut_off, ("cannot find out",)),
    "JSON of another shape": (httpx.Response(200, json=[1, 2]), ("total=None",)),
}


@pytest.mark.parametrize("failure", list(DISCOVERY_FAILURES))
def test_traffic_that_cannot_ask_the_catalogue_sends_nothing(failure: str) -> None:
    effect, words = DISCOVERY_FAILURES[failure]
    with respx.mock(assert_all_called=False) as mock:
        titles = mock.get(f"{PROXY}/api/titles")
        if isinstance(effect, httpx.Response):
            titles.mock(return_value=effect)
        else:
            titles.mock(side_effect=effect)
        # strangler.yaml has no cells: traffic asks the running proxy's admin API for them.
        mock.get(f"{ADMIN}/config").mock(return_value=httpx.Response(200, json={"config": {"cells": None}}))
        anything_else = mock.route().mock(return_value=httpx.Response(200, json={}))
        result = traffic("--duration", "0.2", "--rate", "20")
    line = assert_one_line_failure(result, code=2)
    for word in words:
        assert word in line, (word, line)
    assert titles.called and not anything_else.called


RUN_FAILURES: dict[str, Any] = {
    "connection refused": httpx.ConnectError("[Errno 111] Connection refused"),
    "read timeout": httpx.ReadTimeout("timed out"),
    "half-written body": cut_off,
    "500": httpx.Response(500, text="boom"),
}


@pytest.mark.parametrize("failure", list(RUN_FAILURES))
@pytest.mark.parametrize("as_json", [False, True])
def test_traffic_whose_requests_fail_says_so_and_exits_1(failure: str, as_json: bool) -> None:
    effect = RUN_FAILURES[failure]
    with respx.mock() as mock:
        route = mock.route()
        if isinstance(effect, httpx.Response):
            route.mock(return_value=effect)
        else:
            route.mock(side_effect=effect)
        result = traffic("--duration", "0.3", "--rate", "30", "--titles", "20", *(["--json"] if as_json else []))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert route.call_count >= 5
    if as_json:
        assert '"failed": true' in result.output
    else:
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("more than 1% of the requests failed:"), last


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://127.0.0.1/", "http://"])
def test_traffic_refuses_a_url_it_cannot_send_to(url: str) -> None:
    app = typer.Typer()
    traffic_commands.register(app)
    with respx.mock(assert_all_called=False) as mock:
        anything = mock.route().mock(return_value=httpx.Response(200, json={"total": 5}))
        result = CliRunner().invoke(app, ["--url", url, "--duration", "0.2"])
    line = assert_one_line_failure(result, code=2)
    assert "--url" in line and not anything.called


def test_one_line_examples() -> None:
    import doctest

    from strangler_proxy.cli import common

    failed, attempted = doctest.testmod(common)
    assert attempted > 0 and failed == 0
