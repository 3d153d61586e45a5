"""The client cannot speak for the proxy: every ``X-Strangler-*`` header a client
sends is dropped before anything is forwarded (served, mirrored, reverse-shadowed,
fallen back), and a mirror carries exactly the proxy's own control headers."""

from __future__ import annotations

import pytest

from strangler_proxy.dataplane.forwarder import request_headers
from tests.dataplane.conftest import MakeProxy
from tests.dataplane.rawhttp import RawResponse, RawUpstream, raw_request

# Every spelling a client could use, repeated, with values that would flip a
# dry run either way.
CLIENT_CONTROL = [
    ("X-Strangler-Dry-Run", "0"),
    ("x-strangler-dry-run", "1"),
    ("X-STRANGLER-SHADOW", "0"),
    ("X-Strangler-Fallback", "1"),
    ("X-Strangler-Anything", "x"),
]
ROUTE = '[{{name: r, path: "{path}", target: target, mode: {mode}, {extra}}}]'


def control(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower().startswith("x-strangler-")]


async def send(port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> RawResponse:
    lines = [("Host", "films.example"), ("Connection", "close"), *headers]
    if body:
        lines.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n"
    return await raw_request(port, head.encode() + body)


def test_request_headers_drops_control_headers_in_any_case() -> None:
    raw = (
        (b"Host", b"films.example"),
        (b"X-Strangler-Dry-Run", b"0"),
        (b"Authorization", b"Bearer t"),
        (b"x-strangler-shadow", b"1"),
        (b"X-STRANGLER-DRY-RUN", b"true"),
        (b"X-Stranglers", b"kept: not the prefix"),
        (b"X-Request-Id", b"r1"),
    )
    out = request_headers(raw, connection=None, client_ip="10.0.0.1", scheme="http", keep_host=True)
    assert out == [
        ("Host", "films.example"),
        ("Authorization", "Bearer t"),
        ("X-Stranglers", "kept: not the prefix"),
        ("X-Request-Id", "r1"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "films.example"),
    ]


async def test_served_and_mirrored_write_carry_only_the_proxys_control_headers(
    make_proxy: MakeProxy, legacy: RawUpstream, target: RawUpstream,
) -> None:
    proxy = await make_proxy(ROUTE.format(path="/api/titles/{id}/ratings", mode="shadow",
                                          extra='methods: [POST], shadow_writes: "dry-run"'))
    resp = await send(proxy.port, "POST", "/api/titles/tt1/ratings", [*CLIENT_CONTROL, ("X-Keep", "k")],
                      b'{"value": 3}')
    assert resp.status == 200 and resp.header("X-Upstream") == "legacy"
    await proxy.shadow.drain()
    [served] = legacy.seen
    assert control(served.headers) == [] and ("X-Keep", "k") in served.headers
    [mirror] = target.seen
    # exactly one of each, the proxy's, after the client's own headers
    assert control(mirror.headers) == [("X-Strangler-Shadow", "1"), ("X-Strangler-Dry-Run", "1")]
    assert mirror.headers[-2:] == control(mirror.headers)
    assert ("X-Keep", "k") in mirror.headers and mirror.body == b'{"value": 3}'


async def test_mirrored_read_carries_one_shadow_header_and_no_dry_run(
    make_proxy: MakeProxy, legacy: RawUpstream, target: RawUpstream,
) -> None:
    proxy = await make_proxy(ROUTE.format(path="/api/titles/{id}/ratings", mode="shadow", extra=""))
    await send(proxy.port, "GET", "/api/titles/tt1/ratings", CLIENT_CONTROL)
    await proxy.shadow.drain()
    assert control(legacy.seen[0].headers) == []
    assert control(target.seen[0].headers) == [("X-Strangler-Shadow", "1")]


async def test_extracted_and_its_reverse_shadow_drop_the_clients_control_headers(
    make_proxy: MakeProxy, legacy: RawUpstream, target: RawUpstream,
) -> None:
    proxy = await make_proxy(ROUTE.format(path="/api/titles/{id}/ratings", mode="extracted",
                                          extra='methods: [GET, POST], reverse_shadow: true, shadow_writes: "dry-run"'))
    await send(proxy.port, "POST", "/api/titles/tt1/ratings", CLIENT_CONTROL, b'{"value": 3}')
    await proxy.shadow.drain()
    [served] = target.seen
    assert control(served.headers) == []
    [reverse] = legacy.seen
    assert control(reverse.headers) == [("X-Strangler-Shadow", "1"), ("X-Strangler-Dry-Run", "1")]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_fallback_drops_the_clients_control_headers(
    make_proxy: MakeProxy, legacy: RawUpstream, target: RawUpstream, method: str,
) -> None:
    proxy = await make_proxy(ROUTE.format(path="/_500", mode="extracted", extra="fallback: true"))
    resp = await send(proxy.port, method, "/_500", CLIENT_CONTROL)
    assert resp.header("X-Strangler-Fallback") == "1"  # the proxy's own response header
    assert [control(s.headers) for s in target.seen] == [[]]
    assert [control(s.headers) for s in legacy.seen] == [[]]
