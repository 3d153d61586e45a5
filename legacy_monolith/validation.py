"""Checks of client input shared by REST and GraphQL; each failure says what was wrong.

    >>> title_id("tt0000001")
    'tt0000001'
    >>> int_param({"limit": "500"}, "limit", default=20, low=1, high=100)
    Traceback (most recent call last):
    ...
    legacy_monolith.errors.BadRequest: limit must be between 1 and 100; got 500
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from legacy_monolith.errors import BadRequest
from legacy_monolith.models import MAX_VOTE, MIN_VOTE

TITLE_ID_RE = re.compile(r"tt\d{7,10}")
PERSON_ID_RE = re.compile(r"nm\d{7,10}")
# No ':' so outbox entity ids 'tt0000001:<user>' split unambiguously.
USER_ID_RE = re.compile(r"[A-Za-z0-9_.@\-]{1,64}")
GENRE_RE = re.compile(r"[A-Za-z\-]{1,32}")

MAX_INT_PARAM = 10**9  # anything larger is not a page, a year or a limit
DEFAULT_SEARCH_LIMIT = 10
MAX_SEARCH_LIMIT = 50


def title_id(value: str) -> str:
    if not TITLE_ID_RE.fullmatch(value):
        raise BadRequest(f"malformed title id {value[:40]!r}: expected 'tt' and 7 to 10 digits, like 'tt0000001'")
    return value


def person_id(value: str) -> str:
    if not PERSON_ID_RE.fullmatch(value):
        raise BadRequest(f"malformed person id {value[:40]!r}: expected 'nm' and 7 to 10 digits, like 'nm0000001'")
    return value


def user_id(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"user_id must be a string; got {_json_type(value)}")
    if not USER_ID_RE.fullmatch(value):
        raise BadRequest("user_id must be 1 to 64 characters of letters, digits, '_', '.', '@' or '-'")
    return value


def vote_value(value: Any) -> int:
    # bool is an int in Python but not in JSON: true is not a vote.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"value must be an integer from {MIN_VOTE} to {MAX_VOTE}; got {_json_type(value)}")
    if not MIN_VOTE <= value <= MAX_VOTE:
        raise BadRequest(f"value must be from {MIN_VOTE} to {MAX_VOTE}; got {value}")
    return value


def int_param(
    params: Mapping[str, str], name: str, *, default: int | None, low: int = 0, high: int = MAX_INT_PARAM
) -> int | None:
    """An integer query parameter in ``[low, high]``; absent or empty gives ``default``."""
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise BadRequest(f"{name} must be an integer; got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}; got {value}")
    return value


def genre(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not GENRE_RE.fullmatch(value):
        raise BadRequest(f"genre must be a word like 'Drama' or 'Sci-Fi'; got {value[:40]!r}")
    return value


def search_text(value: str | None) -> str:
    text = (value or "").strip()
    if not text:
        raise BadRequest("q is required: the text to search for in titles and names")
    if len(text) > 100:
        raise BadRequest(f"q is too long ({len(text)} characters); at most 100")
    return text


def search_limit(value: int) -> int:
    if not 1 <= value <= MAX_SEARCH_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_SEARCH_LIMIT}; got {value}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
