"""Per-upstream request headers (``upstreams.<name>.headers``): each upstream's
``set``/``remove`` reach that upstream -- served or mirrored -- and no other, and
a resolved secret is never written anywhere: not in the access log, the results
store, the diagnostics, ``GET /config`` or ``strangler plan --json``.

Everything runs for real on loopback: three recording aiohttp upstreams and a
whole assembled proxy (:class:`ProxyServer`: admin API, results store, shadow path).
"""

from __future__ import annotations

import asyncio
import doctest
import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import typer
from aiohttp import web
from typer.testing import CliRunner

from strangler_proxy import header_rules
from strangler_proxy.cli import plan_commands
from strangler_proxy.config import HeaderRules
from strangler_proxy.control.config_view import REDACTED
from strangler_proxy.dataplane.accesslog import ACCESS_LOGGER
from strangler_proxy.header_rules import HeaderRuleSet, apply_header_rules
from strangler_proxy.server import ProxyServer

RATINGS_SECRET = "ratings-SECRET-7f3a"
LEGACY_SECRET = "legacy-SECRET-91c2"
LITERAL_SECRET = "literal-SECRET-55d0"
SECRETS = (RATINGS_SECRET, LEGACY_SECRET, LITERAL_SECRET)
TOKEN = "test-admin-token"

CONFIG = """
proxy:
  admin_tokens: {{ops: {token}}}
upstreams:
  legacy:
    url: "http://127.0.0.1:{legacy}"
    headers: {{set: {{X-Legacy-Key: "${{T_LEGACY_KEY}}"}}, remove: [Cookie]}}
  ratings:
    url: "http://127.0.0.1:{ratings}"
    headers:
      set: {{Authorization: "Bearer ${{T_RATINGS_TOKEN}}"}}
      remove: [cookie, X-Api-Key]
  images:
    url: "http://127.0.0.1:{images}"
    headers: {{set: {{X-Images-Key: "{literal}"}}}}
store: {{flush_interval_s: 0.05}}
compare: {{recheck_after_s: 0}}  # one request each, no second asking
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: shadow}}
  - {{name: vote, path: "/api/titles/{{id}}/votes", methods: [POST], target: ratings, mode: shadow,
      shadow_writes: dry-run}}
  - {{name: credits, path: "/api/titles/{{id}}/credits", target: ratings, mode: extracted, reverse_shadow: true}}
  - {{name: other, path: "/api/other", methods: [GET, POST], legacy: images}}
"""

# What the client sends: its own credentials, a cookie, and a control header it may not send.
CLIENT = [("Cookie", "session=abc"), ("X-Api-Key", "client-key"), ("Authorization", "Basic Y2xpZW50"),
          ("X-Strangler-Dry-Run", "0")]


def test_the_examples_hold() -> None:
    failed, attempted = doctest.testmod(header_rules)
    assert attempted > 0 and failed == 0


def test_rules_replace_every_spelling_and_repeat_and_leave_the_input_alone() -> None:
    rules = HeaderRuleSet.build([("Authorization", "Bearer s")], ["COOKIE"])
    assert rules is not None
    headers = [("cookie", "a=1"), ("Cookie", "b=2"), ("AUTHORIZATION", "Basic x"), ("Accept", "*/*"),
               ("X-Strangler-Shadow", "1"), ("X-Strangler-Dry-Run", "1")]
    before = list(headers)
    assert apply_header_rules(headers, rules) == [
        ("Accept", "*/*"), ("Authorization", "Bearer s"), ("X-Strangler-Shadow", "1"), ("X-Strangler-Dry-Run", "1")]
    assert headers == before


def test_values_are_resolved_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", "t0k")
    rules = HeaderRules(set={"Authorization": "Bearer ${T_TOKEN}", "X-Both": "${T_TOKEN}:${T_TOKEN}"})
    assert rules.resolved() == (("Authorization", "Bearer t0k"), ("X-Both", "t0k:t0k"))


# ------------------------------------------------------------------ real upstreams, a real proxy


@dataclass
class Recorder:
    """An upstream that records the headers of every request and answers its own JSON (never echoing them)."""

    name: str
    port: int = 0
    seen: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)

    def headers(self, path: str) -> list[list[tuple[str, str]]]:
        return [h for p, h in self.seen if p == path]


@pytest.fixture
async def recorders(catch_all) -> AsyncIterator[dict[str, Recorder]]:  # type: ignore[no-untyped-def]
    out: dict[str, Recorder] = {}
    for name in ("legacy", "ratings", "images"):
        rec = out[name] = Recorder(name)

        async def handle(request: web.Request, rec: Recorder = rec) -> web.Response:
            await request.read()
            rec.seen.append((request.path, [(k.decode(), v.decode()) for k, v in request.raw_headers]))
            # The two sides disagree, so every comparison is a mismatch with samples stored.
            return web.json_response({"served_by": rec.name, "value": len(rec.name)})

        rec.port = await catch_all(handle)
    yield out


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every log line of the run: diagnostics at DEBUG and the access log."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    root, access = logging.getLogger(), logging.getLogger(ACCESS_LOGGER)
    saved = root.level, access.level
    root.addHandler(handler)
    access.addHandler(handler)
    root.setLevel(logging.DEBUG)
    access.setLevel(logging.INFO)
    yield buf
    root.removeHandler(handler)
    access.removeHandler(handler)
    root.setLevel(saved[0])
    access.setLevel(saved[1])


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def config_file(tmp_path: Path, recs: dict[str, Recorder], name: str = "strangler.yaml", **over: str) -> Path:
    text = CONFIG.format(token=TOKEN, literal=LITERAL_SECRET, **{n: r.port for n, r in recs.items()})
    for old, new in over.items():
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


plan_app = typer.Typer()
plan_commands.register(plan_app)


@plan_app.callback()
def _root() -> None:  # keeps "plan" a subcommand, as in the real CLI
    pass


async def test_each_upstream_gets_its_own_rules_served_and_mirrored_and_no_secret_is_written(
    tmp_path: Path, recorders: dict[str, Recorder], all_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T_RATINGS_TOKEN", RATINGS_SECRET)
    monkeypatch.setenv("T_LEGACY_KEY", LEGACY_SECRET)
    legacy, ratings, images = recorders["legacy"], recorders["ratings"], recorders["images"]
    path = config_file(tmp_path, recorders)
    state = tmp_path / "control.sqlite3"
    async with ProxyServer(path, port=0, admin_port=0, state_url=f"sqlite+aiosqlite:///{state}", watch=False) as s, \
            httpx.AsyncClient(base_url=s.url, timeout=5) as client:
        for method, target in (("GET", "/api/titles/tt1/ratings"), ("POST", "/api/titles/tt1/votes"),
                               ("GET", "/api/titles/tt1/credits"), ("GET", "/api/other"), ("GET", "/unrouted")):
            r = await client.request(method, target, headers=CLIENT, content=b"{}" if method == "POST" else None)
            assert r.status_code == 200, (target, r.text)
        await s.shadow.drain()

        # shadow: legacy serves with its rules, the mirror to ratings carries ratings' rules only
        [served] = legacy.headers("/api/titles/tt1/ratings")
        assert values(served, "X-Legacy-Key") == [LEGACY_SECRET] and values(served, "Cookie") == []
        assert values(served, "Authorization") == ["Basic Y2xpZW50"] and values(served, "X-Api-Key") == ["client-key"]
        [mirror] = ratings.headers("/api/titles/tt1/ratings")
        assert values(mirror, "Authorization") == [f"Bearer {RATINGS_SECRET}"]
        assert values(mirror, "Cookie") == values(mirror, "X-Api-Key") == values(mirror, "X-Legacy-Key") == []
        assert mirror[-1] == ("X-Strangler-Shadow", "1")  # the proxy's own come last, untouched

        # a mirrored write: the rules, then exactly the proxy's shadow and dry-run markers
        [vote] = ratings.headers("/api/titles/tt1/votes")
        assert values(vote, "Authorization") == [f"Bearer {RATINGS_SECRET}"]
        assert [(k, v) for k, v in vote if k.lower().startswith("x-strangler-")] == vote[-2:] == [
            ("X-Strangler-Shadow", "1"), ("X-Strangler-Dry-Run", "1")]

        # extracted + reverse shadow: ratings serves with its rules, legacy is mirrored with legacy's
        [served] = ratings.headers("/api/titles/tt1/credits")
        assert values(served, "Authorization") == [f"Bearer {RATINGS_SECRET}"] and values(served, "Cookie") == []
        [mirror] = legacy.headers("/api/titles/tt1/credits")
        assert values(mirror, "Authorization") == ["Basic Y2xpZW50"]  # the client's, not ratings' token
        assert values(mirror, "X-Legacy-Key") == [LEGACY_SECRET] and values(mirror, "Cookie") == []

        # an upstream with other rules sees neither secret, and the client's headers untouched
        [other] = images.headers("/api/other")
        assert values(other, "X-Images-Key") == [LITERAL_SECRET]
        assert values(other, "Cookie") == ["session=abc"] and values(other, "Authorization") == ["Basic Y2xpZW50"]
        assert not any(secret in v for secret in (RATINGS_SECRET, LEGACY_SECRET) for _, v in other)
        [unrouted] = legacy.headers("/unrouted")  # the default upstream's rules apply to unrouted paths too
        assert values(unrouted, "X-Legacy-Key") == [LEGACY_SECRET]
        for rec in recorders.values():  # no client X-Strangler-* header reached anyone
            assert all(values(h, "X-Strangler-Dry-Run") in ([], ["1"]) for _, h in rec.seen)

        # GET /config: the names of the variables, never their values; a literal value hidden
        r = await client.get(f"{s.admin_url}/config", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        upstreams = r.json()["config"]["upstreams"]
        assert upstreams["ratings"]["headers"] == {"set": {"Authorization": "Bearer ${T_RATINGS_TOKEN}"},
                                                   "remove": ["cookie", "X-Api-Key"]}
        assert upstreams["images"]["headers"]["set"] == {"X-Images-Key": REDACTED}
        assert not any(secret in r.text for secret in SECRETS)

        # strangler plan --json against the running proxy: a changed variable is named, no value shown
        edited = config_file(tmp_path, recorders, "edited.yaml", **{
            "${T_RATINGS_TOKEN}": "${T_LEGACY_KEY}", LITERAL_SECRET: LITERAL_SECRET + "-2"})
        result = await asyncio.to_thread(
            CliRunner().invoke, plan_app, ["plan", str(edited), "--admin-url", s.admin_url, "--json"],
            env={"STRANGLER_ADMIN_TOKEN": None, "STRANGLER_ADMIN_URL": None})
        assert result.exit_code == 2, result.output
        changes = json.loads(result.stdout)["changes"]
        assert [(c["path"], c["before"], c["after"]) for c in changes] == [
            ("upstreams.ratings.headers.set.Authorization", "Bearer ${T_RATINGS_TOKEN}", "Bearer ${T_LEGACY_KEY}")]
        assert not any(secret in result.output for secret in SECRETS)
        assert s.shadow.completed >= 3

    # after the proxy stopped (the results writer flushed): not in the store, not in any log line
    with sqlite3.connect(state) as db:
        dump = "\n".join(db.iterdump())
    assert "served_by" in dump  # the samples are there...
    assert not any(secret in dump for secret in SECRETS)  # ...without a secret
    logged = all_logs.getvalue()
    assert '"route":"ratings"' in logged  # the access log was on
    assert not any(secret in logged for secret in SECRETS)
