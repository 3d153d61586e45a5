"""`strangler plan`: the pure comparison (control/plan.py), GET /config, and the CLI
against a real running proxy -- whose reload then does what the plan said."""

from __future__ import annotations

import asyncio
import doctest
import json
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from strangler_proxy.cli import plan_commands
from strangler_proxy.config import Mode, StranglerConfig, load_config_text
from strangler_proxy.control import config_view as config_view_module
from strangler_proxy.control import plan as plan_module
from strangler_proxy.control.config_view import REDACTED, config_view
from strangler_proxy.control.plan import (
    Added,
    ModeChange,
    Removed,
    RunningState,
    SettingChange,
    State,
    make_plan,
)
from strangler_proxy.server import ProxyServer

from .conftest import ADMIN_TOKEN, config_text, make_config

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_the_examples_hold() -> None:
    for module in (plan_module, config_view_module):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, module.__name__


# ------------------------------------------------------------------ pure function


def from_file(config: StranglerConfig) -> dict[str, RunningState]:
    """The states of a proxy running ``config`` with no flip in force."""
    out = {}
    for r in config.routes:
        out[r.name] = RunningState(r.name, r.mode, float(r.percent), "file", r.mode, float(r.percent))
    for name, f in config.graphql.fields.items():
        out[name] = RunningState(name, f.mode, float(f.percent), "file", f.mode, float(f.percent))
    return out


def flipped(states: dict[str, RunningState], name: str, mode: Mode, percent: float = 0.0) -> dict[str, RunningState]:
    s = states[name]
    return {**states, name: RunningState(name, mode, percent, "flip", s.file_mode, s.file_percent, "ops")}


def test_the_same_file_plans_nothing_even_with_flips_in_force() -> None:
    config = make_config()
    states = flipped(from_file(config), "ratings", Mode.CANARY, 10.0)
    assert make_plan(config_view(config), make_config(), states).changes == ()


def test_a_file_value_changed_under_a_flip_wins_and_the_plan_says_why() -> None:
    running = make_config(ratings_mode="shadow")
    states = flipped(from_file(running), "ratings", Mode.CANARY, 10.0)
    plan = make_plan(config_view(running), make_config(ratings_mode="extracted"), states)
    [change] = plan.changes
    assert isinstance(change, ModeChange) and change.name == "ratings" and change.kind == "route"
    assert change.before == State(Mode.CANARY, 10.0, "flip", "ops")
    assert change.after == State(Mode.EXTRACTED, 0.0, "file")
    assert "was shadow 0% when flipped by ops" in change.reason and "wins over the runtime flip" in change.reason
    assert change.as_json()["serves_differently"] is True


def test_a_flip_stays_when_only_other_things_change() -> None:
    running = make_config()
    states = flipped(from_file(running), "ratings", Mode.EXTRACTED)
    new = make_config(extra="compare: {ignore: ['$..request_id']}\n")
    plan = make_plan(config_view(running), new, states)
    assert plan.of(ModeChange) == []
    [change] = plan.changes
    assert isinstance(change, SettingChange)
    assert (change.path, change.topic, change.before, change.after, change.applies) == (
        "compare.ignore", "compare", [], ["$..request_id"], "reload")


def test_a_changed_percent_outside_canary_still_ends_a_flip() -> None:
    """The file's value is mode *and* percent: editing the percent of a shadow route is a
    change of the file's value, so it ends an extracted flip (what a reload does)."""
    running = make_config(ratings_mode="shadow", ratings_percent=0)
    states = flipped(from_file(running), "ratings", Mode.EXTRACTED)
    [change] = make_plan(config_view(running), make_config(ratings_mode="shadow", ratings_percent=10), states).changes
    assert isinstance(change, ModeChange)
    assert (change.before.mode, change.after.mode, change.after.source) == (Mode.EXTRACTED, Mode.SHADOW, "file")


def test_a_file_that_agrees_with_the_flip_takes_it_over() -> None:
    running = make_config(ratings_mode="shadow")
    states = flipped(from_file(running), "ratings", Mode.CANARY, 25.0)
    [change] = make_plan(config_view(running), make_config(ratings_mode="canary", ratings_percent=25), states).changes
    assert isinstance(change, ModeChange) and change.before.same_effect(change.after)
    assert (change.before.source, change.after.source) == ("flip", "file")
    assert "canary 25% (flip by ops) -> canary 25% (file)" in change.describe()


def test_a_flip_the_new_file_makes_impossible_is_dropped() -> None:
    running = make_config()
    states = flipped(from_file(running), "cast", Mode.SHADOW)  # cast: legacy in the file, flipped to shadow
    new = load_config_text(config_text().replace("  - name: cast\n    path: /api/titles/{id}/cast\n    target: ratings\n",
                                                 "  - name: cast\n    path: /api/titles/{id}/cast\n"))
    plan = make_plan(config_view(running), new, states)
    [mode] = plan.of(ModeChange)
    assert mode.name == "cast" and mode.after == State(Mode.LEGACY, 0.0, "file")
    assert "the file no longer allows it" in mode.reason and "target" in mode.reason
    [target] = plan.settings("routes")
    assert (target.path, target.before, target.after) == ("routes[cast].target", "ratings", None)


def test_routes_and_fields_added_and_removed() -> None:
    running = make_config()
    states = flipped(from_file(running), "Title.rating", Mode.SHADOW)
    text = config_text().replace("  - name: cast\n    path: /api/titles/{id}/cast\n    target: ratings\n",
                                 "  - name: credits\n    path: /api/titles/{id}/credits\n    target: ratings\n"
                                 "    mode: shadow\n")
    text = text.replace("    Title.rating: {target: ratings}\n", "    Title.votes: {target: ratings, mode: shadow}\n")
    plan = make_plan(config_view(running), load_config_text(text), states)
    added = {(c.name, c.kind, c.state.mode) for c in plan.of(Added)}
    removed = {(c.name, c.kind, c.before.source) for c in plan.of(Removed)}
    assert added == {("credits", "route", Mode.SHADOW), ("Title.votes", "field", Mode.SHADOW)}
    assert removed == {("cast", "route", "file"), ("Title.rating", "field", "flip")}
    assert "its runtime flip is dropped" in next(c for c in plan.of(Removed) if c.name == "Title.rating").describe()
    assert plan.of(ModeChange) == [] and plan.of(SettingChange) == []  # added/removed entries are one change each


def test_upstreams_guardrails_compare_and_restart_only_settings() -> None:
    running = make_config()
    text = config_text(target_port=10, ratings_extra="    guardrails: {max_error_rate: 0.05}\n"
                                                      "    compare: {abs_tolerance: 0.05}\n")
    text = text.replace("  state_poll_interval_s: 0.1\n", "  state_poll_interval_s: 0.1\n  listen: {port: 8181}\n")
    text += "guardrails: {window: 50}\n"
    plan = make_plan(config_view(running), load_config_text(text), from_file(running))
    by_path = {c.path: c for c in plan.of(SettingChange)}
    assert by_path["upstreams.ratings.url"].after == "http://127.0.0.1:10"
    assert by_path["upstreams.ratings.url"].topic == "upstreams"
    assert by_path["routes[ratings].compare"].topic == "compare"
    assert by_path["routes[ratings].compare"].after["abs_tolerance"] == 0.05
    assert by_path["routes[ratings].guardrails"].topic == "guardrails"
    assert (by_path["guardrails.window"].before, by_path["guardrails.window"].after) == (200, 50)
    assert by_path["proxy.listen.port"].applies == "restart" and by_path["guardrails.window"].applies == "reload"
    assert "takes effect on the next restart" in by_path["proxy.listen.port"].describe()
    # Listed by topic: upstreams, compare, guardrails, ..., other settings last.
    topics = [c.topic for c in plan.of(SettingChange)]
    assert topics == sorted(topics, key=["upstreams", "compare", "guardrails", "routes", "fields", "settings"].index)


def test_route_order_and_graphql_field_settings() -> None:
    running = make_config()
    text = config_text()
    ratings_block = text[text.index("  - name: ratings"):text.index("  - name: cast")]
    cast_block = text[text.index("  - name: cast"):text.index("graphql:")]
    text = text.replace(ratings_block + cast_block, cast_block + ratings_block)
    text = text.replace("Title.rating: {target: ratings}", "Title.rating: {target: ratings, reverse_shadow: true}")
    plan = make_plan(config_view(running), load_config_text(text), from_file(running))
    by_path = {c.path: c for c in plan.of(SettingChange)}
    assert by_path["routes (order)"].before == ["ratings", "cast"]
    assert by_path["routes (order)"].after == ["cast", "ratings"]
    assert by_path["graphql.fields[Title.rating].reverse_shadow"].topic == "fields"
    assert by_path["graphql.fields[Title.rating].reverse_shadow"].applies == "reload"


def test_secrets_are_not_in_the_view_and_a_token_value_change_does_not_show() -> None:
    secret_db = "postgresql+asyncpg://strangler:db-SECRET@db/control"
    running = make_config(extra=f"databases: {{control: '{secret_db}'}}\n")
    new = load_config_text(config_text(extra=f"databases: {{control: '{secret_db}'}}\n")
                           .replace("robot: \"robot-token\"", "robot: \"robot-NEW\", ci: \"ci-token\""))
    view = config_view(running)
    assert "db-SECRET" not in json.dumps(view) and ADMIN_TOKEN not in json.dumps(view)
    assert view["proxy"]["admin_tokens"] == {"ops": REDACTED, "robot": REDACTED}
    [change] = make_plan(view, new, from_file(running)).changes
    assert (change.path, change.before, change.after) == ("proxy.admin_tokens.ci", None, REDACTED)


# ------------------------------------------------------------------ GET /config


async def test_get_config_needs_the_token_and_hides_secrets(tmp_path: Path, upstreams, sqlite_url) -> None:
    legacy = await upstreams("legacy")
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text(legacy_port=legacy.port, target_port=legacy.port)
                    + "stack: {apps: [{name: svc, command: [svc, --password, cmd-SECRET], upstream: legacy}]}\n")
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as s, \
            httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{s.admin_url}/config")).status_code == 401
        assert (await client.get(f"{s.admin_url}/config", headers={"Authorization": "Bearer nope"})).status_code == 403
        r = await client.get(f"{s.admin_url}/config", headers=AUTH)
        assert r.status_code == 200
        view = r.json()["config"]
        assert view == config_view(s.runtime.config)
        assert [x["name"] for x in view["routes"]] == ["ratings", "cast"]
        assert ADMIN_TOKEN not in r.text and "robot-token" not in r.text and "cmd-SECRET" not in r.text
        assert "stack" not in view


# ------------------------------------------------------------------ the CLI, a real proxy

app = typer.Typer()
plan_commands.register(app)


@app.callback()
def _root() -> None:  # keeps "plan" a subcommand, as in the real CLI
    pass


runner = CliRunner()
NO_ENV = {"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None}


async def cli(*args: str):  # type: ignore[no-untyped-def]
    """In a thread, so the proxy on this loop can answer the CLI."""
    return await asyncio.to_thread(runner.invoke, app, ["plan", *args], env=NO_ENV)


@pytest.fixture
async def running(tmp_path: Path, upstreams, sqlite_url):  # type: ignore[no-untyped-def]
    legacy, ratings = await upstreams("legacy"), await upstreams("ratings")
    path = tmp_path / "strangler.yaml"

    def text(**kwargs: object) -> str:
        return config_text(legacy_port=legacy.port, target_port=ratings.port, **kwargs)  # type: ignore[arg-type]

    path.write_text(text())
    async with ProxyServer(path, port=0, admin_port=0, state_url=sqlite_url, watch=False) as server:
        yield server, path, text


async def test_cli_no_change_exits_0(running) -> None:
    server, path, _ = running
    r = await cli(str(path), "--admin-url", server.admin_url, "--token", ADMIN_TOKEN)
    assert r.exit_code == 0, r.output
    assert "no changes" in r.output
    r = await cli(str(path), "--admin-url", server.admin_url, "--token", ADMIN_TOKEN, "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["changed"] is False and doc["changes"] == [] and doc["valid"] is True


async def test_cli_a_file_change_under_a_flip_is_planned_then_applied_as_planned(running, tmp_path: Path) -> None:
    server, path, text = running
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.post(f"{server.admin_url}/routes/ratings/flip", headers=AUTH,
                              json={"mode": "canary", "percent": 10, "reason": "first tenth"})
        assert r.status_code == 200, r.text
    edited = tmp_path / "edited.yaml"
    edited.write_text(text(ratings_mode="extracted"))
    # The token comes from the file (its first admin token), the URL from the option.
    r = await cli(str(edited), "--admin-url", server.admin_url)
    assert r.exit_code == 2, r.output
    assert "ratings: canary 10% (flip by ops) -> extracted (file)" in r.output
    assert "the file's value wins over the runtime flip" in r.output
    r = await cli(str(edited), "--admin-url", server.admin_url, "--json")
    assert r.exit_code == 2
    [change] = json.loads(r.stdout)["changes"]
    assert change["change"] == "mode" and change["before"] == {"mode": "canary", "percent": 10.0, "source": "flip"}
    assert change["after"] == {"mode": "extracted", "percent": 0.0, "source": "file"}
    # Saving it does what the plan said.
    path.write_text(edited.read_text())
    assert (await server.reloader.reload_now())["ok"]
    ratings = server.runtime.table.get("ratings")
    assert (ratings.mode, ratings.percent, "ratings" in server.runtime.overrides) == (Mode.EXTRACTED, 0.0, False)
    r = await cli(str(path), "--admin-url", server.admin_url)
    assert r.exit_code == 0, r.output


async def test_cli_routes_added_and_removed(running, tmp_path: Path) -> None:
    server, _, text = running
    edited = tmp_path / "edited.yaml"
    edited.write_text(text().replace("  - name: cast\n", "  - name: credits\n"))
    r = await cli(str(edited), "--admin-url", server.admin_url, "--token", ADMIN_TOKEN)
    assert r.exit_code == 2, r.output
    assert "+ route credits: legacy (file)" in r.output and "- route cast: was legacy (file)" in r.output
    changes = json.loads((await cli(str(edited), "--admin-url", server.admin_url, "--json")).stdout)["changes"]
    assert {(c["change"], c["name"]) for c in changes} == {("added", "credits"), ("removed", "cast")}


async def test_cli_an_invalid_file_exits_1_naming_file_line_and_field(running, tmp_path: Path) -> None:
    server, _, text = running
    bad = tmp_path / "bad.yaml"
    bad.write_text(text(ratings_mode="shaddow"))
    r = await cli(str(bad), "--admin-url", server.admin_url, "--token", ADMIN_TOKEN)
    assert r.exit_code == 1
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if "shaddow" in t)
    assert f"{bad}:{line}: routes[0].mode" in r.output
    r = await cli(str(bad), "--admin-url", server.admin_url, "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["valid"] is False and f"{bad}:{line}: routes[0].mode" in doc["errors"][0]


async def test_cli_without_a_proxy_makes_no_plan(tmp_path: Path) -> None:
    path = tmp_path / "strangler.yaml"
    path.write_text(config_text())
    r = await cli(str(path), "--admin-url", "http://127.0.0.1:9", "--token", ADMIN_TOKEN)
    assert r.exit_code == 1
    assert "cannot reach the admin API at http://127.0.0.1:9" in r.output and "Traceback" not in r.output
    r = await cli(str(path), "--admin-url", "http://127.0.0.1:9", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["valid"] is True and doc["changed"] is None and "cannot reach" in doc["errors"][0]
    r = await cli(str(tmp_path / "missing.yaml"))
    assert r.exit_code == 1 and "no such file" in r.output
