"""Rollouts in the control database: one ``rollout`` row each, and its history in ``rollout_event``.

A row is the whole persisted state of a rollout (rollouts.py :class:`Rollout`):
its spec, the step it is at and the phase of that step, each cell's state before
the rollout touched it, and the lease of the replica driving it.

- **Versions.** Every change of state checks and bumps ``version``; a write
  based on a stale read is refused (:class:`RolloutConflict`), so a step is
  recorded once even when two replicas (or an operator and a replica) act at once.
- **Lease.** ``lease_holder``/``lease_expires_at`` (epoch seconds): one replica
  drives a rollout; it renews the lease every tick, and another replica takes it
  only once it expired (or was released on a clean stop). The driver's own
  writes also require that it still holds the lease.
- **One active rollout per route.** ``active_name`` is the route's (field's) name while
  the rollout is active and NULL after; it is unique, so the database refuses a
  second active rollout of the same route even when two replicas start one at once.

    >>> store = RolloutStore(state_store)                        # doctest: +SKIP
    >>> rollout = await store.create(spec, who="ops", global_before=state)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from strangler_proxy.config import Mode
from strangler_proxy.control.rollouts import (
    ACTIVE_STATES,
    Before,
    EventDraft,
    Phase,
    Rollout,
    RolloutError,
    RolloutSpec,
    State,
)
from strangler_proxy.control.state_store import Base, StateStore
from strangler_proxy.errors import StoreError
from strangler_proxy.routing.router import RouteState

DEFAULT_LIST_LIMIT = 20
MAX_EVENTS = 1000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RolloutRow(Base):
    """One rollout: what was asked, where it stands, who drives it."""

    __tablename__ = "rollout"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    active_name: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    target_mode: Mapped[str] = mapped_column(String(20))
    target_percent: Mapped[float] = mapped_column(Float)
    waves: Mapped[list[list[str]]] = mapped_column(JSON)
    steps: Mapped[list[float]] = mapped_column(JSON)
    bake_s: Mapped[float] = mapped_column(Float)
    max_wait_s: Mapped[float] = mapped_column(Float)
    min_samples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_failure: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    state: Mapped[str] = mapped_column(String(20))
    step: Mapped[int] = mapped_column(Integer, default=0)
    phase: Mapped[str] = mapped_column(String(20))
    step_started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    before: Mapped[dict[str, Any]] = mapped_column(JSON)
    global_before: Mapped[dict[str, Any]] = mapped_column(JSON)
    aborting: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    lease_holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RolloutEventRow(Base):
    """One line of a rollout's history: a step applied, a gate's verdict, a rollback, a takeover."""

    __tablename__ = "rollout_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollout.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    kind: Mapped[str] = mapped_column(String(30))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    who: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RolloutConflict(StoreError):
    """The rollout changed since it was read (another replica, an operator) or the lease is gone."""


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    id: int
    rollout_id: int
    at: dt.datetime
    kind: str
    step: int | None
    who: str
    message: str
    details: Mapping[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "kind": self.kind,
                "step": None if self.step is None else self.step + 1, "who": self.who, "message": self.message,
                "details": dict(self.details) if self.details else None}


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)  # SQLite drops the zone


def _rollout(row: RolloutRow) -> Rollout:
    spec = RolloutSpec(
        name=row.name, target=RouteState(Mode(row.target_mode), row.target_percent),
        waves=tuple(tuple(w) for w in row.waves), steps=tuple(float(s) for s in row.steps), bake_s=row.bake_s,
        max_wait_s=row.max_wait_s, min_samples=row.min_samples, on_failure=row.on_failure, reason=row.reason,
    )
    return Rollout(
        id=row.id, spec=spec, state=State(row.state), step=row.step, phase=Phase(row.phase),
        step_started_at=row.step_started_at, before={c: Before.from_json(b) for c, b in (row.before or {}).items()},
        global_before=RouteState(Mode(row.global_before["mode"]), float(row.global_before["percent"])),
        created_by=row.created_by, message=row.message, gate=row.gate, version=row.version,
        lease_holder=row.lease_holder, lease_expires_at=row.lease_expires_at,
        created_at=_aware(row.created_at).timestamp(), updated_at=_aware(row.updated_at).timestamp(),
        aborting=bool(row.aborting),
    )


def _event(row: RolloutEventRow) -> RolloutEvent:
    return RolloutEvent(row.id, row.rollout_id, _aware(row.at), row.kind, row.step, row.who, row.message, row.details)


def _event_row(rollout_id: int, who: str, e: EventDraft) -> RolloutEventRow:
    return RolloutEventRow(rollout_id=rollout_id, at=_now(), kind=e.kind, step=e.step, who=who, message=e.message,
                           details=dict(e.details) if e.details else None)


class RolloutStore:
    """Async access to the rollout tables, on the state store's engine; SQLAlchemy errors become
    :class:`StoreError` (a lost race :class:`RolloutConflict`)."""

    def __init__(self, state: StateStore) -> None:
        self.engine = state.engine
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock()  # SQLite has one writer: our own writes go one at a time

    # ------------------------------------------------------------- reads

    async def get(self, rollout_id: int) -> Rollout | None:
        try:
            async with self._sessions() as session:
                row = await session.get(RolloutRow, rollout_id)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read rollout: {exc}") from exc
        return _rollout(row) if row is not None else None

    async def listing(self, *, active_only: bool = False, limit: int = DEFAULT_LIST_LIMIT) -> list[Rollout]:
        """Newest first; ``active_only``: running, paused or rolling back."""
        stmt = select(RolloutRow).order_by(RolloutRow.id.desc()).limit(max(1, limit))
        if active_only:
            stmt = stmt.where(RolloutRow.state.in_([s.value for s in ACTIVE_STATES]))
        try:
            async with self._sessions() as session:
                rows = (await session.scalars(stmt)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read rollout: {exc}") from exc
        return [_rollout(r) for r in rows]

    async def events(self, rollout_id: int, *, limit: int = MAX_EVENTS) -> list[RolloutEvent]:
        """Oldest first (the last ``limit``)."""
        stmt = (select(RolloutEventRow).where(RolloutEventRow.rollout_id == rollout_id)
                .order_by(RolloutEventRow.id.desc()).limit(max(1, min(limit, MAX_EVENTS))))
        try:
            async with self._sessions() as session:
                rows = (await session.scalars(stmt)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read rollout_event: {exc}") from exc
        return [_event(r) for r in reversed(rows)]

    # ------------------------------------------------------------ writes

    async def create(self, spec: RolloutSpec, *, who: str, global_before: RouteState) -> Rollout:
        """A new running rollout at its first step; :class:`RolloutError` when the route
        already has an active one."""
        row = RolloutRow(
            name=spec.name, active_name=spec.name, target_mode=spec.target.mode.value,
            target_percent=spec.target.percent, waves=[list(w) for w in spec.waves], steps=list(spec.steps),
            bake_s=spec.bake_s, max_wait_s=spec.max_wait_s, min_samples=spec.min_samples,
            on_failure=spec.on_failure, reason=spec.reason, created_by=who, created_at=_now(), updated_at=_now(),
            state=State.RUNNING.value, step=0, phase=Phase.APPLY.value, step_started_at=None, before={},
            global_before={"mode": Mode(global_before.mode).value, "percent": global_before.percent}, aborting=0,
            message="starting", gate=None, version=1,
        )
        plan = " -> ".join(s.text() for s in spec.plan())
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    session.add(row)
                    await session.flush()
                    session.add(_event_row(row.id, who, EventDraft("started", f"{spec.name}: {plan}",
                                                                   details=spec.as_json())))
            except IntegrityError as exc:
                active = await self._active_of(spec.name)
                raise RolloutError(f"{spec.name}: rollout {active} is still active; pause, resume or abort it "
                                   "first (one rollout of a route at a time)") from exc
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write rollout: {exc}") from exc
        return _rollout(row)

    async def _active_of(self, name: str) -> str:
        try:
            async with self._sessions() as session:
                found = await session.scalar(select(RolloutRow.id).where(RolloutRow.active_name == name))
        except SQLAlchemyError:
            return "(unknown)"
        return f"#{found}" if found is not None else "(another)"

    async def save(self, rollout: Rollout, *, who: str, events: Sequence[EventDraft] = (),
                   holder: str | None = None, now: float | None = None, **changes: Any) -> Rollout:
        """Write ``changes`` (fields of :class:`Rollout`: state, step, phase, step_started_at,
        before, message, gate, aborting) and ``events`` in one transaction, if the row is
        still at ``rollout.version`` -- and, when ``holder`` is given, still leased to it
        (at ``now``). Else :class:`RolloutConflict` and nothing written."""
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    row = await session.get(RolloutRow, rollout.id, with_for_update=True)
                    if row is None:
                        raise RolloutConflict(f"rollout #{rollout.id} is gone")
                    if row.version != rollout.version:
                        raise RolloutConflict(f"rollout #{rollout.id} changed meanwhile (version {row.version}, "
                                              f"expected {rollout.version})")
                    if holder is not None and (row.lease_holder != holder or (row.lease_expires_at or 0) < (now or 0)):
                        raise RolloutConflict(f"rollout #{rollout.id}: the lease is no longer {holder}'s")
                    for key, value in changes.items():
                        _set(row, key, value)
                    row.version += 1
                    row.updated_at = _now()
                    session.add_all([_event_row(rollout.id, who, e) for e in events])
                    await session.flush()
                    return _rollout(row)
            except RolloutConflict:
                raise
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write rollout: {exc}") from exc

    async def add_events(self, rollout_id: int, who: str, events: Sequence[EventDraft]) -> None:
        """History lines that change nothing else (a takeover)."""
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    session.add_all([_event_row(rollout_id, who, e) for e in events])
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write rollout_event: {exc}") from exc

    # ------------------------------------------------------------- lease

    async def acquire(self, rollout_id: int, holder: str, *, now: float, lease_s: float) -> tuple[bool, str | None]:
        """Take or renew the lease of an active rollout: (held now, the previous holder when
        this took it over from another replica whose lease had expired)."""
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    previous = (await session.execute(
                        select(RolloutRow.lease_holder, RolloutRow.lease_expires_at).where(RolloutRow.id == rollout_id)
                    )).first()
                    if previous is None:
                        return False, None
                    stmt = (update(RolloutRow)
                            .where(RolloutRow.id == rollout_id, RolloutRow.active_name.is_not(None),
                                   (RolloutRow.lease_holder.is_(None)) | (RolloutRow.lease_holder == holder)
                                   | (RolloutRow.lease_expires_at < now))
                            .values(lease_holder=holder, lease_expires_at=now + lease_s))
                    result = await session.execute(stmt)
                    held = result.rowcount == 1  # type: ignore[attr-defined]
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot take the lease of rollout #{rollout_id}: {exc}") from exc
        before = previous.lease_holder
        return held, (before if held and before not in (None, holder) else None)

    async def release(self, rollout_id: int, holder: str) -> None:
        """Give the lease up (a clean stop), so another replica takes over at once."""
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    await session.execute(update(RolloutRow)
                                          .where(RolloutRow.id == rollout_id, RolloutRow.lease_holder == holder)
                                          .values(lease_holder=None, lease_expires_at=None))
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot release the lease of rollout #{rollout_id}: {exc}") from exc


def _set(row: RolloutRow, key: str, value: Any) -> None:
    if key == "state":
        state = State(value)
        row.state = state.value
        row.active_name = row.name if state in ACTIVE_STATES else None
        if state not in ACTIVE_STATES:
            row.lease_holder, row.lease_expires_at = None, None
    elif key == "phase":
        row.phase = Phase(value).value
    elif key == "before":
        row.before = {cell: b.as_json() for cell, b in value.items()}
    elif key == "aborting":
        row.aborting = int(bool(value))
    elif key in ("step", "step_started_at", "message", "gate"):
        setattr(row, key, value)
    else:
        raise ValueError(f"a rollout has no field {key!r} to change")
