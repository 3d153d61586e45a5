"""The admin API's cell calls: each cell's weight, share of keys and of recent traffic, health
and per-cell modes; where a key goes and why.

    GET /cells              every cell: weight, share of the keys, share of this proxy's recent
                            requests, health of its own upstreams (``NAME@CELL``), and the mode
                            of every route and field in it (its own override, or the global mode)
    GET /cells/which?key=K  the cell of key K and why (pinned, hashed to a slot, or no key)

Without a ``cells:`` section both answer 200 with ``"enabled": false`` and a
message saying so (nothing to show is not an error). A flip of one cell is
``POST /routes/{name}/flip`` with ``"cell"`` in the body (:func:`flip_name`),
and ``GET /routes`` carries every route's per-cell state (:func:`route_cells`).

Recent traffic is read from this proxy's own ``strangler_proxy_requests_total``
(its ``cell`` label: REST requests, one replica): a sampler keeps the counts of
the last :data:`TRAFFIC_WINDOW_S` seconds, one sample every
:data:`TRAFFIC_SAMPLE_S`, and the share is over the requests counted since the
oldest sample kept (``traffic_window_s`` in the answer: shorter just after start).

    >>> w = TrafficWindow(window_s=60)
    >>> w.sample(0.0, {"c1": 10, "c2": 0})
    >>> w.sample(30.0, {"c1": 20, "c2": 30})
    >>> w.recent(40.0, {"c1": 40, "c2": 50})   # all since the first sample: 40 s of the 60
    (40.0, {'c1': 30, 'c2': 50})
    >>> w.sample(90.0, {"c1": 60, "c2": 50})   # the sample at 0 is past the window: 30 is the baseline
    >>> w.recent(95.0, {"c1": 70, "c2": 50})
    (65.0, {'c1': 50, 'c2': 20})
    >>> cell_health([UpstreamHealth("legacy@c1", "legacy", 2, 1, 0)])
    'degraded'
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from strangler_proxy.config import Mode, StranglerConfig
from strangler_proxy.control.admin_http import BadRequest, error_response
from strangler_proxy.control.flips import FlipService
from strangler_proxy.control.precedence import is_field
from strangler_proxy.dataplane.health import EndpointStatus
from strangler_proxy.routing.cells import SLOTS, CellTable, Placement, scoped, split_scoped

TRAFFIC_WINDOW_S = 300.0
TRAFFIC_SAMPLE_S = 10.0
NO_CELLS = "this config has no cells: section"
HEALTHY, DEGRADED, DOWN, NO_OWN = "healthy", "degraded", "down", "no upstreams of its own"
SOURCE_CELL, SOURCE_GLOBAL = "cell", "global"

GuardrailStatus = Callable[[str], Mapping[str, Any] | None]


# ------------------------------------------------------------------ pure parts


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    """One of a cell's own upstreams: how many endpoints it has, serve, are drained."""

    name: str  # NAME@CELL
    base: str  # NAME
    endpoints: int
    serving: int  # healthy (not ejected, checks pass) and not drained
    drained: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "upstream": self.base, "endpoints": self.endpoints, "serving": self.serving,
                "drained": self.drained}


def cell_health(upstreams: list[UpstreamHealth]) -> str:
    """``down`` when one of the cell's upstreams has no endpoint to serve, ``degraded`` when
    one has fewer than all, else ``healthy``."""
    if not upstreams:
        return NO_OWN
    if any(u.serving == 0 for u in upstreams):
        return DOWN
    if any(u.serving < u.endpoints for u in upstreams):
        return DEGRADED
    return HEALTHY


class TrafficWindow:
    """Cumulative per-cell request counts sampled over time; :meth:`recent` is what was
    added since the oldest sample within ``window_s`` (see the module docstring)."""

    def __init__(self, window_s: float = TRAFFIC_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, now: float, counts: Mapping[str, int]) -> None:
        self._samples.append((now, dict(counts)))
        # Keep one sample at or before the window's start: it is the baseline.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def recent(self, now: float, counts: Mapping[str, int]) -> tuple[float, dict[str, int]]:
        """(seconds covered, requests per cell in them)."""
        if not self._samples:
            return 0.0, {cell: 0 for cell in counts}
        base = self._samples[0]
        for sample in self._samples:  # the newest sample at or before the window's start
            if sample[0] <= now - self.window_s:
                base = sample
        since, then = base
        return now - since, {cell: max(0, n - then.get(cell, 0)) for cell, n in counts.items()}


def requests_by_cell(flips: FlipService) -> dict[str, int]:
    """Every client request this proxy counted, by its ``cell`` label (empty: no cells)."""
    out: dict[str, int] = {}
    for family in flips.runtime.metrics.requests_total.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels.get("cell"):
                out[s.labels["cell"]] = out.get(s.labels["cell"], 0) + int(s.value)
    return out


def placement_json(table: CellTable, placement: Placement) -> dict[str, Any]:
    cell = placement.cell
    return {
        "enabled": True,
        "key": placement.key,
        "cell": cell,
        "why": placement.why,
        "pinned": placement.key is not None and placement.key in table.pins,
        "slot": placement.slot,
        "slots": SLOTS,
        "partition_key": table.spec,
        "weight": table.weights.get(cell) if cell is not None else None,
        "upstreams": [scoped(u, cell) for u in table.config.cells[table.names.index(cell)].upstreams] if cell else [],
    }


def unknown_cell(config: StranglerConfig, cell: str) -> str | None:
    """Why ``cell`` cannot be named in ``config``, or None."""
    if config.cells is None:
        return f"no such cell {cell!r}: {NO_CELLS}"
    if cell not in config.cells.names:
        return f"no such cell {cell!r} (cells: {', '.join(config.cells.names)})"
    return None


def flip_name(config: StranglerConfig, name: str, cell: object) -> str:
    """The name a flip of ``name`` with the body's ``cell`` changes (``ratings@c1``);
    :class:`BadRequest` for a cell that is not text or not in the config."""
    if cell is None:
        return name
    if not isinstance(cell, str) or not cell:
        raise BadRequest('"cell" must be the name of a cell')
    if split_scoped(name)[1] is not None:
        raise BadRequest(f"{name} already names a cell; leave \"cell\" out, or flip {split_scoped(name)[0]}")
    problem = unknown_cell(config, cell)
    if problem is not None:
        raise BadRequest(problem)
    return scoped(name, cell)


# ------------------------------------------------------------------ views


def _names(config: StranglerConfig) -> list[str]:
    return [r.name for r in config.routes] + list(config.graphql.fields)


def _mode_entry(flips: FlipService, status: GuardrailStatus | None, name: str, cell: str) -> dict[str, Any]:
    own = scoped(name, cell)
    state = flips.state(own)
    stored = flips.stored(own)
    assert state is not None
    return {
        "name": name,
        "kind": "field" if is_field(name) else "route",
        "mode": Mode(state.mode).value,
        "percent": state.percent,
        "source": SOURCE_CELL if stored is not None else SOURCE_GLOBAL,
        "flipped_by": stored.updated_by if stored is not None else None,
        "guardrails": dict(status(own) or {}) if status is not None else None,
    }


def route_cells(flips: FlipService, status: GuardrailStatus | None) -> dict[str, list[dict[str, Any]]] | None:
    """Every route's and field's state in each cell (for ``GET /routes``); None without cells."""
    config = flips.config
    if config.cells is None:
        return None
    return {name: [{"cell": cell, **_mode_entry(flips, status, name, cell)} for cell in config.cells.names]
            for name in _names(config)}


def upstream_health(statuses: list[EndpointStatus], cell: str, own: list[str]) -> list[UpstreamHealth]:
    """The cell's own upstreams (``own``: their names without the cell) as the endpoint
    board sees them (``statuses``: :meth:`EndpointBoard.describe`)."""
    by_upstream: dict[str, list[EndpointStatus]] = {}
    for st in statuses:
        by_upstream.setdefault(st.upstream, []).append(st)
    out = []
    for base in own:
        name = scoped(base, cell)
        eps = by_upstream.get(name)
        if eps is None:
            continue
        out.append(UpstreamHealth(name, base, len(eps), sum(e.healthy and not e.drained for e in eps),
                                  sum(e.drained for e in eps)))
    return out


@dataclass(slots=True)
class _Cells:
    flips: FlipService
    status: GuardrailStatus | None
    traffic: TrafficWindow


CELLS = web.AppKey("cells", _Cells)


def cells_view(ctx: _Cells, now: float) -> dict[str, Any]:
    flips = ctx.flips
    config, table = flips.config, flips.runtime.snapshot.cells
    if config.cells is None or table is None:
        return {"enabled": False, "message": NO_CELLS, "cells": []}
    counts = requests_by_cell(flips)
    window_s, recent = ctx.traffic.recent(now, {c: counts.get(c, 0) for c in table.names})
    total_recent = sum(recent.values())
    key_shares = table.shares()
    names = _names(config)
    statuses = flips.runtime.endpoints.describe(config)  # the board every pool of this proxy shares
    cells = []
    for cell in config.cells.cells:
        health = upstream_health(statuses, cell.name, list(cell.upstreams))
        modes = [_mode_entry(flips, ctx.status, name, cell.name) for name in names]
        cells.append({
            "name": cell.name,
            "weight": cell.weight,
            "key_share": round(key_shares[cell.name], 6),
            "pins": sorted(k for k, c in table.pins.items() if c == cell.name),
            "traffic": {
                "requests": recent[cell.name],
                "share": round(recent[cell.name] / total_recent, 6) if total_recent else None,
                "since_start": counts.get(cell.name, 0),
            },
            "health": {"state": cell_health(health), "upstreams": [u.as_json() for u in health]},
            "overrides": [m for m in modes if m["source"] == SOURCE_CELL],
            "following": [m["name"] for m in modes if m["source"] == SOURCE_GLOBAL],
            "modes": modes,
        })
    return {
        "enabled": True,
        "partition_key": table.spec,
        "unkeyed": config.cells.unkeyed,
        "traffic_window_s": round(window_s, 3),
        "cells": cells,
    }


async def _list(request: web.Request) -> web.Response:
    ctx = request.app[CELLS]
    return web.json_response(cells_view(ctx, time.monotonic()))


async def _which(request: web.Request) -> web.Response:
    ctx = request.app[CELLS]
    table = ctx.flips.runtime.snapshot.cells
    if table is None:
        return web.json_response({"enabled": False, "message": NO_CELLS})
    if "key" not in request.query:
        return error_response(400, "bad_request", "name the key: /cells/which?key=KEY (an empty key: the unkeyed rule)")
    return web.json_response(placement_json(table, table.explain(request.query["key"])))


def _sampler(ctx: _Cells, every_s: float) -> Callable[[web.Application], AsyncIterator[None]]:
    """Samples the per-cell counts while the admin API runs."""

    async def run() -> None:
        while True:
            ctx.traffic.sample(time.monotonic(), requests_by_cell(ctx.flips))
            await asyncio.sleep(every_s)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name="strangler-cell-traffic")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return lifetime


def register(app: web.Application, flips: FlipService, status: GuardrailStatus | None, *,
             window_s: float = TRAFFIC_WINDOW_S, sample_s: float = TRAFFIC_SAMPLE_S) -> None:
    """Add the cell calls to the admin application (before it is frozen)."""
    ctx = _Cells(flips, status, TrafficWindow(window_s))
    app[CELLS] = ctx
    app.router.add_get("/cells", _list)
    app.router.add_get("/cells/which", _which)
    app.cleanup_ctx.append(_sampler(ctx, sample_s))
