"""The admin API on a real loopback port: auth, routes, flips, audit, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from strangler_proxy.control.admin import AdminContext, check_bind, start_admin
from strangler_proxy.errors import ConfigError

from .conftest import ADMIN_TOKEN, make_config


@pytest.fixture
async def admin(services) -> AsyncIterator[httpx.AsyncClient]:
    svc = await services(make_config())
    runner, port = await start_admin(AdminContext(flips=svc, tokens=svc.config.admin_tokens), "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        yield client
    await runner.cleanup()


AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize("path", ["/routes", "/config", "/audit", "/metrics", "/healthz"])
async def test_every_call_needs_a_known_bearer_token(admin, path) -> None:
    missing = await admin.get(path)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await admin.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 403
    assert (await admin.get(path, headers={"Authorization": f"Basic {ADMIN_TOKEN}"})).status_code == 401
    assert (await admin.get(path, headers=AUTH)).status_code == 200


async def test_a_flip_without_a_token_changes_nothing(admin) -> None:
    r = await admin.post("/routes/ratings/flip", json={"mode": "extracted"})
    assert r.status_code == 401
    routes = (await admin.get("/routes", headers=AUTH)).json()["routes"]
    assert {x["name"]: x["mode"] for x in routes}["ratings"] == "shadow"


async def test_routes_flip_and_audit(admin) -> None:
    body = (await admin.get("/routes", headers=AUTH)).json()
    ratings = next(r for r in body["routes"] if r["name"] == "ratings")
    assert (ratings["mode"], ratings["source"], ratings["target"]) == ("shadow", "file", "ratings")
    assert ratings["counters"]["requests"] == 0
    assert body["fields"] == [{"name": "Title.rating", "target": "ratings", "mode": "legacy", "percent": 0.0,
                               "source": "file", "file": {"mode": "legacy", "percent": 0.0}, "flipped_by": None,
                               "guardrails": None}]
    assert body["unmatched"] == {}  # counters of requests no route matched: none yet

    r = await admin.post("/routes/ratings/flip", headers={"Authorization": "Bearer robot-token"},
                         json={"mode": "canary", "percent": 5, "reason": "ship it"})
    assert r.status_code == 200, r.text
    assert r.json()["who"] == "robot" and r.json()["to"] == {"mode": "canary", "percent": 5.0}
    ratings = next(x for x in (await admin.get("/routes", headers=AUTH)).json()["routes"] if x["name"] == "ratings")
    assert (ratings["mode"], ratings["percent"], ratings["source"], ratings["flipped_by"]) == (
        "canary", 5.0, "flip", "robot")

    [entry] = (await admin.get("/audit", headers=AUTH, params={"name": "ratings"})).json()["entries"]
    assert entry["who"] == "robot" and entry["reason"] == "ship it" and entry["from"]["mode"] == "shadow"

    metrics = (await admin.get("/metrics", headers=AUTH)).text
    assert 'strangler_flips_total{mode="canary",route="ratings"} 1.0' in metrics


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/routes/nope/flip", {"mode": "shadow"}, 404, "no such route"),
        ("/routes/ratings/flip", {"mode": "sideways"}, 400, "unknown mode"),
        ("/routes/ratings/flip", {"percent": 5}, 400, '"mode"'),
        ("/routes/ratings/flip", {"mode": "canary", "percent": "lots"}, 400, "percent"),
        ("/routes/ratings/flip", {"mode": "canary", "percent": 101}, 400, "outside 0..100"),
    ],
)
async def test_bad_flip_requests_are_refused(admin, path, body, status, message) -> None:
    r = await admin.post(path, headers=AUTH, json=body)
    assert r.status_code == status
    assert message in r.json()["error"]["message"]


async def test_bad_audit_limit_is_refused(admin) -> None:
    assert (await admin.get("/audit", headers=AUTH, params={"limit": "0"})).status_code == 400


def test_a_non_loopback_admin_address_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        check_bind("0.0.0.0", {})
    check_bind("0.0.0.0", {"ops": "x"})
    check_bind("127.0.0.1", {})
    check_bind("::1", {})
    check_bind("localhost", {})


async def test_start_admin_refuses_to_bind_a_public_address_without_a_token(services) -> None:
    svc = await services(make_config())
    with pytest.raises(ConfigError, match="proxy.admin.host"):
        await start_admin(AdminContext(flips=svc, tokens=dict), "0.0.0.0", 0)
