"""The upstream call: one pooled aiohttp ClientSession per endpoint, raw targets,
hop-by-hop filtering and ``X-Forwarded-*``.

An upstream's endpoints are balanced, retried and ejected by its
:class:`~strangler_proxy.dataplane.pool.UpstreamPool`; this module is one
endpoint's connection (:class:`EndpointClient`) and the header rules.

What is forwarded is exactly what was received, minus hop-by-hop headers
(RFC 9110 §7.6.1: ``Connection`` and every header it names, ``Keep-Alive``,
``Proxy-Connection``, ``TE``, ``Transfer-Encoding``, ``Upgrade``) and
``Expect`` (the proxy answers ``100 Continue`` itself) and every
``X-Strangler-*`` header (the proxy's own control headers: a client must not
be able to send a dry run, or cancel one, to a service): the request-target is
sent byte-for-byte (``yarl.URL(..., encoded=True)``, no dot-segment removal, no
re-quoting), headers keep their order and repeats, bodies are streams.
The sessions never add headers of their own (no ``User-Agent``, ``Accept``,
``Accept-Encoding`` or default ``Content-Type``) and never decompress.

Library errors are translated here, once (:func:`translate`, called by the
pool after it decided whether to retry): connect/reset/protocol failures ->
:class:`UpstreamConnectError` (502), timeouts -> :class:`UpstreamTimeout` (504).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
from aiohttp.helpers import TimerNoop
from multidict import CIMultiDict
from yarl import URL

from strangler_proxy.config import UpstreamConfig
from strangler_proxy.dataplane.upstream import ConnectFailed, ConnectTimedOut, UpstreamClosed
from strangler_proxy.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from strangler_proxy.headers import CONTROL_PREFIX
from strangler_proxy.routing.methods import SAFE_METHODS

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade"}
)
# Request headers the proxy consumes itself besides the hop-by-hop ones.
_REQUEST_DROP = HOP_BY_HOP | {b"expect"}
# aiohttp's client adds these when absent; a transparent proxy must not.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
READ_CHUNK = 64 * 1024
# Response parser limits, the same for the session and the lean path below.
MAX_LINE_SIZE = 16 * 1024
MAX_FIELD_SIZE = 16 * 1024
MAX_HEADERS = 128
READ_BUFSIZE = 64 * 1024
TIMEOUT_CEIL_THRESHOLD_S = 5.0  # aiohttp's default: timeouts above it are rounded up to whole seconds
_NO_TIMER = TimerNoop()  # stateless: no total timeout on the serving path

Headers = list[tuple[str, str]]
RawHeaders = tuple[tuple[bytes, bytes], ...]


_SKIPPED_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict((h, None) for h in _NO_AUTO_HEADERS)


class _TransparentRequest(aiohttp.ClientRequest):
    """aiohttp adds ``Content-Length: 0`` to a bodiless DELETE/POST/...; a
    transparent proxy sends exactly the framing it received."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        # Every header aiohttp would add on its own is skipped (Host is set by
        # update_headers), so its copy-the-headers-and-check pass adds nothing
        # but cost on the hot path. Keep the skip set: the body code reads it.
        self._skip_auto_headers = _SKIPPED_AUTO_HEADERS

    def update_body_from_data(self, body: Any, _stacklevel: int = 3) -> None:
        if body is None:
            self._body = None
            return
        super().update_body_from_data(body, _stacklevel + 1)


def _dropped(connection: bytes | None, base: frozenset[bytes]) -> frozenset[bytes]:
    """Hop-by-hop names for this message: the fixed set plus those its ``Connection`` field lists."""
    if not connection:
        return base
    return base | {t.strip().lower() for t in connection.split(b",") if t.strip()}


def request_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    connection: bytes | None,
    client_ip: str | None,
    scheme: str,
    keep_host: bool,
) -> Headers:
    """End-to-end request headers from the raw ones (original case, order and
    repeats), minus the client's ``X-Strangler-*`` control headers, plus
    ``X-Forwarded-*``.

    ``X-Forwarded-For`` gets the client address appended (to the last such
    header, keeping earlier hops); ``X-Forwarded-Proto``/``-Host`` are added
    only when absent, so values set by a load balancer in front survive.
    """
    drop = _dropped(connection, _REQUEST_DROP)
    out: Headers = []
    xff = -1
    proto = fhost = False
    host = None
    for kb, vb in raw:
        lk = kb.lower()
        if lk in drop or lk.startswith(CONTROL_PREFIX):
            continue
        v = vb.decode("utf-8", "surrogateescape")
        if lk == b"host":
            host = v
            if not keep_host:
                continue
        elif lk == b"x-forwarded-for":
            xff = len(out)
        elif lk == b"x-forwarded-proto":
            proto = True
        elif lk == b"x-forwarded-host":
            fhost = True
        out.append((kb.decode("latin-1"), v))
    if client_ip:
        if xff >= 0:
            out[xff] = (out[xff][0], f"{out[xff][1]}, {client_ip}")
        else:
            out.append(("X-Forwarded-For", client_ip))
    if not proto:
        out.append(("X-Forwarded-Proto", scheme))
    if not fhost and host is not None:
        out.append(("X-Forwarded-Host", host))
    return out


def response_fields(raw: Iterable[tuple[bytes, bytes]], connection: bytes | None) -> list[tuple[bytes, bytes]]:
    """End-to-end response header fields as received (bytes, nothing decoded: what the
    served path writes back), original case, in order, repeats kept (several Set-Cookie)."""
    drop = _dropped(connection, HOP_BY_HOP)
    return [(kb, vb) for kb, vb in raw if kb.lower() not in drop]


def decoded(fields: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Header fields as text: names latin-1, values UTF-8 (undecodable bytes kept as surrogates)."""
    return [(kb.decode("latin-1"), vb.decode("utf-8", "surrogateescape")) for kb, vb in fields]


def response_headers(raw: Iterable[tuple[bytes, bytes]], connection: bytes | None) -> Headers:
    """End-to-end response headers as text (:func:`response_fields`, :func:`decoded`)."""
    return decoded(response_fields(raw, connection))


def translate(exc: BaseException, upstream: str) -> UpstreamError:
    """aiohttp/OS errors (and the lean connections' own) -> our typed upstream
    errors (call inside ``except``)."""
    if isinstance(exc, ConnectTimedOut):
        return UpstreamTimeout("cannot connect in time", upstream=upstream)
    if isinstance(exc, (ConnectFailed, UpstreamClosed)):
        return UpstreamConnectError(str(exc), upstream=upstream)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout("cannot connect in time", upstream=upstream)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamTimeout("no answer in time", upstream=upstream)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"cannot connect: {exc.os_error}", upstream=upstream)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamConnectError("closed the connection without answering", upstream=upstream)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamConnectError(f"broken response body: {exc}", upstream=upstream)
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamConnectError(f"invalid response: {exc.message}", upstream=upstream)
    return UpstreamConnectError(f"{type(exc).__name__}: {exc}", upstream=upstream)


def never_sent(exc: BaseException) -> bool:
    """The request never left: no connection to the endpoint was made (refused,
    unreachable, DNS, connect timed out). Nothing was written, a streamed body
    was not read: any method may go to another endpoint.

    >>> never_sent(aiohttp.ConnectionTimeoutError()), never_sent(aiohttp.ServerDisconnectedError())
    (True, False)
    """
    return isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, ConnectFailed))


def reset_before_answer(exc: BaseException) -> bool:
    """The connection broke before a response head arrived (closed or reset by
    the endpoint): the request may have been received, so only a safe one may
    be sent again."""
    if isinstance(exc, UpstreamClosed):
        return not exc.answered
    return isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)) and not never_sent(exc)


def error_kind(err: UpstreamError) -> str:
    return "timeout" if isinstance(err, UpstreamTimeout) else "connect"


# Every library error an upstream exchange can raise.
UPSTREAM_FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class EndpointClient:
    """A pooled connection to one endpoint of an upstream, with the upstream's
    settings (timeouts, ``max_connections`` per endpoint).

    Bodiless requests (every GET/HEAD, served or mirrored) take a lean path
    through aiohttp's own pieces -- its request writer, connection pool and
    response parser -- skipping ``ClientSession._request``'s per-request work
    that a proxy never uses (cookie jar, auth, redirects, tracing, proxy
    settings, header merging): about 10 µs of CPU a request. Requests with a
    body go through the session itself.

    :meth:`send` raises the library's own errors (:data:`UPSTREAM_FAILURES`):
    the pool tells a connect failure (the request never left) from a reset
    before deciding on a retry, then translates.
    """

    __slots__ = ("name", "endpoint", "config", "session", "connector", "timeout", "scheme", "authority", "base_path",
                 "_loop")

    def __init__(self, name: str, endpoint: str, config: UpstreamConfig) -> None:
        url = URL(endpoint)
        self.name = name
        self.endpoint = endpoint
        self.config = config
        self.scheme = url.scheme
        self.authority = url.raw_authority
        self.base_path = url.raw_path.rstrip("/")
        self.connector = aiohttp.TCPConnector(
            limit=config.max_connections, limit_per_host=config.max_connections, ttl_dns_cache=300,
            timeout_ceil_threshold=TIMEOUT_CEIL_THRESHOLD_S,
        )
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=config.connect_timeout_s, sock_connect=config.connect_timeout_s,
            sock_read=config.timeout_s,
        )
        self.session = aiohttp.ClientSession(
            connector=self.connector,
            timeout=self.timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            raise_for_status=False,
            request_class=_TransparentRequest,
            read_bufsize=READ_BUFSIZE,
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )
        # aiohttp sends an idempotent request (PUT and DELETE too) once more when its connection
        # broke; a write that may have been received is never sent again, so requests with a
        # body (nearly all writes) are sent once, and the lean path resends only safe methods.
        self.session._retry_connection = False
        self._loop = asyncio.get_running_loop()

    def url(self, raw_path: str, raw_query: str) -> URL:
        return URL.build(
            scheme=self.scheme, authority=self.authority, path=self.base_path + raw_path,
            query_string=raw_query, encoded=True,
        )

    async def send(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Headers,
        body: AsyncIterator[bytes] | bytes | None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request and return once response headers arrived.

        The caller owns the response: it must ``release()`` (body fully read)
        or ``close()`` it. Raises the library's errors untranslated (see the
        class). For a bodiless request ``timeout.total`` bounds the wait for
        the response headers; a caller that sets it bounds its body read
        itself (the shadow path wraps the whole exchange in ``asyncio.timeout``).
        A connect that times out raises ``aiohttp.ConnectionTimeoutError``
        on both paths, so the pool knows the request never left.
        """
        url = self.url(raw_path, raw_query)
        if body is None:
            if timeout is None or timeout.total is None:
                return await self._send_lean(method, url, headers, timeout or self.timeout)
            async with asyncio.timeout(timeout.total):
                return await self._send_lean(method, url, headers, timeout)
        kwargs: dict[str, Any] = {"headers": headers, "data": body, "allow_redirects": False}
        if timeout is not None:
            kwargs["timeout"] = timeout
        return await self.session.request(method, url, **kwargs)

    async def _send_lean(
        self, method: str, url: URL, headers: Headers, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """What ``ClientSession._request`` does for a bodiless request without
        redirects, cookies, auth, proxies or tracing -- including its one retry
        on a pooled connection the upstream had closed (RFC 9112 §9.3.1.1), for
        a safe method only: a write that may have been received is never resent.

        When that retry cannot connect, the first failure is raised: the request
        may have reached the endpoint on the closed connection, so the pool must
        not take it for one that never left."""
        if self.session.closed:
            raise aiohttp.ClientConnectionError("upstream client is closed")
        retry = method in SAFE_METHODS
        stale: BaseException | None = None
        while True:
            req = _TransparentRequest(
                method, url, headers=headers, loop=self._loop, response_class=aiohttp.ClientResponse,
                timer=_NO_TIMER, session=self.session, ssl=True, traces=[],
            )
            try:
                conn = await self.connector.connect(req, traces=[], timeout=timeout)
            except (aiohttp.ClientConnectorError, TimeoutError) as exc:
                if stale is not None:
                    raise stale from exc
                if isinstance(exc, aiohttp.ClientConnectorError):
                    raise
                raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
            assert conn.protocol is not None
            conn.protocol.set_response_params(
                timer=_NO_TIMER, skip_payload=method == "HEAD", read_until_eof=True, auto_decompress=False,
                read_timeout=timeout.sock_read, read_bufsize=READ_BUFSIZE,
                timeout_ceil_threshold=TIMEOUT_CEIL_THRESHOLD_S, max_line_size=MAX_LINE_SIZE,
                max_field_size=MAX_FIELD_SIZE, max_headers=MAX_HEADERS,
            )
            try:
                resp = await req.send(conn)
                try:
                    await resp.start(conn)
                except BaseException:
                    resp.close()
                    raise
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
                conn.close()
                if not retry:
                    raise
                retry = False  # a reused connection the upstream had closed: once more on a fresh one
                stale = exc
                continue
            except BaseException:
                conn.close()
                raise
            return resp

    async def close(self) -> None:
        await self.session.close()
