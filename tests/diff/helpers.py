"""Builders for shadow pairs in the diff tests (real values, nothing mocked)."""

from __future__ import annotations

from typing import Any

import orjson

from strangler_proxy.diff.exchange import Exchange, ShadowPair

JSON = (("Content-Type", "application/json"),)


def exchange(
    body: Any = None,
    *,
    status: int | None = 200,
    headers: tuple[tuple[str, str], ...] = JSON,
    upstream: str = "legacy",
    error: str | None = None,
    raw: bytes | None = None,
    truncated: bool = False,
    method: str = "GET",
) -> Exchange:
    data = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
    return Exchange(
        upstream=upstream,
        method=method,
        target="/api/titles/tt0000001",
        status=status,
        response_headers=headers,
        body=data,
        latency_s=0.01,
        error=error,
        body_truncated=truncated,
    )


def pair(
    legacy: Exchange,
    candidate: Exchange,
    *,
    again: Exchange | None = None,
    key: str = "titles",
) -> ShadowPair:
    return ShadowPair(key=key, mode="shadow", served_by="legacy", legacy=legacy, candidate=candidate, legacy_again=again)


def jpair(legacy: Any, candidate: Any, *, again: Any = None, key: str = "titles") -> ShadowPair:
    return pair(
        exchange(legacy),
        exchange(candidate, upstream="target"),
        again=exchange(again) if again is not None else None,
        key=key,
    )
