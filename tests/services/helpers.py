"""Comparing a service's answers with the monolith's, minus the noise the
contract allows (volatile fields, image order)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

VOLATILE = ("generated_at", "request_id")


def canonical(body: Any) -> Any:
    if isinstance(body, dict):
        out = {k: canonical(v) for k, v in body.items() if k not in VOLATILE}
        if isinstance(out.get("images"), list):
            out["images"] = sorted(out["images"], key=lambda i: i["id"])
        return out
    if isinstance(body, list):
        return [canonical(v) for v in body]
    return body


async def answer(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    resp = await client.request(method, path, **kwargs)
    text = await resp.text()
    body = await resp.json() if text and resp.content_type == "application/json" else text
    return resp.status, canonical(body)
