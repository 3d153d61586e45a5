"""The admin API's upstream calls: every endpoint's state, failover to a zone, drain.

    GET  /upstreams                  every upstream: its endpoints (index, URL, zone, priority,
                                     weight, drained) with what their pools know (health,
                                     ejections, in flight, latency), the pinned zone, who switched
    GET  /upstreams/{name}           one of them
    POST /upstreams/{name}/failover  {"zone": "eu-west", "reason": "..."} pins it to a zone;
                                     {"auto": true, "reason": "..."} gives it back to health
    POST /upstreams/{name}/drain     {"endpoint": URL | index | zone with one endpoint, "reason": "..."}
    POST /upstreams/{name}/undrain   the same

A change answers what it did (``changed`` False: it was already so) and, for a
drain, the endpoint's requests in flight on this replica: ``drain`` is
``drained`` once they are 0, else ``draining`` (``strangler drain --wait``
polls ``GET /upstreams/{name}`` until then). An unknown upstream is 404; a
refused change (an unknown zone or endpoint, the last endpoint) 400 naming why;
the control database failing 503 with nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from strangler_proxy.config import StranglerConfig, UpstreamConfig
from strangler_proxy.control import switch_rules as rules
from strangler_proxy.control.admin_http import (
    WHO,
    BadRequest,
    error_response,
    json_object,
    store_unavailable,
    text_field,
)
from strangler_proxy.control.state_store import StoredSwitch
from strangler_proxy.control.switches import SwitchOutcome, SwitchService
from strangler_proxy.dataplane.health import EndpointBoard
from strangler_proxy.errors import StoreError, SwitchError
from strangler_proxy.routing.endpoints import UpstreamSwitch

# upstream name -> {endpoint URL as the file gives it -> what its pools know now}; an
# upstream no request has reached yet may have none (nothing in flight).
EndpointStats = Callable[[str], Mapping[str, Mapping[str, Any]]]

FAILOVER_KEYS = ("zone", "auto", "reason")
DRAIN_KEYS = ("endpoint", "reason")
DRAINING, DRAINED = "draining", "drained"
OTHER_ZONE = "pinned to another zone"


def board_stats(board: EndpointBoard, config: Callable[[], StranglerConfig]) -> EndpointStats:
    """What ``board`` (``runtime.endpoints``, shared by every pool of a proxy) knows of an
    upstream's endpoints under the running ``config()``."""

    def stats(name: str) -> dict[str, dict[str, Any]]:
        return {s.url: s.as_json() for s in board.describe(config()) if s.upstream == name}

    return stats


@dataclass(frozen=True, slots=True)
class _Upstreams:
    switches: SwitchService
    stats: EndpointStats | None


UPSTREAMS = web.AppKey("upstreams", _Upstreams)


def endpoint_views(up: UpstreamConfig, switch: UpstreamSwitch, stats: Mapping[str, Mapping[str, Any]]
                   ) -> list[dict[str, Any]]:
    """Each endpoint of ``up`` as the admin API shows it: the file's settings, the pools'
    live figures, and what the switches do to it (``excluded``: why it is not chosen)."""
    out: list[dict[str, Any]] = []
    for index, e in enumerate(up.endpoint_list):
        key = rules.endpoint_key(e)
        live = dict(stats.get(e.url) or {})
        for own in ("url", "upstream", "drained"):  # the real URL (the key hides a password); ours below
            live.pop(own, None)
        in_flight = int(live.pop("in_flight", 0) or 0)
        drained = key in switch.drained
        excluded = DRAINED if drained else (
            OTHER_ZONE if switch.pinned_zone is not None and e.zone != switch.pinned_zone else None)
        out.append({
            "index": index, "url": key, "zone": e.zone, "priority": e.priority, "weight": e.weight,
            **live,
            "in_flight": in_flight,
            "drained": drained,
            "drain": (DRAINED if in_flight == 0 else DRAINING) if drained else None,
            "excluded": excluded,
        })
    return out


def upstream_view(name: str, up: UpstreamConfig, switch: UpstreamSwitch, stored: StoredSwitch | None,
                  stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "pinned_zone": switch.pinned_zone,
        "zones": rules.zones(up),
        "switched_by": stored.updated_by if stored is not None else None,
        "endpoints": endpoint_views(up, switch, stats),
    }


def _view(ctx: _Upstreams, name: str) -> dict[str, Any]:
    up = ctx.switches.config.upstreams[name]
    stats = ctx.stats(name) if ctx.stats is not None else {}
    return upstream_view(name, up, ctx.switches.switch(name), ctx.switches.stored(name), stats)


def _unknown(ctx: _Upstreams, name: str) -> web.Response | None:
    if name in ctx.switches.config.upstreams:
        return None
    known = ", ".join(sorted(ctx.switches.config.upstreams))
    return error_response(404, "not_found", f"{name}: no such upstream in the running config (known: {known})")


async def _list(request: web.Request) -> web.Response:
    ctx = request.app[UPSTREAMS]
    return web.json_response({"upstreams": [_view(ctx, name) for name in ctx.switches.config.upstreams]})


async def _one(request: web.Request) -> web.Response:
    ctx = request.app[UPSTREAMS]
    name = request.match_info["name"]
    return _unknown(ctx, name) or web.json_response(_view(ctx, name))


def _answer(ctx: _Upstreams, outcome: SwitchOutcome) -> web.Response:
    body = outcome.as_json()
    if outcome.endpoint is not None:
        [view] = [e for e in _view(ctx, outcome.upstream)["endpoints"] if e["url"] == outcome.endpoint]
        body["in_flight"] = view["in_flight"]
        body["drain"] = view["drain"]
    return web.json_response(body)


async def _failover(request: web.Request) -> web.Response:
    ctx = request.app[UPSTREAMS]
    name = request.match_info["name"]
    if (missing := _unknown(ctx, name)) is not None:
        return missing
    body = await json_object(request, FAILOVER_KEYS, '{"zone": "eu-west", "reason": "..."} or {"auto": true}')
    zone, auto = body.get("zone"), body.get("auto")
    if auto is not None and not isinstance(auto, bool):
        raise BadRequest(f'"auto" must be true or false, got {auto!r}')
    if (zone is None) == (auto is not True):
        raise BadRequest('give "zone" (pin to it) or "auto": true (health decides again), one of them')
    if zone is not None and (not isinstance(zone, str) or not zone):
        raise BadRequest('"zone" must be a zone name')
    reason = text_field(body, "reason")
    try:
        outcome = await ctx.switches.failover(name, zone, who=request[WHO], reason=reason)
    except SwitchError as exc:
        return error_response(400, "bad_request", str(exc))
    except StoreError as exc:
        return store_unavailable(f"{name}: the failover was not applied", exc)
    return _answer(ctx, outcome)


def _drainer(undrain: bool) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        ctx = request.app[UPSTREAMS]
        name = request.match_info["name"]
        if (missing := _unknown(ctx, name)) is not None:
            return missing
        body = await json_object(request, DRAIN_KEYS, '{"endpoint": "http://10.0.0.2:8001", "reason": "..."}')
        endpoint = body.get("endpoint")
        if isinstance(endpoint, int) and not isinstance(endpoint, bool):
            endpoint = str(endpoint)  # an index
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise BadRequest('"endpoint" must name one: its URL, its index, or a zone with one endpoint')
        reason = text_field(body, "reason")
        change = ctx.switches.undrain if undrain else ctx.switches.drain
        try:
            outcome = await change(name, endpoint, who=request[WHO], reason=reason)
        except SwitchError as exc:
            return error_response(400, "bad_request", str(exc))
        except StoreError as exc:
            return store_unavailable(f"{name}: the {'undrain' if undrain else 'drain'} was not applied", exc)
        return _answer(ctx, outcome)

    return handle


def register(app: web.Application, switches: SwitchService, stats: EndpointStats | None) -> None:
    """Add the upstream calls to the admin application (before it is frozen)."""
    app[UPSTREAMS] = _Upstreams(switches, stats)
    app.router.add_get("/upstreams", _list)
    app.router.add_get("/upstreams/{name}", _one)
    app.router.add_post("/upstreams/{name}/failover", _failover)
    app.router.add_post("/upstreams/{name}/drain", _drainer(undrain=False))
    app.router.add_post("/upstreams/{name}/undrain", _drainer(undrain=True))
