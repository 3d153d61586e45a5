"""The rollout driver: the I/O loop around rollouts.py's decisions.

Every replica runs one :class:`RolloutDriver`. Each tick (the flip poll
interval) it lists the active rollouts and, for each, takes or renews the lease
in the control database (rollout_store.py); only the holder acts, one
transition per rollout and tick:

- **apply** -- record each cell's state before its first flip (persisted before
  the flip), flip the step's cells (``route@cell`` through
  :meth:`FlipService.flip`, ``who="rollout:ID"``, ``kind="rollout"``), then persist
  the step as applied with its start time. A flip is idempotent: a replica that
  takes over redoes the step, and a cell already in the step's state is not flipped
  (nor audited) again;
- **gate** -- once the bake time has passed, read each cell's results since the
  step began (``route@cell``; ``graphql:Type.field@cell``), its guardrails and its
  state, and judge the wave (rollouts.py :func:`judge_wave`): next step, keep
  waiting, pause, or roll back;
- **rollback** -- every cell the rollout flipped, in reverse order, back to where
  it was (``kind="rollback"``, the failing figures in the audit details);
- **complete** -- when the waves covered every cell, the route itself goes to the
  target and the now redundant per-cell overrides are cleared (audited); else the
  per-cell overrides stay.

Operators' calls (:meth:`start`, :meth:`pause`, :meth:`resume`, :meth:`abort`)
run on whichever replica the admin API call reached; they only write the row,
and the driving replica follows.

    >>> driver = RolloutDriver(flips, RolloutStore(state_store), guardrail_status=guard.status)  # doctest: +SKIP
    >>> driver.start()                                                                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from strangler_proxy.config import Mode, StranglerConfig, write_canary_problem
from strangler_proxy.control.flips import KIND_ROLLBACK, FlipService
from strangler_proxy.control.precedence import file_value, is_field, override_state
from strangler_proxy.control.readiness import rules_for_key
from strangler_proxy.control.replicas import ReplicaPoller
from strangler_proxy.control.rollout_store import RolloutConflict, RolloutEvent, RolloutStore
from strangler_proxy.control.rollouts import (
    ACTIVE_STATES,
    Before,
    CellFigures,
    EventDraft,
    GateRules,
    Move,
    Phase,
    Rollout,
    RolloutError,
    RolloutSpec,
    State,
    Step,
    after_gate,
    apply_move,
    compares,
    judge_cell,
    judge_wave,
    next_action,
    norm,
    rollback_moves,
)
from strangler_proxy.control.state_store import AuditDraft
from strangler_proxy.diff.result import GRAPHQL_KEY_PREFIX
from strangler_proxy.errors import FlipError, StoreError, StranglerError
from strangler_proxy.routing.cells import scoped
from strangler_proxy.routing.router import RouteState
from strangler_proxy.store.counts import VerdictCounts
from strangler_proxy.store.queries import ResultsReader

log = logging.getLogger("strangler.rollouts")

KIND_ROLLOUT = "rollout"
LEASE_TICKS = 10  # the lease lasts this many ticks (renewed every tick)
MIN_LEASE_S = 1.0
OPERATOR_RETRIES = 3  # an operator's call retried when the driver wrote the row meanwhile

GuardrailStatus = Callable[[str], Mapping[str, Any] | None]


def default_holder() -> str:
    """This replica's name in a lease: host, process, and a random part (two proxies in one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def result_key(name: str, cell: str) -> str:
    """The results-store key of a route's (field's) cell.

    >>> result_key("ratings", "c1"), result_key("Title.rating", "c1")
    ('ratings@c1', 'graphql:Title.rating@c1')
    """
    key = scoped(name, cell)
    return GRAPHQL_KEY_PREFIX + key if is_field(name) else key


def _percent_arg(state: RouteState) -> float | None:
    return state.percent if state.mode is Mode.CANARY else None


class RolloutDriver:
    """Drives the rollouts this replica holds the lease of; answers operators' calls."""

    def __init__(
        self,
        flips: FlipService,
        store: RolloutStore,
        *,
        guardrail_status: GuardrailStatus | None = None,
        holder: str | None = None,
        tick_s: float | None = None,
        lease_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.flips = flips
        self.store = store
        self.guardrail_status = guardrail_status
        self.holder = holder or default_holder()
        self.tick_s = tick_s or flips.poll_interval_s
        self.lease_s = lease_s or max(MIN_LEASE_S, LEASE_TICKS * self.tick_s)
        self.clock = clock
        self._held: set[int] = set()
        self._ticker = ReplicaPoller(self.tick, self.tick_s, name="strangler-rollouts")

    @property
    def config(self) -> StranglerConfig:
        return self.flips.config

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._ticker.start()

    async def stop(self) -> None:
        """Stop driving and give the leases up, so another replica continues at once."""
        await self._ticker.stop()
        for rollout_id in sorted(self._held):
            try:
                await self.store.release(rollout_id, self.holder)
            except StoreError as exc:
                log.warning("rollout #%d: could not release the lease (it expires by itself): %s", rollout_id, exc)
        self._held.clear()

    async def tick(self) -> None:
        """One pass over the active rollouts."""
        for rollout in await self.store.listing(active_only=True, limit=100):
            try:
                await self._drive(rollout)
            except RolloutConflict as exc:  # an operator or another replica wrote it meanwhile: read again next tick
                log.info("rollout #%d: %s", rollout.id, exc)
            except StoreError:
                raise
            except StranglerError as exc:
                log.warning("rollout #%d: %s (will retry)", rollout.id, exc)

    # --------------------------------------------------------------- drive

    async def _drive(self, r: Rollout) -> None:
        if r.state is State.PAUSED:
            if r.id in self._held:
                await self.store.release(r.id, self.holder)
                self._held.discard(r.id)
            return
        held, took_from = await self.store.acquire(r.id, self.holder, now=self.clock(), lease_s=self.lease_s)
        if not held:
            self._held.discard(r.id)
            return
        if r.id not in self._held:
            self._held.add(r.id)
            await self.flips.poll_once()  # see every flip made until now before acting on them
            why = f"took over from {took_from} (its lease expired)" if took_from else "driving"
            await self.store.add_events(r.id, self.holder, [EventDraft("lease", why, step=r.step)])
            log.info("rollout #%d (%s): %s on %s", r.id, r.spec.name, why, self.holder)
        fresh = await self.store.get(r.id)
        if fresh is None or not fresh.active:
            return
        r = fresh
        if (gone := self._gone(r)) is not None:
            await self._stop_for(r, gone)
            return
        action = next_action(r, self.clock())
        if action.kind == "apply":
            assert action.step is not None
            await self._apply(r, action.step)
        elif action.kind == "gate":
            assert action.step is not None
            await self._gate(r, action.step, action.overdue)
        elif action.kind == "rollback":
            await self._rollback(r)
        elif action.kind == "complete":
            await self._complete(r)

    def _gone(self, r: Rollout) -> str | None:
        """Why the running config can no longer take this rollout (a reload removed its route
        or one of its cells), or None."""
        config = self.config
        if file_value(config, r.spec.name) is None:
            return f"{r.spec.name} was removed from the file (its per-cell overrides went with it)"
        names = config.cells.names if config.cells is not None else ()
        missing = [c for c in r.spec.cells if c not in names]
        if missing:
            return f"cell {', '.join(missing)} was removed from the file"
        return None

    async def _stop_for(self, r: Rollout, why: str) -> None:
        """A rollout the file no longer allows: a removed route ends it (nothing is left to
        restore); a removed cell pauses it (a person aborts it, or puts the cell back)."""
        if file_value(self.config, r.spec.name) is None:
            message = f"aborted: {why}"
            await self._save(r, state=State.ABORTED, message=message, events=[EventDraft("aborted", message)])
        elif r.state is State.ROLLING_BACK:
            await self._rollback(r)  # the cells still there go back; the removed ones are noted
            return
        elif r.state is not State.PAUSED:
            message = f"paused: {why} -- put it back and resume, or abort"
            await self._save(r, state=State.PAUSED, message=message, events=[EventDraft("paused", message)])
        log.warning("rollout #%d (%s): %s", r.id, r.spec.name, why)

    async def _save(self, r: Rollout, *, events: Sequence[EventDraft] = (), **changes: Any) -> Rollout:
        return await self.store.save(r, who=self.holder, events=events, holder=self.holder, now=self.clock(),
                                     **changes)

    def _state(self, name: str) -> RouteState:
        state = self.flips.state(name)
        if state is None:
            raise RolloutError(f"{name} is not in the running config any more")
        return norm(state)

    async def _apply(self, r: Rollout, step: Step) -> None:
        name, plan_len = r.spec.name, len(r.spec.plan())
        missing = [c for c in step.cells if c not in r.before]
        if missing:  # persisted before the first flip, so a rollback knows where each cell was
            before = dict(r.before)
            for cell in missing:
                cell_name = scoped(name, cell)
                before[cell] = Before(self._state(cell_name), followed=self.flips.stored(cell_name) is None)
            r = await self._save(r, before=before, message=f"applying step {step.index + 1}: {step.text()}")
        moves = [apply_move(r, step, c, self._state(scoped(name, c))) for c in step.cells]
        left = [m for m in moves if m.kind == "leave"]
        if left:
            await self._pause_for(r, step, left)
            return
        reason = f"rollout #{r.id} step {step.index + 1}/{plan_len} (wave {step.wave + 1}): {step.text()}"
        if r.spec.reason:
            reason += f" -- {r.spec.reason}"
        flipped: dict[str, Any] = {}
        for m in moves:
            flipped[m.cell] = {"to": m.to.text(), "changed": False}
            if m.kind != "flip":
                continue
            assert m.expect is not None
            try:
                outcome = await self.flips.flip(
                    scoped(name, m.cell), m.to.mode, _percent_arg(m.to), who=r.who, kind=KIND_ROLLOUT,
                    reason=reason, details={"rollout": r.id, "step": step.index + 1, "of": plan_len,
                                            "wave": step.wave + 1},
                    only_if=self.flips.state(scoped(name, m.cell)),
                )
            except FlipError as exc:
                if self._state(scoped(name, m.cell)) != m.to:
                    await self._pause_for(r, step, [Move(m.cell, "leave", m.to, note=str(exc))])
                    return
                continue  # another replica's flip landed first: the cell is where it should be
            flipped[m.cell] = {"from": m.expect.text(), "to": m.to.text(), "changed": outcome.changed}
        await self._save(
            r, phase=Phase.BAKE, step_started_at=self.clock(), gate=None,
            message=f"step {step.index + 1}/{plan_len} applied: {step.text()}; baking {r.spec.bake_s:g}s",
            events=[EventDraft("step-applied", step.text(), step=step.index, details={"cells": flipped})],
        )
        log.info("rollout #%d (%s): step %d/%d applied: %s", r.id, name, step.index + 1, plan_len, step.text())

    async def _pause_for(self, r: Rollout, step: Step, left: Sequence[Move]) -> None:
        why = "; ".join(m.note for m in left)
        await self._save(r, state=State.PAUSED, message=f"paused: {why} -- set it back, then resume, or abort",
                         events=[EventDraft("paused", why, step=step.index)])
        log.warning("rollout #%d (%s) paused: %s", r.id, r.spec.name, why)

    async def _gate(self, r: Rollout, step: Step, overdue: bool) -> None:
        figures = await self._figures(r, step)
        config = self.config
        rules = GateRules.of(rules_for_key(config, result_key(r.spec.name, step.cells[0])), r.spec.min_samples)
        decision = judge_wave([judge_cell(f, rules, overdue=overdue) for f in figures])
        outcome = after_gate(r, decision, overdue)
        gate = decision.figures()
        if outcome.event == "waiting":
            if outcome.message != r.message or gate != r.gate:
                await self._save(r, message=outcome.message, gate=gate)
            return
        r = await self._save(
            r, state=outcome.state, step=outcome.step, phase=outcome.phase, message=outcome.message, gate=gate,
            step_started_at=None if outcome.phase is Phase.APPLY else r.step_started_at,
            events=[EventDraft(outcome.event, outcome.message, step=step.index, details=gate)],
        )
        (log.info if decision.verdict == "pass" else log.warning)("rollout #%d (%s): %s", r.id, r.spec.name,
                                                                  outcome.message)
        if r.state is State.ROLLING_BACK:
            await self._rollback(r)

    async def _figures(self, r: Rollout, step: Step) -> list[CellFigures]:
        name = r.spec.name
        config = self.config
        keys = {cell: result_key(name, cell) for cell in step.cells}
        reader = ResultsReader(self.store.engine, config.store.bucket_s)
        summaries = {s.key: s for s in await reader.summaries(list(keys.values()), since=r.step_started_at,
                                                                 top_paths=0, timeline_points=1)}
        if is_field(name):
            fc = config.graphql.fields.get(name)
            reverse = bool(fc and fc.reverse_shadow)
        else:
            rc = config.route(name)
            reverse = bool(rc and rc.reverse_shadow)
        out: list[CellFigures] = []
        for cell, key in keys.items():
            cell_name = scoped(name, cell)
            s = summaries.get(key)
            now = self._state(cell_name)
            changed_by = None
            if now != step.state:  # the guardrails' rollback, or a person: the audit log knows who
                last = await self.flips.audit(name=cell_name, limit=1)
                changed_by = f"{last[0].who if last else 'the file'} (now {now.text()})"
            guard = self.guardrail_status(cell_name) if self.guardrail_status else None
            out.append(CellFigures(
                cell=cell,
                counts=s.counts if s else VerdictCounts(),
                legacy_p99_s=s.legacy_latency.quantile(0.99) if s else None,
                candidate_p99_s=s.candidate_latency.quantile(0.99) if s else None,
                compares=compares(step.state.mode, step.state.percent, reverse),
                changed_by=changed_by,
                guardrails=(guard or {}).get("state"),
            ))
        return out

    async def _rollback(self, r: Rollout) -> None:
        name = r.spec.name
        followed = self._state(name)
        names = self.config.cells.names if self.config.cells is not None else ()
        current = {c: self._state(scoped(name, c)) for c in r.before if c in names}
        moves = rollback_moves(r, current, followed)
        why = "aborted" if r.aborting else "a gate failed"
        reason = f"rollout #{r.id} rolled back ({why}): {r.message.removeprefix('rolling back: ')}"
        details = {"rollout": r.id, "step": r.step + 1, "cause": why, "gate": dict(r.gate) if r.gate else None}
        done: dict[str, Any] = {}
        for m in moves:
            if m.kind == "flip":
                try:
                    outcome = await self.flips.flip(scoped(name, m.cell), m.to.mode, _percent_arg(m.to), who=r.who,
                                                    kind=KIND_ROLLBACK, reason=reason, details=details,
                                                    only_if=self.flips.state(scoped(name, m.cell)))
                    done[m.cell] = {"to": m.to.text(), "changed": outcome.changed}
                except FlipError as exc:
                    done[m.cell] = {"left": str(exc)}
            else:
                done[m.cell] = {"to": m.to.text(), "changed": False} if m.kind == "done" else {"left": m.note}
        final = State.ABORTED if r.aborting else State.ROLLED_BACK
        order = ", ".join(m.cell for m in moves)
        cause = r.message.removeprefix("rolling back: ")
        message = f"{final.value.replace('_', ' ')}: {order or 'no cell'} restored -- {cause}"
        await self._save(r, state=final, message=message,
                         events=[EventDraft(final.value, message, step=r.step, details={"cells": done})])
        log.warning("rollout #%d (%s) %s", r.id, name, message)

    async def _complete(self, r: Rollout) -> None:
        name, target = r.spec.name, r.spec.target
        config = self.config
        cells = config.cells.names if config.cells is not None else ()
        notes: list[str] = []
        if r.spec.covers(cells):
            now = self._state(name)
            if now != target and now == norm(r.global_before):
                await self.flips.flip(name, target.mode, _percent_arg(target), who=r.who, kind=KIND_ROLLOUT,
                                      reason=f"rollout #{r.id} completed: every cell is {target.text()}",
                                      details={"rollout": r.id, "completed": True},
                                      only_if=self.flips.state(name))
                now = self._state(name)
            if now == target:
                cleared = await self._clear_overrides(r, cells)
                notes.append(f"{name} is {target.text()} everywhere; per-cell overrides cleared: "
                             f"{', '.join(cleared) or 'none'}")
            else:
                notes.append(f"{name}'s own mode changed meanwhile (now {now.text()}): the per-cell overrides stay")
        else:
            notes.append(f"cells {', '.join(r.spec.cells)} are {target.text()} (per-cell overrides); the others "
                         "follow the route")
        message = "completed: " + "; ".join(notes)
        await self._save(r, state=State.COMPLETED, message=message,
                         events=[EventDraft("completed", message, step=r.step)])
        log.info("rollout #%d (%s) %s", r.id, name, message)

    async def _clear_overrides(self, r: Rollout, cells: Sequence[str]) -> list[str]:
        """Drop the overrides that now say what the route says (each audited once)."""
        cleared: list[str] = []
        for cell in cells:
            cell_name = scoped(r.spec.name, cell)
            stored = self.flips.stored(cell_name)
            if stored is None or norm(override_state(stored)) != r.spec.target:
                continue
            state = r.spec.target
            draft = AuditDraft(
                name=cell_name, who=r.who, kind=KIND_ROLLOUT, from_mode=state.mode.value, from_percent=state.percent,
                to_mode=state.mode.value, to_percent=state.percent,
                reason=f"rollout #{r.id} completed: {cell} follows the route again",
                details={"rollout": r.id, "override": "cleared"},
            )
            if await self.flips.store.clear_override(cell_name, draft, expected_version=stored.version):
                cleared.append(cell)
        await self.flips.poll_once()
        return cleared

    # ----------------------------------------------------------- operators

    def validate(self, spec: RolloutSpec) -> None:
        """Refuse what the running config cannot take (:class:`RolloutError`)."""
        config = self.config
        name = spec.name
        if file_value(config, name) is None:
            known = [r.name for r in config.routes] + list(config.graphql.fields)
            raise RolloutError(f"{name}: no such route or field (known: {', '.join(known) or 'none'})")
        if config.cells is None:
            raise RolloutError("a rollout moves over cells, and the running config has no cells: section")
        unknown = [c for c in spec.cells if c not in config.cells.names]
        if unknown:
            raise RolloutError(f"no such cell {', '.join(unknown)} (cells: {', '.join(config.cells.names)})")
        if not is_field(name):
            rc = config.route(name)
            assert rc is not None
            if not rc.target:
                raise RolloutError(f"{name}: it has no 'target' upstream in strangler.yaml to roll out to")
            if any(s.state.mode is Mode.CANARY for s in spec.plan()) and (problem := write_canary_problem(rc)):
                raise RolloutError(f"{name}: {problem}")

    async def start_rollout(self, spec: RolloutSpec, *, who: str) -> Rollout:
        self.validate(spec)
        current = self.flips.state(spec.name)
        assert current is not None
        rollout = await self.store.create(spec, who=who, global_before=current)
        log.info("rollout #%d of %s started by %s", rollout.id, spec.name, who)
        return rollout

    async def get(self, rollout_id: int) -> Rollout | None:
        return await self.store.get(rollout_id)

    async def events(self, rollout_id: int) -> list[RolloutEvent]:
        return await self.store.events(rollout_id)

    async def listing(self, *, active_only: bool = False, limit: int = 20) -> list[Rollout]:
        return await self.store.listing(active_only=active_only, limit=limit)

    async def pause(self, rollout_id: int, *, who: str, reason: str = "") -> Rollout:
        def change(r: Rollout) -> dict[str, Any] | None:
            if r.state is State.PAUSED:
                return None
            if r.state is not State.RUNNING:
                raise RolloutError(f"rollout #{r.id} is {r.state.value}: only a running one can be paused")
            return {"state": State.PAUSED, "message": f"paused by {who}" + (f": {reason}" if reason else "")}

        return await self._operator(rollout_id, who, "paused", reason, change)

    async def resume(self, rollout_id: int, *, who: str, reason: str = "") -> Rollout:
        def change(r: Rollout) -> dict[str, Any] | None:
            if r.state is State.RUNNING:
                return None
            if r.state is not State.PAUSED:
                raise RolloutError(f"rollout #{r.id} is {r.state.value}: only a paused one can be resumed")
            # The step starts again: its flips are made again (a no-op where they hold), then a full bake.
            return {"state": State.RUNNING, "phase": Phase.APPLY, "step_started_at": None,
                    "message": f"resumed by {who}" + (f": {reason}" if reason else "")}

        return await self._operator(rollout_id, who, "resumed", reason, change)

    async def abort(self, rollout_id: int, *, who: str, reason: str = "") -> Rollout:
        def change(r: Rollout) -> dict[str, Any] | None:
            if r.state is State.ROLLING_BACK:
                return None
            if r.state not in ACTIVE_STATES:
                raise RolloutError(f"rollout #{r.id} is {r.state.value} already")
            return {"state": State.ROLLING_BACK, "aborting": True,
                    "message": f"rolling back: aborted by {who}" + (f": {reason}" if reason else "")}

        return await self._operator(rollout_id, who, "aborted", reason, change)

    async def _operator(self, rollout_id: int, who: str, kind: str, reason: str,
                        change: Callable[[Rollout], dict[str, Any] | None]) -> Rollout:
        for attempt in range(OPERATOR_RETRIES + 1):
            r = await self.store.get(rollout_id)
            if r is None:
                raise RolloutError(f"no rollout #{rollout_id}")
            changes = change(r)
            if changes is None:
                return r
            try:
                return await self.store.save(r, who=who, events=[EventDraft(kind, changes["message"], step=r.step,
                                                                            details={"reason": reason} if reason
                                                                            else None)], **changes)
            except RolloutConflict:
                if attempt == OPERATOR_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
