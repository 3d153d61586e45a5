"""Sticky canary split: the same partition key always lands on the same side.

A request's key (a path variable, a header, a query parameter or a cookie, as
named by ``RouteConfig.partition_key``; for a GraphQL field, the entity key) is
hashed into a bucket in ``[0, 100)``; the target serves when the bucket is
below the percent. Raising the percent only ever moves keys *to* the target: a
key served by the target at 5 % is still served by it at 25 %.

The bucket depends on the key alone, like a cell assignment: at the same
percent, title ``tt0000042`` is on the same side for every route and every
GraphQL field split by title id -- its reads, its writes and its ``Title.rating``
are served by one owner, so a canary never shows one client two versions of
the same entity.

    >>> b = bucket("tt0000001")
    >>> 0 <= b < 100 and b == bucket("tt0000001")
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from hashlib import blake2b
from urllib.parse import unquote

_HASH_BYTES = 8
_SCALE = 100.0 / float(1 << (8 * _HASH_BYTES))

# (path variables, headers, raw query string) -> key or None
KeyExtractor = Callable[[Mapping[str, str], Mapping[str, str], str], "str | None"]


def bucket(key: str) -> float:
    """Stable position of ``key`` in ``[0, 100)`` (the same for every route and field)."""
    digest = blake2b(key.encode("utf-8", "surrogateescape"), digest_size=_HASH_BYTES, person=b"strangler").digest()
    return int.from_bytes(digest, "big") * _SCALE


def serves_target(key: str | None, percent: float) -> bool:
    """Whether the target serves this request; random when there is no key."""
    if percent <= 0.0:
        return False
    if percent >= 100.0:
        return True
    position = random.random() * 100.0 if key is None else bucket(key)
    return position < percent


def query_value(raw_query: str, name: str) -> str | None:
    """First value of ``name`` in a raw query string (decoded for hashing only)."""
    for part in raw_query.split("&"):
        k, sep, v = part.partition("=")
        if unquote(k.replace("+", " ")) == name:
            return unquote(v.replace("+", " ")) if sep else ""
    return None


def cookie_value(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip().strip('"')
    return None


def key_extractor(spec: str | None) -> KeyExtractor | None:
    """Compile ``path:id`` / ``header:X`` / ``query:q`` / ``cookie:sid`` once."""
    if spec is None:
        return None
    kind, _, name = spec.partition(":")
    if kind == "path":
        return lambda pvars, headers, query: pvars.get(name)
    if kind == "header":
        return lambda pvars, headers, query: headers.get(name)
    if kind == "query":
        return lambda pvars, headers, query: query_value(query, name)
    if kind == "cookie":
        return lambda pvars, headers, query: cookie_value(headers.get("Cookie"), name)
    # arg:/key: belong to GraphQL fields; a REST route treats them as "no key".
    return None
