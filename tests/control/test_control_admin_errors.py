"""What the admin API gives away when something fails, and what it refuses.

A broken control database (503) or an unexpected exception (500) answers a
short message and an error id; the SQL, its parameters and the traceback go
only to the log line with the same id. A flip body with a key the API does not
know is refused, as strangler.yaml refuses unknown fields.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from strangler_proxy.control.admin import AdminContext, start_admin
from strangler_proxy.control.flips import FlipService
from strangler_proxy.errors import ConfigError

from .conftest import ADMIN_TOKEN, make_config

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ERROR_ID = re.compile(r"^[0-9a-f]{12}$")


async def _reload_that_breaks() -> Mapping[str, Any]:
    raise RuntimeError("Traceback-worthy detail: /etc/strangler/secret.yaml")


@pytest.fixture
async def flips(services) -> FlipService:  # type: ignore[no-untyped-def]
    return await services(make_config())  # type: ignore[no-any-return]


@pytest.fixture
async def admin(flips: FlipService) -> AsyncIterator[httpx.AsyncClient]:
    ctx = AdminContext(flips=flips, tokens=flips.config.admin_tokens, reload=_reload_that_breaks)
    runner, port = await start_admin(ctx, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        yield client
    await runner.cleanup()


async def _drop(flips: FlipService, table: str) -> None:
    async with flips.store.engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {table}"))


def _logged_with(caplog: pytest.LogCaptureFixture, error_id: str) -> str:
    [record] = [r for r in caplog.records if r.name == "strangler.admin" and error_id in r.getMessage()]
    return record.getMessage() + (record.exc_text or "")


async def test_a_failed_flip_answers_an_error_id_not_the_sql(admin, flips, caplog) -> None:  # type: ignore[no-untyped-def]
    await _drop(flips, "route_state")
    with caplog.at_level(logging.ERROR, logger="strangler.admin"):
        r = await admin.post("/routes/ratings/flip", headers=AUTH, json={"mode": "extracted", "reason": "go"})
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "store_unavailable" and ERROR_ID.match(error["error_id"])
    assert error["message"].startswith("ratings: the flip was not applied: the control database failed")
    assert error["error_id"] in error["message"]
    for leaked in ("route_state", "SELECT", "[SQL", "parameters", "sqlalche.me", "Traceback"):
        assert leaked not in r.text
    # The operator finds the whole story under the same id.
    assert "route_state" in _logged_with(caplog, error["error_id"])
    # Nothing changed.
    routes = (await admin.get("/routes", headers=AUTH)).json()["routes"]
    assert {x["name"]: x["mode"] for x in routes}["ratings"] == "shadow"


async def test_a_failed_audit_read_answers_an_error_id_not_the_sql(admin, flips, caplog) -> None:  # type: ignore[no-untyped-def]
    await _drop(flips, "flip_audit")
    with caplog.at_level(logging.ERROR, logger="strangler.admin"):
        r = await admin.get("/audit", headers=AUTH, params={"name": "ratings", "limit": 7})
    assert r.status_code == 503
    error = r.json()["error"]
    assert ERROR_ID.match(error["error_id"])
    assert "flip_audit" not in r.text and "ratings" not in r.text and "LIMIT" not in r.text.upper()
    assert "flip_audit" in _logged_with(caplog, error["error_id"])


async def test_an_unexpected_exception_is_a_500_with_an_error_id(admin, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR, logger="strangler.admin"):
        r = await admin.post("/reload", headers=AUTH)
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "internal" and ERROR_ID.match(error["error_id"])
    assert "secret.yaml" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
    assert "secret.yaml" in _logged_with(caplog, error["error_id"])
    # Two failures, two ids.
    again = (await admin.post("/reload", headers=AUTH)).json()["error"]["error_id"]
    assert again != error["error_id"]


async def test_an_unknown_route_is_still_a_plain_404(admin) -> None:  # type: ignore[no-untyped-def]
    r = await admin.get("/nope", headers=AUTH)
    assert r.status_code == 404 and "error_id" not in r.text


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"mode": "canary", "percnt": 5}, "'percnt'"),
        ({"mode": "canary", "percent": 5, "reason": "x", "who": "mallory"}, "'who'"),
        ({"mode": "canary", "percent": 5, "Percent": 7}, "'Percent'"),
    ],
)
async def test_a_flip_with_an_unknown_key_is_refused_naming_it(admin, body, named) -> None:  # type: ignore[no-untyped-def]
    r = await admin.post("/routes/ratings/flip", headers=AUTH, json=body)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert named in message and "mode, percent, reason" in message
    routes = (await admin.get("/routes", headers=AUTH)).json()["routes"]
    assert {x["name"]: x["mode"] for x in routes}["ratings"] == "shadow"


@pytest.mark.parametrize("percent", [True, "5", None, [5]])
async def test_a_percent_that_is_not_a_number_is_refused(admin, percent) -> None:  # type: ignore[no-untyped-def]
    body: dict[str, Any] = {"mode": "canary", "percent": percent}
    r = await admin.post("/routes/ratings/flip", headers=AUTH, json=body)
    assert r.status_code == 400 and "percent" in r.json()["error"]["message"]


async def test_a_fractional_percent_is_refused_as_the_file_refuses_it(admin) -> None:  # type: ignore[no-untyped-def]
    # strangler.yaml takes whole percents only; a flip refuses what the file would refuse.
    r = await admin.post("/routes/ratings/flip", headers=AUTH, json={"mode": "canary", "percent": 0.5})
    assert r.status_code == 400 and "percent" in r.json()["error"]["message"]
    r = await admin.post("/routes/ratings/flip", headers=AUTH, json={"mode": "canary", "percent": 25.0})
    assert r.status_code == 200 and r.json()["to"] == {"mode": "canary", "percent": 25.0}
    with pytest.raises(ConfigError, match="fractional"):
        make_config(ratings_mode="canary", ratings_percent=0.5)
