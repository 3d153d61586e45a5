"""The admin API's rollout calls: start, status, pause, resume, abort (docs/rollouts.md).

    GET  /rollouts[?active=1&limit=N]  rollouts, newest first (active: running, paused, rolling back)
    POST /rollouts                     {"name": "ratings", "to": "extracted" | "canary:25",
                                        "waves": "c1;c2,c3;rest", "steps": "5,25,100", "bake": "5m",
                                        "max_wait": "30m", "min_samples": 200, "on_failure": "rollback",
                                        "reason": "..."}  -> 201 and the rollout
    GET  /rollouts/{id}                one rollout, its plan, last gate figures and history
    POST /rollouts/{id}/pause          {"reason": "..."}; likewise /resume and /abort

A refused start (an unknown route or cell, a cell in two waves, an empty wave, a
bad duration, another active rollout of the route) is 400 or 409 naming why; an
unknown id 404; the control database failing 503 with nothing changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from strangler_proxy.control.admin_http import (
    WHO,
    BadRequest,
    error_response,
    json_object,
    store_unavailable,
    text_field,
)
from strangler_proxy.control.rollout_driver import RolloutDriver
from strangler_proxy.control.rollout_store import RolloutEvent
from strangler_proxy.control.rollouts import (
    DEFAULT_BAKE_S,
    DEFAULT_MAX_WAIT_S,
    Phase,
    Rollout,
    RolloutError,
    RolloutSpec,
    parse_duration,
    parse_steps,
    parse_target,
    parse_waves,
)
from strangler_proxy.errors import StoreError

START_KEYS = ("name", "to", "waves", "steps", "bake", "max_wait", "min_samples", "on_failure", "reason")
OPERATOR_KEYS = ("reason",)
MAX_LIST = 100
DEFAULT_LIST = 20
START_EXAMPLE = '{"name": "ratings", "to": "extracted", "waves": "c1;rest", "bake": "5m", "reason": "..."}'

DRIVER = web.AppKey("rollouts", RolloutDriver)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def rollout_view(r: Rollout, events: list[RolloutEvent] | None = None) -> dict[str, Any]:
    """A rollout as the admin API (and ``strangler rollout status --json``) shows it."""
    plan = r.spec.plan()
    step = r.current_step()
    view: dict[str, Any] = {
        "id": r.id,
        **r.spec.as_json(),
        "state": r.state.value,
        "created_by": r.created_by,
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
        "step": {
            "index": min(r.step + 1, len(plan)),
            "of": len(plan),
            "text": step.text() if step else "every step passed",
            "phase": r.phase.value if step else None,
            "started_at": _iso(r.step_started_at),
            "bake_ends_at": _iso(r.step_started_at + r.spec.bake_s)
            if step and r.phase is Phase.BAKE and r.step_started_at is not None else None,
        },
        "plan": [s.as_json() | {"status": "done" if s.index < r.step else "current" if s.index == r.step
                                else "pending"} for s in plan],
        "message": r.message,
        "gate": dict(r.gate) if r.gate else None,
        "before": {cell: b.as_json() for cell, b in r.before.items()},
        "global_before": {"mode": r.global_before.mode.value, "percent": r.global_before.percent},
        "lease": {"holder": r.lease_holder, "expires_at": _iso(r.lease_expires_at)},
    }
    if events is not None:
        view["history"] = [e.as_json() for e in events]
    return view


def _duration(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(f'"{key}" must be a duration like "30s", "5m", "1h" or seconds')
    try:
        return parse_duration(value)
    except RolloutError as exc:
        raise BadRequest(f'"{key}": {exc}') from None


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f'the body needs "{key}" as text, like {START_EXAMPLE}')
    return value


def spec_from_body(driver: RolloutDriver, body: dict[str, Any]) -> RolloutSpec:
    """A validated spec from a start request's body (:class:`BadRequest` saying what is wrong)."""
    config = driver.config
    min_samples = body.get("min_samples")
    if min_samples is not None and (isinstance(min_samples, bool) or not isinstance(min_samples, int)
                                    or min_samples < 1):
        raise BadRequest(f'"min_samples" must be a whole number >= 1, got {min_samples!r}')
    on_failure = body.get("on_failure") or "rollback"
    try:
        target = parse_target(_text(body, "to", required=True))
        return RolloutSpec(
            name=_text(body, "name", required=True).strip(),
            target=target,
            waves=parse_waves(_text(body, "waves", required=True), config.cells.names if config.cells else ()),
            steps=parse_steps(_text(body, "steps"), target),
            bake_s=_duration(body, "bake", DEFAULT_BAKE_S),
            max_wait_s=_duration(body, "max_wait", DEFAULT_MAX_WAIT_S),
            min_samples=min_samples,
            on_failure=str(on_failure),
            reason=text_field(body, "reason"),
        )
    except RolloutError as exc:
        raise BadRequest(str(exc)) from None


async def _start(request: web.Request) -> web.Response:
    driver = request.app[DRIVER]
    body = await json_object(request, START_KEYS, START_EXAMPLE)
    spec = spec_from_body(driver, body)
    try:
        rollout = await driver.start_rollout(spec, who=request[WHO])
    except RolloutError as exc:
        status, code = (409, "conflict") if "still active" in str(exc) else (400, "bad_request")
        return error_response(status, code, str(exc))
    except StoreError as exc:
        return store_unavailable(f"{spec.name}: the rollout was not started", exc)
    return web.json_response(rollout_view(rollout), status=201)


async def _list(request: web.Request) -> web.Response:
    driver = request.app[DRIVER]
    try:
        limit = int(request.query.get("limit", DEFAULT_LIST))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST:
        return error_response(400, "bad_request", f"limit must be an integer 1..{MAX_LIST}")
    active = request.query.get("active", "") in ("1", "true", "yes")
    try:
        rollouts = await driver.listing(active_only=active, limit=limit)
    except StoreError as exc:
        return store_unavailable("the rollouts cannot be read", exc)
    return web.json_response({"rollouts": [rollout_view(r) for r in rollouts]})


def _id(request: web.Request) -> int:
    raw = request.match_info["id"].removeprefix("#")
    if not raw.isdigit():
        raise web.HTTPNotFound(text='{"error": {"code": "not_found", "message": "a rollout id is a number"}}',
                               content_type="application/json")
    return int(raw)


async def _one(request: web.Request) -> web.Response:
    driver = request.app[DRIVER]
    rollout_id = _id(request)
    try:
        rollout = await driver.get(rollout_id)
        if rollout is None:
            return error_response(404, "not_found", f"no rollout #{rollout_id}")
        events = await driver.events(rollout_id)
    except StoreError as exc:
        return store_unavailable(f"rollout #{rollout_id} cannot be read", exc)
    return web.json_response(rollout_view(rollout, events))


Operation = Callable[..., Awaitable[Rollout]]


def _operator(action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        driver = request.app[DRIVER]
        rollout_id = _id(request)
        body = await json_object(request, OPERATOR_KEYS, '{"reason": "..."}') if request.can_read_body else {}
        reason = text_field(body, "reason")
        operation: Operation = getattr(driver, action)
        try:
            rollout = await operation(rollout_id, who=request[WHO], reason=reason)
        except RolloutError as exc:
            status = 404 if str(exc).startswith("no rollout") else 409
            return error_response(status, "not_found" if status == 404 else "conflict", str(exc))
        except StoreError as exc:
            return store_unavailable(f"rollout #{rollout_id}: {action} was not applied", exc)
        return web.json_response(rollout_view(rollout))

    return handle


def register(app: web.Application, driver: RolloutDriver) -> None:
    """Add the rollout calls to the admin application (before it is frozen)."""
    app[DRIVER] = driver
    app.router.add_get("/rollouts", _list)
    app.router.add_post("/rollouts", _start)
    app.router.add_get("/rollouts/{id}", _one)
    for action in ("pause", "resume", "abort"):
        app.router.add_post(f"/rollouts/{{id}}/{action}", _operator(action))
