"""Pass-through fidelity: the same raw request sent directly to the echo upstream
and through the proxy must give the same status, end-to-end headers and body,
and the upstream must see the same request (minus X-Forwarded-*)."""

from __future__ import annotations

import json

import pytest

from tests.dataplane.conftest import MakeProxy
from tests.dataplane.rawhttp import RawResponse, RawUpstream, raw_request

HOP = {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"}
FORWARDED = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


def _req(method: str, target: str, headers: list[tuple[str, str]] = (), body: bytes = b"") -> bytes:  # type: ignore[assignment]
    head = f"{method} {target} HTTP/1.1\r\nHost: films.example\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("utf-8") + b"\r\n" + body


CHUNKED_BODY = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

CASES: list[tuple[str, bytes, bool]] = [
    ("plain", _req("GET", "/api/titles/tt1", [("Connection", "close")]), False),
    ("dot segments", _req("GET", "/a/../b/./c/..", [("Connection", "close")]), False),
    ("encoded slash and dots", _req("GET", "/a%2Fb/%2e%2e/c%2F%2F", [("Connection", "close")]), False),
    ("double slashes", _req("GET", "//double//slash/", [("Connection", "close")]), False),
    ("repeated query keys", _req("GET", "/q?a=1&a=2&b=%2F&c=+x&d&&e=%zz", [("Connection", "close")]), False),
    ("percent case kept", _req("GET", "/%7euser/caf%C3%A9/%7E", [("Connection", "close")]), False),
    ("matrix params", _req("GET", "/w;v=1/x;y?z", [("Connection", "close")]), False),
    ("repeated request headers", _req("GET", "/h", [("X-A", "1"), ("Cookie", "s=1"), ("X-A", "2"),
                                                    ("Accept", "text/html"), ("Connection", "close")]), False),
    ("hop-by-hop named in Connection", _req("GET", "/h", [("Connection", "X-Hop, close"), ("X-Hop", "secret"),
                                                          ("Keep-Alive", "timeout=5"), ("TE", "trailers")]), False),
    ("HEAD", _req("HEAD", "/_cookies", [("Connection", "close")]), True),
    ("HEAD big", _req("HEAD", "/_big?n=5000000", [("Connection", "close")]), True),
    ("204", _req("GET", "/_204", [("Connection", "close")]), False),
    ("304", _req("GET", "/_304", [("If-None-Match", '"v1"'), ("Connection", "close")]), False),
    ("POST content-length", _req("POST", "/api/titles/tt1/ratings", [("Content-Type", "application/json"),
                                 ("Content-Length", "11"), ("Connection", "close")], b'{"value":7}'), False),
    ("POST no content-type", _req("POST", "/p", [("Content-Length", "3"), ("Connection", "close")], b"abc"), False),
    ("POST chunked", _req("POST", "/p", [("Transfer-Encoding", "chunked"), ("Connection", "close")], CHUNKED_BODY),
     False),
    ("DELETE", _req("DELETE", "/api/x/1", [("Connection", "close")]), False),
    ("OPTIONS", _req("OPTIONS", "/api/x", [("Origin", "http://a"), ("Connection", "close")]), False),
    ("chunked response", _req("GET", "/_chunked", [("Connection", "close")]), False),
    ("gzip untouched", _req("GET", "/_gzip", [("Accept-Encoding", "gzip"), ("Connection", "close")]), False),
    ("several Set-Cookie", _req("GET", "/_cookies", [("Connection", "close")]), False),
    ("big streamed response", _req("GET", "/_big?n=3000000", [("Connection", "close")]), False),
    ("expect 100-continue", _req("PUT", "/e", [("Expect", "100-continue"), ("Content-Length", "4"),
                                               ("Connection", "close")], b"data"), False),
    ("utf-8 header value", _req("GET", "/h", [("X-Name", "Zoë"), ("Connection", "close")]), False),
    ("header name case kept", _req("GET", "/h", [("x-lower", "1"), ("ETAG", "2"), ("content-TYPE", "a/b"),
                                                 ("Connection", "close")]), False),
    ("etag case in response", _req("GET", "/_304", [("Connection", "close")]), False),
]


def _end_to_end(resp: RawResponse) -> list[tuple[str, str]]:
    names = {t.strip().lower() for v in (resp.header("Connection") or "").split(",") for t in [v]}
    return [(k, v) for k, v in resp.headers if k.lower() not in HOP and k.lower() not in names]


def _seen(resp: RawResponse) -> dict[str, object] | None:
    if resp.header("Content-Type") != "application/json" or not resp.body or resp.header("Content-Encoding"):
        return None
    echo = json.loads(resp.body)
    if "headers" in echo:  # the proxy adds X-Forwarded-*, and answers Expect itself
        echo["headers"] = [h for h in echo["headers"] if h[0].lower() not in FORWARDED | {"expect"}]
    return echo


@pytest.mark.parametrize("name,request_bytes,head", CASES, ids=[c[0] for c in CASES])
async def test_identical_through_proxy(
    make_proxy: MakeProxy, legacy: RawUpstream, name: str, request_bytes: bytes, head: bool
) -> None:
    proxy = await make_proxy()
    direct = await raw_request(legacy.port, request_bytes, head=head)
    via = await raw_request(proxy.port, request_bytes, head=head)
    assert (via.status, via.reason) == (direct.status, direct.reason)
    echo = _seen(direct)
    if echo is None:
        assert _end_to_end(via) == _end_to_end(direct)
        assert via.body == direct.body
    else:  # the echo embeds X-Forwarded-*, so its length differs; compare it as data
        assert _seen(via) == echo
        strip = {"content-length"}
        assert [h for h in _end_to_end(via) if h[0].lower() not in strip] == [
            h for h in _end_to_end(direct) if h[0].lower() not in strip
        ]
    assert via.complete and direct.complete
    # the upstream saw the identical request line, headers (in order) and body
    d, v = legacy.seen[0], legacy.seen[1]
    assert (v.method, v.target, v.body) == (d.method, d.target, d.body)
    assert [h for h in v.headers if h[0].lower() not in FORWARDED | {"expect"}] == [
        h for h in d.headers if h[0].lower() != "expect"
    ]


async def test_forwarded_headers_added(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    await raw_request(proxy.port, _req("GET", "/x", [("X-Forwarded-For", "10.0.0.1"), ("Connection", "close")]))
    headers = legacy.seen[-1].headers
    assert ("X-Forwarded-For", "10.0.0.1, 127.0.0.1") in headers
    assert ("X-Forwarded-Proto", "http") in headers
    assert ("X-Forwarded-Host", "films.example") in headers
    assert headers[0] == ("Host", "films.example")


async def test_host_header_upstream_mode(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy(upstream_extra=', host_header: "upstream"')
    await raw_request(proxy.port, _req("GET", "/x", [("Connection", "close")]))
    assert ("Host", f"127.0.0.1:{legacy.port}") in legacy.seen[-1].headers


async def test_expect_continue_is_answered(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    resp = await raw_request(proxy.port, _req("PUT", "/e", [("Expect", "100-continue"), ("Content-Length", "4"),
                                                            ("Connection", "close")], b"data"))
    assert resp.interim == [100]
    assert resp.json()["body_len"] == 4


async def test_keep_alive_reuses_one_upstream_connection(make_proxy: MakeProxy, legacy: RawUpstream) -> None:
    proxy = await make_proxy()
    for _ in range(5):
        resp = await raw_request(proxy.port, _req("GET", "/k", [("Connection", "close")]))
        assert resp.status == 200
    assert legacy.open_connections == 1
