"""The admin HTTP API: routes and their live counters, flips, upstreams and their
switches, the audit log, /metrics.

It listens on its own port, on 127.0.0.1 by default, and every call needs
``Authorization: Bearer <token>`` with one of ``proxy.admin_tokens`` (or
``STRANGLER_ADMIN_TOKEN``); the token's *name* is who the audit log records.
No header: 401. A token that is not known: 403. It refuses to start on a
non-loopback address when no token is configured.

A failure of the control database (503) or of the API itself (500) answers a
short message and an ``error_id``; the detail -- SQL, parameters, traceback --
goes only to the log line carrying the same id (admin_http.py: the error shape
and request bodies every call shares).

    GET  /routes                 routes and fields: mode, percent, source, counters, guardrails;
                                 "unmatched": counters of requests no route matched
    GET  /config                 the running config, secrets hidden (control/config_view.py)
    POST /routes/{name}/flip     {"mode": "canary", "percent": 5, "reason": "..."}; "cell": "c1" flips one cell
    GET  /cells, /cells/which?key=  cells: weight, shares, health, per-cell modes; where a key goes
    GET  /upstreams[/{name}]     every endpoint: zone, priority, health, in flight, drained, pinned zone
    POST /upstreams/{name}/failover  {"zone": "eu-west", "reason": "..."} or {"auto": true, "reason": "..."}
    POST /upstreams/{name}/drain     {"endpoint": "http://10.0.0.2:8001", "reason": "..."} (and /undrain)
    GET  /rollouts[/{id}]        staggered rollouts over cells (POST /rollouts starts one;
                                 POST /rollouts/{id}/pause|resume|abort; control/admin_rollouts.py)
    GET  /audit?name=&limit=     flips and switches, newest first
    POST /reload                 re-read strangler.yaml now (same as SIGHUP)
    GET  /metrics                Prometheus text format
    GET  /healthz
    GET  /_worker/counters       this worker's route counters (worker 0 of ``--workers N`` sums them)
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from strangler_proxy.config import Mode
from strangler_proxy.control import admin_cells, admin_rollouts, admin_upstreams
from strangler_proxy.control.admin_http import (
    WHO,
    error_response,
    json_object,
    logged_error,
    store_unavailable,
    text_field,
)
from strangler_proxy.control.admin_upstreams import EndpointStats
from strangler_proxy.control.config_view import config_view
from strangler_proxy.control.flips import FlipService
from strangler_proxy.control.precedence import file_value
from strangler_proxy.control.rollout_driver import RolloutDriver
from strangler_proxy.control.state_store import DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT
from strangler_proxy.control.switches import SwitchService
from strangler_proxy.control.worker_group import add_counters, merge_metrics
from strangler_proxy.disclosure import matching_token
from strangler_proxy.errors import ConfigError, FlipError, StoreError, StranglerError
from strangler_proxy.metrics import DEFAULT_ROUTE_LABEL

log = logging.getLogger("strangler.admin")

MAX_BODY = 64 * 1024
LOOPBACK_NAMES = frozenset({"localhost"})

GuardrailStatus = Callable[[str], Mapping[str, Any] | None]
Reload = Callable[[], Awaitable[Mapping[str, Any]]]


class Peers(Protocol):
    """The other workers of a group (``strangler proxy --workers N``), as worker 0 asks them."""

    async def metrics(self) -> list[tuple[int, str]]: ...

    async def counters(self) -> list[dict[str, dict[str, int]]]: ...


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the admin API needs from a running proxy."""

    flips: FlipService
    # name -> token, asked on every call so a reloaded file's tokens apply at once.
    tokens: Callable[[], Mapping[str, str]]
    guardrail_status: GuardrailStatus | None = None
    reload: Reload | None = None
    switches: SwitchService | None = None  # upstream failover and drain (absent: no /upstreams calls)
    endpoint_stats: EndpointStats | None = None  # what the endpoint pools know (health, in flight, latency)
    peers: Peers | None = None  # the other worker processes of this proxy (workers.py), whose counters add up
    rollouts: RolloutDriver | None = None  # staggered rollouts over cells (absent: no /rollouts calls)


CONTEXT = web.AppKey("context", AdminContext)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: Mapping[str, str]) -> None:
    """Refuse a non-loopback admin address without a token (ConfigError says how to fix it)."""
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"the admin API would listen on {host!r} without a token; set STRANGLER_ADMIN_TOKEN or "
            "proxy.admin_tokens, or bind it to 127.0.0.1",
            field="proxy.admin.host",
        )


# The keys a flip body may carry; anything else is refused, as strangler.yaml refuses unknown fields.
FLIP_KEYS = ("mode", "percent", "reason", "cell")


@web.middleware
async def _auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    tokens = ctx.tokens()
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        hint = "" if tokens else " (no admin token is configured: set STRANGLER_ADMIN_TOKEN)"
        return error_response(401, "unauthorized", "send Authorization: Bearer <admin token>" + hint,
                      **{"WWW-Authenticate": 'Bearer realm="strangler-admin"'})
    who = matching_token(tokens, presented.strip())
    if who is None:
        return error_response(403, "forbidden", "this token is not an admin token")
    request[WHO] = who
    return await handler(request)


@web.middleware
async def _unexpected(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Any exception a handler did not expect becomes a 500 with an error id,
    never a traceback in the answer (aiohttp's HTTP errors pass through)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 -- the detail goes to the log, see admin_http.logged_error
        return logged_error(500, "internal", f"{request.method} {request.path} failed", exc,
                             f"admin API: {request.method} {request.path} failed")


def _route_view(ctx: AdminContext, counters: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    flips = ctx.flips
    out: list[dict[str, Any]] = []
    for route in flips.runtime.table.routes:
        fv = file_value(flips.config, route.name)
        stored = flips.stored(route.name)
        out.append({
            "name": route.name,
            "path": route.config.path,
            "methods": list(route.config.methods),
            "legacy": route.legacy,
            "target": route.target,
            "mode": route.mode.value,
            "percent": route.percent,
            "source": "flip" if route.name in flips.runtime.overrides else "file",
            "file": {"mode": fv[0].value, "percent": fv[1]} if fv else None,
            "flipped_by": stored.updated_by if stored else None,
            "counters": dict(counters.get(route.name, {})),
            "guardrails": dict(ctx.guardrail_status(route.name) or {}) if ctx.guardrail_status else None,
        })
    return out


def _field_view(ctx: AdminContext) -> list[dict[str, Any]]:
    flips = ctx.flips
    out: list[dict[str, Any]] = []
    for name, fc in flips.config.graphql.fields.items():
        state = flips.field_state(name)
        assert state is not None
        out.append({
            "name": name,
            "target": fc.target,
            "mode": Mode(state.mode).value,
            "percent": state.percent,
            "source": "flip" if flips.stored(name) is not None else "file",
            "file": {"mode": fc.mode.value, "percent": float(fc.percent)},
            "flipped_by": stored.updated_by if (stored := flips.stored(name)) else None,
            "guardrails": dict(ctx.guardrail_status(name) or {}) if ctx.guardrail_status else None,
        })
    return out


async def _routes(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    counters = ctx.flips.runtime.route_counters()
    if ctx.peers is not None:  # one admin API for every worker: their counters add up
        counters = add_counters(counters, await ctx.peers.counters())
    return web.json_response({"routes": _route_view(ctx, counters), "fields": _field_view(ctx),
                              "unmatched": dict(counters.get(DEFAULT_ROUTE_LABEL, {})),
                              "cells": admin_cells.route_cells(ctx.flips, ctx.guardrail_status)})


async def _config(request: web.Request) -> web.Response:
    """The config in force (the file as last loaded), secrets hidden; flips are in /routes."""
    return web.json_response({"config": config_view(request.app[CONTEXT].flips.config)})


async def _flip(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    if file_value(ctx.flips.config, name) is None:
        return error_response(404, "not_found", f"{name}: no such route or field in the running config")
    body = await json_object(request, FLIP_KEYS, '{"mode": "canary", "percent": 5, "reason": "..."}')
    if not isinstance(body.get("mode"), str):
        return error_response(400, "bad_request", 'the body needs "mode" (legacy, shadow, canary, extracted)')
    percent = body.get("percent")
    if percent is not None and (
        isinstance(percent, bool) or not isinstance(percent, int | float)
        or (isinstance(percent, float) and not percent.is_integer())
    ):
        return error_response(400, "bad_request", f'"percent" must be a whole number 0..100 (as in the file), got {percent!r}')
    reason = text_field(body, "reason")
    name = admin_cells.flip_name(ctx.flips.config, name, body.get("cell"))
    try:
        outcome = await ctx.flips.flip(name, body["mode"], percent, who=request[WHO], reason=reason)
    except FlipError as exc:
        return error_response(400, "bad_request", str(exc))
    except StoreError as exc:
        return store_unavailable(f"{name}: the flip was not applied", exc)
    return web.json_response(outcome.as_json())


async def _audit(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    try:
        limit = int(request.query.get("limit", DEFAULT_AUDIT_LIMIT))
    except ValueError:
        return error_response(400, "bad_request", f"limit must be an integer 1..{MAX_AUDIT_LIMIT}")
    if not 1 <= limit <= MAX_AUDIT_LIMIT:
        return error_response(400, "bad_request", f"limit must be an integer 1..{MAX_AUDIT_LIMIT}")
    name = request.query.get("name") or None
    try:
        entries = await ctx.flips.audit(name=name, limit=limit)
    except StoreError as exc:
        return store_unavailable("the audit log cannot be read", exc)
    return web.json_response({"entries": [e.as_json() for e in entries]})


async def _reload(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    if ctx.reload is None:
        return error_response(404, "not_found", "this proxy was not started from a file")
    result = await ctx.reload()
    return web.json_response(dict(result), status=200 if result.get("ok") else 400)


async def _worker_counters(request: web.Request) -> web.Response:
    """This worker's own route counters (worker 0 adds them up for /routes)."""
    return web.json_response(request.app[CONTEXT].flips.runtime.route_counters())


async def _metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    own = generate_latest(ctx.flips.runtime.registry)
    if ctx.peers is not None:  # every worker's samples, labelled with its worker
        own = merge_metrics([(0, own.decode()), *await ctx.peers.metrics()])
    resp = web.Response(body=own)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def admin_app(ctx: AdminContext) -> web.Application:
    """The admin application (frozen on start by aiohttp)."""
    app = web.Application(middlewares=[_unexpected, _auth], client_max_size=MAX_BODY)
    app[CONTEXT] = ctx
    app.router.add_get("/routes", _routes)
    app.router.add_get("/config", _config)
    app.router.add_post("/routes/{name}/flip", _flip)
    if ctx.switches is not None:
        admin_upstreams.register(app, ctx.switches, ctx.endpoint_stats)
    admin_cells.register(app, ctx.flips, ctx.guardrail_status)
    if ctx.rollouts is not None:
        admin_rollouts.register(app, ctx.rollouts)
    app.router.add_get("/audit", _audit)
    app.router.add_post("/reload", _reload)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/_worker/counters", _worker_counters)
    app.router.add_get("/healthz", _healthz)
    return app


async def start_admin(ctx: AdminContext, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Bind the admin API; returns the runner (to clean up) and the bound port."""
    check_bind(host, ctx.tokens())
    runner = web.AppRunner(admin_app(ctx), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StranglerError(f"admin API cannot listen on {host}:{port}: {exc.strerror}") from exc
    return runner, int(runner.addresses[0][1])
