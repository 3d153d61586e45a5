"""Every client mistake gets a JSON error with a 4xx status and a useful message."""

from __future__ import annotations

import pytest

from tests.monolith.conftest import Live
from tests.monolith.helpers import scalar


async def _error(live: Live, method: str, path: str, **kwargs: object) -> tuple[int, dict]:
    async with live.http.request(method, live.url(path), **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/api/titles/tt9999999", 404, "no title 'tt9999999'"),
        ("/api/titles/tt9999999/cast", 404, "no title"),
        ("/api/titles/tt9999999/ratings", 404, "no title"),
        ("/api/titles/tt9999999/images", 404, "no title"),
        ("/api/people/nm9999999", 404, "no person 'nm9999999'"),
        ("/api/people/nm9999999/known-for", 404, "no person"),
        ("/api/titles/abc", 400, "malformed title id 'abc'"),
        ("/api/titles/nm0000001", 400, "malformed title id"),
        ("/api/people/tt0000001", 400, "malformed person id"),
        ("/api/titles?limit=0", 400, "limit must be between 1 and 100"),
        ("/api/titles?limit=101", 400, "limit must be between 1 and 100"),
        ("/api/titles?limit=99999999999999999999", 400, "limit must be between"),
        ("/api/titles?limit=ten", 400, "limit must be an integer"),
        ("/api/titles?offset=-1", 400, "offset must be between"),
        ("/api/titles?year_from=1999.5", 400, "year_from must be an integer"),
        ("/api/titles?year_from=12", 400, "year_from must be between"),
        ("/api/titles?year_from=2010&year_to=2000", 400, "after year_to"),
        ("/api/titles?genre=Drama;DROP", 400, "genre must be a word"),
        ("/api/search", 400, "q is required"),
        ("/api/search?q=%20%20", 400, "q is required"),
        ("/api/search?q=x&limit=500", 400, "limit must be between 1 and 50"),
        ("/api/search?q=" + "x" * 101, 400, "q is too long"),
        ("/api/nothing-here", 404, "no route for GET /api/nothing-here"),
    ],
)
async def test_bad_reads(live: Live, path: str, status: int, fragment: str) -> None:
    got, body = await _error(live, "GET", path)
    assert got == status
    assert body["error"]["code"] == ("not_found" if status == 404 else "bad_request")
    assert fragment in body["error"]["message"]


async def test_wrong_method_is_405_with_allow(live: Live) -> None:
    async with live.http.put(live.url("/api/titles/tt0000001")) as resp:
        assert resp.status == 405 and "GET" in resp.headers["Allow"]
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "body is empty"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"value": 5}', "user_id is required"),
        (b'{"user_id": "u1"}', "value is required"),
        (b'{"user_id": 7, "value": 5}', "user_id must be a string"),
        (b'{"user_id": "", "value": 5}', "user_id must be 1 to 64"),
        (b'{"user_id": "a:b", "value": 5}', "user_id must be 1 to 64"),
        (b'{"user_id": "u1", "value": "5"}', "value must be an integer"),
        (b'{"user_id": "u1", "value": 5.5}', "value must be an integer"),
        (b'{"user_id": "u1", "value": true}', "got a boolean"),
        (b'{"user_id": "u1", "value": null}', "got null"),
        (b'{"user_id": "u1", "value": 0}', "value must be from 1 to 10; got 0"),
        (b'{"user_id": "u1", "value": 11}', "got 11"),
        (b'{"user_id": "u1", "value": 5, "extra": 1}', "unknown field(s) ['extra']"),
    ],
)
async def test_bad_votes_change_nothing(live: Live, body: bytes, fragment: str) -> None:
    before = await scalar(live.database_url, "SELECT count(*) FROM votes") , await scalar(
        live.database_url, "SELECT count(*) FROM outbox"
    )
    status, answer = await _error(
        live, "POST", "/api/titles/tt0000001/ratings", data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and answer["error"]["code"] == "bad_request"
    assert fragment in answer["error"]["message"]
    after = await scalar(live.database_url, "SELECT count(*) FROM votes"), await scalar(
        live.database_url, "SELECT count(*) FROM outbox"
    )
    assert before == after


async def test_vote_on_unknown_title_is_404(live: Live) -> None:
    status, body = await _error(live, "POST", "/api/titles/tt9999999/ratings", json={"user_id": "u1", "value": 5})
    assert status == 404 and "no title 'tt9999999'" in body["error"]["message"]
    assert await scalar(live.database_url, "SELECT count(*) FROM outbox") == 0


async def test_oversized_body_is_413(live: Live) -> None:
    status, body = await _error(live, "POST", "/api/titles/tt0000001/ratings", data=b"x" * 200_000)
    assert status == 413 and body["error"]["code"] == "payload_too_large"


async def test_retract_errors(live: Live) -> None:
    status, body = await _error(live, "DELETE", "/api/titles/tt0000001/ratings/nobody-voted")
    assert status == 404 and "has no vote" in body["error"]["message"]
    status, body = await _error(live, "DELETE", "/api/titles/tt0000001/ratings/a:b")
    assert status == 400
    status, body = await _error(live, "DELETE", "/api/titles/bad/ratings/u1")
    assert status == 400 and "malformed title id" in body["error"]["message"]
