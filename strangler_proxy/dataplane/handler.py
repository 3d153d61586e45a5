"""The proxy's request handler: match -> choose side -> forward -> hand the shadow off.

It runs behind the listener (listener.py: aiohttp's low-level server, no router, no middlewares): the
raw request-target is the routing input and the forwarded target, so what is
matched is exactly what is sent. See docs/proxy.md.

    runtime = ProxyRuntime(config)
    shadow = ShadowDispatcher(config.shadow, DiffComparator(), [], runtime)
    await shadow.start()
    runner, port = await start_proxy(runtime, shadow, "127.0.0.1", 0)
    ...
    await runner.cleanup()      # closes the upstream pools too
    await shadow.stop()
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

from strangler_proxy.config import Mode, ProxyLimits, StranglerConfig
from strangler_proxy.dataplane.forwarder import (
    READ_CHUNK,
    SMALL_BODY,
    UPSTREAM_FAILURES,
    error_kind,
    request_headers,
    response_headers,
    translate,
)
from strangler_proxy.dataplane.listener import ProxyRunner, UpstreamAnswer, start_listener
from strangler_proxy.dataplane.pool import Upstreams
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import (
    SKIP_BODY_TOO_LARGE,
    ShadowDispatcher,
    ShadowJob,
)
from strangler_proxy.diff.exchange import Exchange, Side
from strangler_proxy.disclosure import may_disclose
from strangler_proxy.errors import UpstreamError, UpstreamTimeout
from strangler_proxy.graphql.gateway import GraphQLGateway
from strangler_proxy.headers import DRY_RUN_HEADER, FALLBACK_HEADER, SERVED_BY_HEADER, SHADOW_HEADER
from strangler_proxy.routing.canary import serves_target
from strangler_proxy.routing.cells import scoped
from strangler_proxy.routing.methods import SAFE_METHODS
from strangler_proxy.routing.router import Route

DEFAULT_ROUTE = "_default"
GRAPHQL_ROUTE = "graphql"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Quiet(UpstreamAnswer):
    """Keep aiohttp from adding ``Server``/``Content-Type`` the upstream did not
    send (``Date`` is still added when missing, as RFC 9110 §6.6.1 asks)."""

    _headers: Any

    async def _prepare_headers(self) -> None:
        h = self._headers
        had_server = "Server" in h
        had_type = "Content-Type" in h
        await super()._prepare_headers()  # type: ignore[misc]
        if not had_server:
            h.popall("Server", None)
        if not had_type:
            h.popall("Content-Type", None)


class _Whole(_Quiet, web.Response):
    """A small upstream answer, sent in one write."""


class _Streamed(_Quiet, web.StreamResponse):
    """A large or unknown-length upstream answer, streamed chunk by chunk."""


class _Tee:
    """The first ``limit`` bytes of a stream, for the comparison stage."""

    __slots__ = ("buf", "limit", "over")

    def __init__(self, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.over = False

    def add(self, chunk: bytes) -> None:
        if self.over:
            return
        if len(self.buf) + len(chunk) > self.limit:
            self.over = True
            self.buf.clear()
        else:
            self.buf += chunk


def problem(status: int, err: UpstreamError) -> web.Response:
    """RFC 9457 problem body naming the upstream."""
    title = "Gateway Timeout" if status == 504 else "Bad Gateway"
    body = orjson.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": str(err), "upstream": err.upstream}
    )
    return web.Response(status=status, body=body, content_type="application/problem+json")


class _Served:
    """What the served side produced (for counters, logs and the shadow pair)."""

    __slots__ = ("status", "upstream", "side", "latency_s", "headers", "resp_headers", "body", "error", "fallback",
                 "response")

    def __init__(self, upstream: str, side: Side) -> None:
        self.upstream = upstream
        self.side = side
        self.status = 0
        self.latency_s = 0.0
        self.headers: list[tuple[str, str]] = []
        self.resp_headers: tuple[tuple[str, str], ...] = ()
        self.body: _Tee | None = None
        self.error: str | None = None
        self.fallback = False
        self.response: web.StreamResponse | None = None


class ProxyHandler:
    """The data plane. Owns one endpoint pool per upstream (dataplane/pool.py)."""

    def __init__(
        self, runtime: ProxyRuntime, shadow: ShadowDispatcher, graphql: GraphQLGateway | None = None
    ) -> None:
        self.runtime = runtime
        self.shadow = shadow
        self.graphql = graphql  # answers config.graphql.path when GraphQL is enabled
        self.upstreams = Upstreams(runtime.endpoints)  # health shared with the shadow path's pools

    async def close(self) -> None:
        await self.upstreams.close()

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        start = time.perf_counter()
        runtime = self.runtime
        snap = runtime.snapshot
        method = request.method
        path, _, query = request.raw_path.partition("?")
        if not path.startswith("/") and "://" in path:  # absolute-form -> origin-form
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if self.graphql is not None and path == snap.config.graphql.path:
            return await self._serve_graphql(request, self.graphql, snap.config, start)
        route = snap.table.match(method, path, request.headers)

        # ---- the cell: its own copy of every upstream, and its own modes
        cell: str | None = None
        cells = snap.cells
        if cells is not None:
            pvars = route.bind(path) if route is not None and cells.kind == "path" else {}
            cell = cells.assign(cells.key(pvars, request.headers, query))
            if cell is None:
                return self._unkeyed(request, route, cells.spec, start)
            if route is not None:
                route = snap.tables.for_cell(cell).get(route.name) or route

        # ---- choose the side that serves, and whether to mirror
        if route is None:
            name, mode = DEFAULT_ROUTE, "legacy"
            served = await self._forward(request, snap.config, snap.config.proxy.default_upstream, "legacy",
                                         method, path, query, None, None, cell)
        else:
            name, mode = route.name, route.mode.value
            served = await self._serve_route(request, snap.config, route, method, path, query, cell)

        # ---- book-keeping (the client already has its response)
        duration = time.perf_counter() - start
        runtime.metrics.request(name, mode, served.upstream, served.status, duration, cell or "")
        counters = runtime.counters(name)
        counters.requests += 1
        if served.side == "legacy":
            counters.legacy += 1
        else:
            counters.target += 1
        if served.error is not None or served.status >= 500:
            counters.errors += 1
        runtime.access_log.emit(route and route.name, mode, served.upstream, method, request.raw_path,
                                served.status, duration, served.fallback, served.error, cell)
        assert served.response is not None
        return served.response

    def _unkeyed(self, request: BaseRequest, route: Route | None, spec: str, start: float) -> web.Response:
        """A request without a partition key while cells.unkeyed is "refuse": 400, never forwarded."""
        body = orjson.dumps({
            "type": "about:blank", "title": "Bad Request", "status": 400,
            "detail": f"the request has no partition key ({spec}): every request must name its cell's key",
        })
        name = route.name if route is not None else DEFAULT_ROUTE
        runtime = self.runtime
        duration = time.perf_counter() - start
        runtime.metrics.request(name, "refused", "", 400, duration)
        runtime.access_log.emit(route and route.name, "refused", "", request.method, request.raw_path, 400,
                                duration, False, "no-partition-key")
        return web.Response(status=400, body=body, content_type="application/problem+json")

    async def _serve_graphql(self, request: BaseRequest, gateway: GraphQLGateway, config: StranglerConfig,
                             start: float) -> web.StreamResponse:
        """The gateway answers; each field goes to its owner (see graphql/gateway.py); with cells,
        in the cell the request's key picks (the gateway reads the key: it may be an argument)."""
        disclose = may_disclose(config, request.headers)  # the running config's flag and tokens
        runtime = self.runtime
        response, cell = await gateway.respond(request, disclose=disclose,  # type: ignore[arg-type]  # BaseRequest is enough
                                               cells=runtime.snapshot.cells)
        duration = time.perf_counter() - start
        runtime.metrics.request(GRAPHQL_ROUTE, "gateway", GRAPHQL_ROUTE, response.status, duration, cell or "")
        runtime.counters(GRAPHQL_ROUTE).requests += 1
        runtime.access_log.emit(GRAPHQL_ROUTE, "gateway", GRAPHQL_ROUTE, request.method, request.raw_path,
                                response.status, duration, False, None, cell)
        return response

    async def _serve_route(
        self, request: BaseRequest, config: StranglerConfig, route: Route, method: str, path: str, query: str,
        cell: str | None,
    ) -> _Served:
        mode = route.mode
        if mode is Mode.LEGACY:
            return await self._forward(request, config, route.legacy, "legacy", method, path, query, route, None, cell)
        if mode is Mode.CANARY:
            key = route.partition_key(path, request.headers, query)
            if serves_target(key, route.percent):
                return await self._serve_target(request, config, route, method, path, query, cell, mirror=False)
            return await self._serve_legacy_shadowed(request, config, route, method, path, query, cell, key)
        if mode is Mode.SHADOW:
            key = route.partition_key(path, request.headers, query) if route.partition else None
            return await self._serve_legacy_shadowed(request, config, route, method, path, query, cell, key)
        return await self._serve_target(request, config, route, method, path, query, cell,
                                        mirror=route.config.reverse_shadow)

    async def _serve_legacy_shadowed(
        self, request: BaseRequest, config: StranglerConfig, route: Route, method: str, path: str, query: str,
        cell: str | None, key: str | None,
    ) -> _Served:
        tee = self._shadow_tee(request, route, method, cell)
        served = await self._forward(request, config, route.legacy, "legacy", method, path, query, route, tee, cell)
        if tee is not None:
            self._submit(request, route, served, tee, route.target or "", route.target_path(path), path, query, key,
                         cell)
        return served

    async def _serve_target(
        self, request: BaseRequest, config: StranglerConfig, route: Route, method: str, path: str, query: str,
        cell: str | None, *, mirror: bool,
    ) -> _Served:
        assert route.target is not None
        target_path = route.target_path(path)
        tee = self._shadow_tee(request, route, method, cell) if mirror else None
        can_fall_back = route.config.fallback and method in SAFE_METHODS and not request.body_exists
        served = await self._forward(request, config, route.target, "target", method, target_path, query, route, tee,
                                     cell, fallback=can_fall_back)
        # A reverse shadow compares the target's answer -- but only a complete one
        # that was not replaced by a fallback. Anything else is recorded here, so
        # the guardrails see every failure of the target, mirrored or not.
        compared = tee is not None and not served.fallback and served.body is not None and served.error is None
        if not compared:
            self.shadow.served(scoped(route.name, cell), route.mode.value, method, request.raw_path,
                               served.status or None, served.latency_s,
                               served.error if served.error != "client-disconnected" else None)
        if served.fallback:
            served = await self._forward(request, config, route.legacy, "legacy", method, path, query, route, None,
                                         cell, mark_fallback=True)
            self.runtime.counters(route.name).fallbacks += 1
            self.runtime.metrics.inc(self.runtime.metrics.fallbacks, route.name)
        elif tee is not None:
            self._submit(request, route, served, tee, route.legacy, path, target_path, query, None, cell)
        return served

    # ------------------------------------------------------------ shadow hand-off
    def _shadow_tee(self, request: BaseRequest, route: Route, method: str, cell: str | None) -> _Tee | None:
        """A tee when this request is to be mirrored, else None (skips are recorded)."""
        if method not in SAFE_METHODS and route.config.shadow_writes != "dry-run":
            return None
        if route.config.sample_rate < 1.0 and random.random() >= route.config.sample_rate:
            return None
        limit = self.shadow.settings.body_limit
        length = request.content_length
        if length is not None and length > limit:
            self.shadow.skip(scoped(route.name, cell), route.mode.value, method, request.raw_path, SKIP_BODY_TOO_LARGE)
            return None
        return _Tee(limit)

    def _submit(
        self, request: BaseRequest, route: Route, served: _Served, tee: _Tee, mirror_upstream: str,
        mirror_path: str, served_path: str, query: str, key: str | None, cell: str | None,
    ) -> None:
        if served.body is None or served.error == "client-disconnected":
            return  # no complete exchange to compare with
        name = scoped(route.name, cell)  # a cell's results are its own: guardrails and reports per cell
        if tee.over:
            self.shadow.skip(name, route.mode.value, request.method, request.raw_path, SKIP_BODY_TOO_LARGE)
            return
        body = bytes(tee.buf) if request.body_exists else None
        served_target = served_path + ("?" + query if query else "")
        exchange = Exchange(
            upstream=served.upstream, method=request.method, target=served_target,
            status=None if served.error else served.status, error=served.error,
            request_headers=tuple(served.headers), request_body=body, response_headers=served.resp_headers,
            body=bytes(served.body.buf), latency_s=served.latency_s, body_truncated=served.body.over,
        )
        headers = [(k, v) for k, v in served.headers if k.lower() != "host"]
        host = request.headers.get("Host")
        if host is not None:  # the original Host, whatever the mirror's host_header says
            headers.insert(0, ("Host", host))
        # served.headers hold none of the client's X-Strangler-* headers
        # (request_headers drops them), so the mirror carries exactly the proxy's.
        headers.append(SHADOW_HEADER)
        if request.method not in SAFE_METHODS:
            headers.append(DRY_RUN_HEADER)
        cells = self.runtime.snapshot.cells
        if cell is not None and cells is not None:
            mirror_upstream = cells.upstream(mirror_upstream, cell)
        self.shadow.submit(ShadowJob(
            route=name, mode=route.mode.value, served_by=served.side, served=exchange,
            upstream=mirror_upstream, method=request.method, raw_path=mirror_path, raw_query=query,
            headers=tuple(headers), body=body, compare=route.compare, partition=key,
        ))

    # ------------------------------------------------------------ the upstream call
    async def _forward(
        self, request: BaseRequest, config: StranglerConfig, upstream: str, side: Side, method: str,
        path: str, query: str, route: Route | None, tee: _Tee | None, cell: str | None, *, fallback: bool = False,
        mark_fallback: bool = False,
    ) -> _Served:
        """Forward to ``upstream`` and stream its answer to the client.

        With ``fallback`` a connect error, timeout or 5xx is not sent to the
        client: the result has ``fallback=True`` and the caller retries legacy.
        """
        if cell is not None:  # the cell's own copy of the upstream
            cells = self.runtime.snapshot.cells
            if cells is not None:
                upstream = cells.upstream(upstream, cell)
        served = _Served(upstream, side)
        served.fallback = mark_fallback
        client = self.upstreams.get(upstream, config.upstreams[upstream])
        headers = request_headers(request.raw_headers, connection=request.headers.get("Connection"),
                                  client_ip=request.remote, scheme="http", keep_host=client.keep_host)
        served.headers = headers
        body = self._request_body(request, tee) if request.body_exists else None
        t0 = time.perf_counter()
        try:
            resp = await client.send(method, path, query, headers, body)
        except UpstreamError as err:
            served.latency_s = time.perf_counter() - t0  # how long the failure took
            return await self._failed(request, served, err, route, fallback)
        served.latency_s = time.perf_counter() - t0
        metrics = self.runtime.metrics
        metrics.upstream(route.name if route else DEFAULT_ROUTE, side, "served", served.latency_s)
        if fallback and resp.status >= 500:
            resp.close()
            served.status = resp.status  # what the target said, for the SERVED/CANDIDATE_ERROR record
            served.fallback = True
            return served
        served.status = resp.status
        out_headers = response_headers(resp.raw_headers, resp.headers.get("Connection"))
        if tee is not None:
            served.resp_headers = tuple(out_headers)
            served.body = _Tee(tee.limit)
        if served.fallback:
            out_headers.append((FALLBACK_HEADER, "1"))
        if may_disclose(config, request.headers):  # one flag, one header lookup when it is not
            out_headers.append((SERVED_BY_HEADER, upstream))
        length = resp.content_length
        if length is not None and length <= SMALL_BODY:
            await self._send_whole(request, resp, served, out_headers)
        else:
            await self._send_streamed(request, resp, served, out_headers)
        return served

    async def _send_whole(
        self, request: BaseRequest, resp: aiohttp.ClientResponse, served: _Served, headers: Any
    ) -> None:
        try:
            data = await resp.read()
        except UPSTREAM_FAILURES as exc:
            resp.close()
            err = translate(exc, served.upstream)
            await self._reply_problem(request, served, err)
            return
        finally:
            resp.release()
        if served.body is not None:
            served.body.add(data)
        out = served.response = _Whole(status=resp.status, reason=resp.reason, headers=headers, body=data)
        try:
            await out.prepare(request)
            await out.write_eof()
        except ConnectionError:
            served.error = "client-disconnected"

    async def _send_streamed(
        self, request: BaseRequest, resp: aiohttp.ClientResponse, served: _Served, headers: Any
    ) -> None:
        out = served.response = _Streamed(status=resp.status, reason=resp.reason, headers=headers)
        tee = served.body
        content = resp.content
        try:
            await out.prepare(request)
            while True:
                try:
                    chunk = await content.readany()
                except UPSTREAM_FAILURES:
                    # Headers are gone already: the only honest signal left is to cut
                    # the connection, so the client sees a truncated message.
                    resp.close()
                    served.error = "reset"
                    self.runtime.metrics.inc(self.runtime.metrics.upstream_errors, served.upstream, "reset")
                    if request.transport is not None:
                        request.transport.close()
                    return
                if not chunk:
                    break
                if tee is not None:
                    tee.add(chunk)
                await out.write(chunk)
            await out.write_eof()
        except ConnectionError:  # the client went away; drop the upstream connection
            resp.close()
            served.error = "client-disconnected"
        finally:
            resp.release()

    async def _failed(
        self, request: BaseRequest, served: _Served, err: UpstreamError, route: Route | None, fallback: bool
    ) -> _Served:
        self.runtime.metrics.inc(self.runtime.metrics.upstream_errors, served.upstream, error_kind(err))
        if fallback:
            served.fallback = True
            served.error = error_kind(err)
            return served
        await self._reply_problem(request, served, err)
        return served

    async def _reply_problem(self, request: BaseRequest, served: _Served, err: UpstreamError) -> None:
        status = 504 if isinstance(err, UpstreamTimeout) else 502
        served.status = status
        served.error = error_kind(err)
        served.body = None  # nothing to compare: the upstream gave no answer
        out = served.response = problem(status, err)
        try:
            await out.prepare(request)
            await out.write_eof()
        except ConnectionError:
            served.error = "client-disconnected"

    async def _request_body(self, request: BaseRequest, tee: _Tee | None) -> AsyncIterator[bytes]:
        """Stream the client's body upstream (answering Expect: 100-continue lazily)."""
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(_CONTINUE)
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            if tee is not None:
                tee.add(chunk)
            yield chunk


async def start_proxy(
    runtime: ProxyRuntime, shadow: ShadowDispatcher, host: str, port: int, graphql: GraphQLGateway | None = None,
    limits: ProxyLimits | None = None,
) -> tuple[ProxyRunner, int]:
    """Listen on host:port (0 = any free port); returns the runner and the bound port.

    ``limits`` (default: the runtime config's ``proxy.limits``) bound what each
    client connection may hold (listener.py). ``await runner.cleanup()`` stops
    listening and closes the upstream pools; the shadow dispatcher is
    started/stopped by its owner.
    """
    config = runtime.config
    return await start_listener(
        ProxyHandler(runtime, shadow, graphql), host, port, limits or config.proxy.limits,
        upstream_connections=sum(u.max_connections * len(u.endpoint_list) for u in config.upstreams.values()),
    )
