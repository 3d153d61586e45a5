"""Input checks of the routes the services take over.

The messages are part of the contract: a shadowed request with a bad body
must get the same 400 from a service as from the monolith, word for word.

    >>> vote_value(7)
    7
    >>> vote_value(True)
    Traceback (most recent call last):
    ...
    extracted_services.common.responses.ServiceError: 400 bad_request: value must be an integer from 1 to 10; got a boolean
"""

from __future__ import annotations

import re
from typing import Any

from extracted_services.common.responses import bad_request

MIN_VOTE = 1
MAX_VOTE = 10
_TITLE_ID = re.compile(r"tt\d{7,10}")
_PERSON_ID = re.compile(r"nm\d{7,10}")
_USER_ID = re.compile(r"[A-Za-z0-9_.@\-]{1,64}")


def title_id(value: str) -> str:
    if _TITLE_ID.fullmatch(value) is None:
        raise bad_request(f"malformed title id {value[:40]!r}: expected 'tt' and 7 to 10 digits, like 'tt0000001'")
    return value


def person_id(value: str) -> str:
    if _PERSON_ID.fullmatch(value) is None:
        raise bad_request(f"malformed person id {value[:40]!r}: expected 'nm' and 7 to 10 digits, like 'nm0000001'")
    return value


def user_id(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request(f"user_id must be a string; got {describe(value)}")
    if _USER_ID.fullmatch(value) is None:
        raise bad_request("user_id must be 1 to 64 characters of letters, digits, '_', '.', '@' or '-'")
    return value


def vote_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # JSON true is not a vote
        raise bad_request(f"value must be an integer from {MIN_VOTE} to {MAX_VOTE}; got {describe(value)}")
    if value < MIN_VOTE or value > MAX_VOTE:
        raise bad_request(f"value must be from {MIN_VOTE} to {MAX_VOTE}; got {value}")
    return value


def describe(value: Any) -> str:
    """How an error message names a JSON value's type."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return f"the number {value!r}"
        case str():
            return "a string"
        case list():
            return "an array"
    return "an object"
