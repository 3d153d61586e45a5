"""HAR files for the replay tests: the browser recording on disk, and small ones built in a test."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# A page visit exported by Chrome's devtools ("Save all as HAR"), HTTP/2, with
# a font and an analytics beacon on other hosts, a vote and its retraction, a
# GraphQL query, a search with a query string and cookies split over headers.
BROWSER_VISIT = Path(__file__).parent / "fixtures" / "browser_visit.har"
HOST = "films.example.com"
# Its entries on HOST that are reads, their targets and offsets (s) from the first one.
READS = [
    (0, "GET", "/api/titles/tt0000001", 0.0),
    (2, "GET", "/api/search?q=the%20night%20harbour&limit=10", 0.3),
    (4, "POST", "/graphql", 0.7),
    (7, "GET", "/api/titles/tt0000002/cast?lang=en&sort=billing", 1.0),
]
WRITES = [
    (3, "POST", "/api/titles/tt0000001/ratings", 0.45),
    (6, "DELETE", "/api/titles/tt0000001/ratings/u42", 0.85),
]
OTHER_HOSTS = [
    (1, "https://fonts.example.net/css2?family=Inter:wght@400;700&display=swap"),
    (5, "https://stats.example.org/collect?v=2&en=page_view"),
]
VOTE_BODY = b'{"user_id":"u42","value":8}'

T0 = datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC)


def entry(
    method: str,
    url: str,
    *,
    at: float = 0.0,
    headers: list[tuple[str, str]] | None = None,
    post: dict[str, Any] | None = None,
    status: int | None = 200,
    response_text: str | None = None,
) -> dict[str, Any]:
    """One HAR entry in the shape browsers write, ``at`` seconds after :data:`T0`."""
    request: dict[str, Any] = {
        "method": method, "url": url, "httpVersion": "HTTP/1.1",
        "headers": [{"name": n, "value": v} for n, v in (headers or [])],
        "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0,
    }
    if post is not None:
        request["postData"] = post
    response: dict[str, Any] = {
        "status": status if status is not None else 0, "statusText": "", "httpVersion": "HTTP/1.1",
        "headers": [], "cookies": [], "content": {"size": 0, "mimeType": "application/json"},
        "redirectURL": "", "headersSize": -1, "bodySize": -1,
    }
    if response_text is not None:
        response["content"]["text"] = response_text
    return {
        "startedDateTime": (T0 + timedelta(seconds=at)).isoformat().replace("+00:00", "Z"),
        "time": 12.5, "request": request, "response": response, "cache": {},
        "timings": {"send": 0.1, "wait": 12.0, "receive": 0.4},
    }


def har(*entries: dict[str, Any], version: str | None = "1.2") -> str:
    log: dict[str, Any] = {"creator": {"name": "Firefox", "version": "125.0"}, "entries": list(entries)}
    if version is not None:
        log["version"] = version
    return json.dumps({"log": log}, indent=2)
