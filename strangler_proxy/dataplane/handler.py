"""The proxy's request handler: match -> choose side -> forward -> hand the shadow off.

It runs behind the listener (listener.py: an asyncio protocol on httptools, one
:class:`~strangler_proxy.dataplane.listener.Request` per request, no framework
objects) and forwards through the lean upstream connections (upstream.py): the
raw request-target is the routing input and the forwarded target, so what is
matched is exactly what is sent. The handler writes the answer itself
(``request.start/write/end``, or ``request.send`` for a whole one). See docs/proxy.md.

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
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from strangler_proxy.config import Mode, ProxyLimits, StranglerConfig, UpstreamConfig
from strangler_proxy.dataplane.forwarder import (
    decoded,
    error_kind,
    request_headers,
    response_fields,
    response_headers,
    translate,
)
from strangler_proxy.dataplane.listener import ProxyRunner, RawHeaders, Request, start_listener
from strangler_proxy.dataplane.pool import Upstreams
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.dataplane.shadow import (
    SKIP_BODY_TOO_LARGE,
    ShadowDispatcher,
    ShadowJob,
)
from strangler_proxy.dataplane.upstream import KeepAlive, LeanEndpointClient, LeanResponse, UpstreamClosed
from strangler_proxy.diff.exchange import Exchange, Side
from strangler_proxy.disclosure import may_disclose
from strangler_proxy.errors import UpstreamError, UpstreamTimeout
from strangler_proxy.graphql.gateway import GraphQLGateway
from strangler_proxy.headers import CELL_HEADER, DRY_RUN_HEADER, FALLBACK_HEADER, SERVED_BY_HEADER, SHADOW_HEADER
from strangler_proxy.routing.canary import serves_target
from strangler_proxy.routing.cells import cell_upstream, scoped
from strangler_proxy.routing.methods import SAFE_METHODS
from strangler_proxy.routing.router import Route

DEFAULT_ROUTE = "_default"
GRAPHQL_ROUTE = "graphql"
_PROBLEM_TYPE = [("Content-Type", "application/problem+json")]
BRIDGE_TIMEOUT_S = 300.0
BRIDGE_CONNECTIONS = 256
_CELL_HEADER_LOWER = CELL_HEADER.lower()


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


def problem(status: int, err: UpstreamError) -> bytes:
    """RFC 9457 problem body naming the upstream."""
    title = "Gateway Timeout" if status == 504 else "Bad Gateway"
    return orjson.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": str(err), "upstream": err.upstream}
    )


class _Served:
    """What the served side produced (for counters, logs and the shadow pair)."""

    __slots__ = ("status", "upstream", "side", "latency_s", "headers", "resp_headers", "body", "error", "fallback")

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


class ProxyHandler:
    """The data plane. Owns one endpoint pool per upstream (dataplane/pool.py),
    whose connections are the lean ones (dataplane/upstream.py)."""

    def __init__(
        self, runtime: ProxyRuntime, shadow: ShadowDispatcher, graphql: GraphQLGateway | None = None
    ) -> None:
        self.runtime = runtime
        self.shadow = shadow
        self.graphql = graphql  # answers config.graphql.path when GraphQL is enabled
        # health shared with the shadow path's pools; idle connections shared by address
        # (the cells' copies of an upstream that share a backend find each other's warm ones)
        self.upstreams = Upstreams(runtime.endpoints, client_factory=partial(LeanEndpointClient, keepalive=KeepAlive()))
        self.graphql_bridge: GraphQLBridge | None = None

    async def close(self) -> None:
        await self.upstreams.close()
        if self.graphql_bridge is not None:
            await self.graphql_bridge.close()

    async def __call__(self, request: Request) -> None:
        start = time.perf_counter()
        runtime = self.runtime
        snap = runtime.snapshot
        method = request.method
        path, _, query = request.raw_path.partition("?")
        if not path.startswith("/") and "://" in path:  # absolute-form -> origin-form
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if self.graphql is not None and path == snap.config.graphql.path and self.graphql_bridge is not None:
            await self._serve_graphql(request, self.graphql_bridge, start)
            return
        headers = request.headers
        route = snap.table.match(method, path, headers)

        # ---- the cell: its own copy of every upstream, and its own modes
        cell: str | None = None
        cells = snap.cells
        if cells is not None:
            pvars = route.bind(path) if route is not None and cells.kind == "path" else {}
            cell = cells.assign(cells.key(pvars, headers, query))
            if cell is None:
                self._unkeyed(request, route, cells.spec, start)
                return
            if route is not None:
                route = snap.tables.for_cell(cell).get(route.name) or route

        # ---- choose the side that serves, and whether to mirror
        if route is None:
            name, mode = DEFAULT_ROUTE, "legacy"
            served = await self._forward(request, snap.config, snap.config.proxy.default_upstream, "legacy",
                                         method, path, query, None, None, cell)
        elif route.mode is Mode.LEGACY:  # pass-through: straight to the forward (one frame fewer)
            name, mode = route.name, "legacy"
            served = await self._forward(request, snap.config, route.legacy, "legacy", method, path, query, route,
                                         None, cell)
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

    def _unkeyed(self, request: Request, route: Route | None, spec: str, start: float) -> None:
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
        request.send(400, b"Bad Request", _PROBLEM_TYPE, body, own=True)

    async def _serve_graphql(self, request: Request, bridge: GraphQLBridge, start: float) -> None:
        """The gateway answers (on its aiohttp server, see :class:`GraphQLBridge`); each field goes to its
        owner; with cells, in the cell the request's key picks (the gateway reads the key: it may be an
        argument) and names back in :data:`CELL_HEADER`, which is read here and never forwarded."""
        served = _Served(GRAPHQL_ROUTE, "legacy")
        # The client's own headers (admin token included: the gateway decides disclosure), hop-by-hop dropped.
        headers = response_headers(request.raw_headers, request.connection)
        body = self._request_body(request, None) if request.body is not None else None
        cell: str | None = None
        try:
            resp = await bridge.client.send(request.method, request.raw_path, "", headers, body)
        except (OSError, TimeoutError) as exc:  # the gateway's server is in this process: hardly ever
            await self._reply_problem(request, served, translate(exc, GRAPHQL_ROUTE))
        else:
            served.status = resp.status
            out = []
            for k, v in response_headers(resp.raw_headers, None):
                lk = k.lower()
                if lk == _CELL_HEADER_LOWER:
                    cell = v or None
                elif lk != "server":
                    out.append((k, v))
            await self._stream(request, resp, served, out, own=True)
        duration = time.perf_counter() - start
        runtime = self.runtime
        runtime.metrics.request(GRAPHQL_ROUTE, "gateway", GRAPHQL_ROUTE, served.status, duration, cell or "")
        runtime.counters(GRAPHQL_ROUTE).requests += 1
        runtime.access_log.emit(GRAPHQL_ROUTE, "gateway", GRAPHQL_ROUTE, request.method, request.raw_path,
                                served.status, duration, False, None, cell)

    async def _serve_route(
        self, request: Request, config: StranglerConfig, route: Route, method: str, path: str, query: str,
        cell: str | None,
    ) -> _Served:
        mode = route.mode
        assert mode is not Mode.LEGACY  # __call__ forwards those itself
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
        self, request: Request, config: StranglerConfig, route: Route, method: str, path: str, query: str,
        cell: str | None, key: str | None,
    ) -> _Served:
        tee = self._shadow_tee(request, route, method, cell)
        served = await self._forward(request, config, route.legacy, "legacy", method, path, query, route, tee, cell)
        if tee is not None:
            self._submit(request, config, route, served, tee, route.target or "", route.target_path(path), path,
                         query, key, cell)
        return served

    async def _serve_target(
        self, request: Request, config: StranglerConfig, route: Route, method: str, path: str, query: str,
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
            self._submit(request, config, route, served, tee, route.legacy, path, target_path, query, None, cell)
        return served

    # ------------------------------------------------------------ shadow hand-off
    def _shadow_tee(self, request: Request, route: Route, method: str, cell: str | None) -> _Tee | None:
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
        self, request: Request, config: StranglerConfig, route: Route, served: _Served, tee: _Tee,
        mirror_upstream: str, mirror_path: str, served_path: str, query: str, key: str | None, cell: str | None,
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
        self.shadow.submit(ShadowJob(
            route=name, mode=route.mode.value, served_by=served.side, served=exchange,
            upstream=cell_upstream(config.upstreams, mirror_upstream, cell), method=request.method, raw_path=mirror_path, raw_query=query,
            headers=tuple(headers), body=body, compare=route.compare, partition=key,
        ))

    # ------------------------------------------------------------ the upstream call
    async def _forward(
        self, request: Request, config: StranglerConfig, upstream: str, side: Side, method: str,
        path: str, query: str, route: Route | None, tee: _Tee | None, cell: str | None, *, fallback: bool = False,
        mark_fallback: bool = False,
    ) -> _Served:
        """Forward to ``upstream`` and stream its answer to the client.

        With ``fallback`` a connect error, timeout or 5xx is not sent to the
        client: the result has ``fallback=True`` and the caller retries legacy.
        """
        if cell is not None:
            upstream = cell_upstream(config.upstreams, upstream, cell)  # the cell's own copy
        served = _Served(upstream, side)
        if mark_fallback:
            served.fallback = True
        client = self.upstreams.get(upstream, config.upstreams[upstream])
        headers = request_headers(request.raw_headers, connection=request.connection,
                                  client_ip=request.remote, scheme="http", keep_host=client.keep_host)
        served.headers = headers
        body: AsyncIterator[bytes] | bytes | None = None
        if request.body is not None:
            if request.body.complete:  # all in already (most bodies): one write with the head
                request.continue_body()
                body = request.body.whole()
                if tee is not None:
                    tee.add(body)
            else:
                body = self._request_body(request, tee)
        t0 = time.perf_counter()
        try:
            resp: LeanResponse = await client.send(method, path, query, headers, body)  # type: ignore[assignment]
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
        fields = response_fields(resp.raw_headers, resp.hop)
        if tee is not None:
            served.resp_headers = tuple(decoded(fields))
            served.body = _Tee(tee.limit)
        ours: list[tuple[str, str]] = []
        if served.fallback:
            ours.append((FALLBACK_HEADER, "1"))
        if may_disclose(config, request.headers):  # one flag, one header lookup when it is not
            ours.append((SERVED_BY_HEADER, upstream))
        await self._stream(request, resp, served, ours, fields=fields)
        return served

    async def _stream(self, request: Request, resp: LeanResponse, served: _Served, headers: Any,
                      own: bool = False, fields: RawHeaders = ()) -> None:
        """The upstream's answer to the client: its head (``fields`` as received, then ``headers``),
        then its body as it arrives, the upstream paused while the client's socket is full."""
        tee = served.body
        if request.disconnected:
            resp.close()
            served.error = "client-disconnected"
            return
        # The upstream's framing is its own hop: a known length is kept (its Content-Length
        # header is end-to-end), a chunked or close-delimited body is chunked for the client.
        length = 0 if resp.bodiless else None if resp.chunked else resp.content_length
        request.start(resp.status, resp.reason, headers, length=length, own=own, fields=fields)
        request.feeder = resp
        try:
            await resp.pipe(request, tee.add if tee is not None else None)
        except (UpstreamClosed, TimeoutError, OSError):
            if request.disconnected:
                served.error = "client-disconnected"
                return
            # Headers are gone already: the only honest signal left is to cut
            # the connection, so the client sees a truncated message.
            served.error = "reset"
            self.runtime.metrics.inc(self.runtime.metrics.upstream_errors, served.upstream, "reset")
            request.abort()
            return
        finally:
            request.feeder = None
        if request.disconnected:
            served.error = "client-disconnected"
            return
        request.end()

    async def _failed(
        self, request: Request, served: _Served, err: UpstreamError, route: Route | None, fallback: bool
    ) -> _Served:
        self.runtime.metrics.inc(self.runtime.metrics.upstream_errors, served.upstream, error_kind(err))
        if fallback:
            served.fallback = True
            served.error = error_kind(err)
            return served
        await self._reply_problem(request, served, err)
        return served

    async def _reply_problem(self, request: Request, served: _Served, err: UpstreamError) -> None:
        status = 504 if isinstance(err, UpstreamTimeout) else 502
        served.status = status
        served.error = error_kind(err)
        served.body = None  # nothing to compare: the upstream gave no answer
        if request.disconnected:
            served.error = "client-disconnected"
            return
        if request.started:  # pragma: no cover -- a failure after the head is a reset, not a problem
            request.abort()
            return
        request.send(status, b"Gateway Timeout" if status == 504 else b"Bad Gateway", _PROBLEM_TYPE,
                     problem(status, err), own=True)

    async def _request_body(self, request: Request, tee: _Tee | None) -> AsyncIterator[bytes]:
        """Stream the client's body upstream (answering Expect: 100-continue lazily)."""
        request.continue_body()
        assert request.body is not None
        async for chunk in request.body:
            if tee is not None:
                tee.add(chunk)
            yield chunk


class GraphQLBridge:
    """The GraphQL gateway's own aiohttp server on a loopback port, which the
    lean path forwards ``graphql.path`` to: the gateway keeps its aiohttp
    handler (query parsing, CORS, the 405s), the proxy keeps one forwarding path."""

    def __init__(self, handler: ProxyHandler) -> None:
        self.handler = handler
        self.runner: web.ServerRunner | None = None
        self.client: LeanEndpointClient

    async def start(self, config: StranglerConfig) -> None:
        self.runner = web.ServerRunner(web.Server(self._handle, access_log=None), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}"
        # The gateway bounds its own backend fetches; this only bounds a gateway that hangs.
        self.client = LeanEndpointClient(GRAPHQL_ROUTE, url, UpstreamConfig(url=url, timeout_s=BRIDGE_TIMEOUT_S,
                                                                            max_connections=BRIDGE_CONNECTIONS))

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        gateway = self.handler.graphql
        if gateway is None:  # pragma: no cover -- the bridge is only used while a gateway is mounted
            return web.Response(status=503)
        runtime = self.handler.runtime
        disclose = may_disclose(runtime.config, request.headers)  # the running config's flag
        response, cell = await gateway.respond(request, disclose=disclose,  # type: ignore[arg-type]  # BaseRequest is enough
                                               cells=runtime.snapshot.cells)
        if cell is not None:  # for the lean path's metrics and log; it reads and strips it
            response.headers[CELL_HEADER] = cell
        return response

    async def close(self) -> None:
        await self.client.close()
        if self.runner is not None:
            await self.runner.cleanup()


async def start_proxy(
    runtime: ProxyRuntime, shadow: ShadowDispatcher, host: str, port: int, graphql: GraphQLGateway | None = None,
    limits: ProxyLimits | None = None, *, reuse_port: bool = False,
) -> tuple[ProxyRunner, int]:
    """Listen on host:port (0 = any free port); returns the runner and the bound port.

    ``limits`` (default: the runtime config's ``proxy.limits``) bound what each
    client connection may hold (listener.py). ``await runner.cleanup()`` stops
    listening and closes the upstream pools; the shadow dispatcher is
    started/stopped by its owner. With GraphQL enabled the gateway's bridge
    starts too (a gateway composed later is mounted by setting ``handler.graphql``).
    """
    config = runtime.config
    handler = ProxyHandler(runtime, shadow, graphql)
    if graphql is not None or config.graphql.enabled:
        handler.graphql_bridge = GraphQLBridge(handler)
        await handler.graphql_bridge.start(config)
    return await start_listener(
        handler, host, port, limits or config.proxy.limits, reuse_port=reuse_port,
        upstream_connections=sum(u.max_connections * len(u.endpoint_list) for u in config.upstreams.values()),
    )
