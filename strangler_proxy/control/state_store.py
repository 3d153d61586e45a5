"""The control database: runtime flips (``route_state``), operators' upstream
switches (``upstream_switch``) and the audit log of both (``flip_audit``).

One row of ``route_state`` is one runtime override of a route or a GraphQL
field (names with a dot are fields, ``Type.field``). It also remembers what the
file said for that name when the flip was made (``file_mode``/``file_percent``):
that is how a later reload -- or a restart -- can tell whether the file changed
since, in which case the file wins (see docs/operations.md, "precedence").

One row of ``upstream_switch`` is what operators set on one upstream: the zone
it is pinned to (``strangler failover``) and its drained endpoints (``strangler
drain``); no row means health alone decides.

Every replica that shares the database polls :meth:`StateStore.overrides` and
:meth:`StateStore.switches`; the tables are tiny (one row per flipped route or
switched upstream), so reading them whole is cheaper and simpler than change
tracking.

    >>> store = StateStore("sqlite+aiosqlite:///data/control.sqlite3")  # doctest: +SKIP
    >>> await store.upgrade()                                            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, Float, Integer, MetaData, String, Text, delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from strangler_proxy.databases import NAMING_CONVENTION, is_sqlite, make_engine
from strangler_proxy.errors import StoreError
from strangler_proxy.routing.endpoints import UpstreamSwitch

DEFAULT_AUDIT_LIMIT = 50
MAX_AUDIT_LIMIT = 1000
# What an audit row's from/to hold: a mode, a zone name (a failover) or an endpoint's state (a drain).
AUDIT_STATE_LENGTH = 200


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RouteStateRow(Base):
    """A runtime override of one route or field (absent: the file decides)."""

    __tablename__ = "route_state"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    mode: Mapped[str] = mapped_column(String(20))
    percent: Mapped[float] = mapped_column(Float)
    # What the file said when the flip was made; a different file value later wins.
    file_mode: Mapped[str] = mapped_column(String(20))
    file_percent: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_by: Mapped[str] = mapped_column(String(200))


class FlipAuditRow(Base):
    """One change of mode or percent: who, when, from, to, why."""

    __tablename__ = "flip_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    who: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # flip | rollback | file | promotion | failover | drain | undrain
    from_mode: Mapped[str] = mapped_column(String(AUDIT_STATE_LENGTH))
    from_percent: Mapped[float] = mapped_column(Float)
    to_mode: Mapped[str] = mapped_column(String(AUDIT_STATE_LENGTH))
    to_percent: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class UpstreamSwitchRow(Base):
    """What operators set on one upstream (absent: health alone decides)."""

    __tablename__ = "upstream_switch"

    upstream: Mapped[str] = mapped_column(String(200), primary_key=True)
    pinned_zone: Mapped[str | None] = mapped_column(String(200), nullable=True)
    drained: Mapped[list[str]] = mapped_column(JSON)  # endpoint URLs, sorted
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_by: Mapped[str] = mapped_column(String(200))


@dataclass(frozen=True, slots=True)
class StoredOverride:
    """A ``route_state`` row as a value."""

    name: str
    mode: str
    percent: float
    file_mode: str
    file_percent: float
    version: int
    updated_by: str

    @property
    def is_field(self) -> bool:
        return "." in self.name


@dataclass(frozen=True, slots=True)
class StoredSwitch:
    """An ``upstream_switch`` row as a value (``drained`` sorted, so equal rows compare equal)."""

    upstream: str
    pinned_zone: str | None
    drained: tuple[str, ...]
    version: int
    updated_by: str

    @property
    def switch(self) -> UpstreamSwitch:
        """What the data plane reads."""
        return UpstreamSwitch(pinned_zone=self.pinned_zone, drained=frozenset(self.drained))

    @property
    def is_empty(self) -> bool:
        """Nothing set: the row is deleted rather than kept."""
        return self.pinned_zone is None and not self.drained


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A ``flip_audit`` row as a value (``at`` is an aware UTC datetime)."""

    id: int
    at: dt.datetime
    name: str
    who: str
    kind: str
    from_mode: str
    from_percent: float
    to_mode: str
    to_percent: float
    reason: str
    details: Mapping[str, Any] | None = field(default=None)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "name": self.name,
            "who": self.who,
            "kind": self.kind,
            "from": {"mode": self.from_mode, "percent": self.from_percent},
            "to": {"mode": self.to_mode, "percent": self.to_percent},
            "reason": self.reason,
            "details": dict(self.details) if self.details else None,
        }


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """What a caller says about a change; the store adds id and time."""

    name: str
    who: str
    kind: str
    from_mode: str
    from_percent: float
    to_mode: str
    to_percent: float
    reason: str = ""
    details: Mapping[str, Any] | None = None


def _override(row: RouteStateRow) -> StoredOverride:
    return StoredOverride(
        name=row.name,
        mode=row.mode,
        percent=row.percent,
        file_mode=row.file_mode,
        file_percent=row.file_percent,
        version=row.version,
        updated_by=row.updated_by,
    )


def _stored_switch(row: UpstreamSwitchRow) -> StoredSwitch:
    return StoredSwitch(
        upstream=row.upstream,
        pinned_zone=row.pinned_zone,
        drained=tuple(sorted(row.drained or ())),
        version=row.version,
        updated_by=row.updated_by,
    )


def _entry(row: FlipAuditRow) -> AuditEntry:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=dt.UTC)  # SQLite drops the zone
    return AuditEntry(
        id=row.id,
        at=at,
        name=row.name,
        who=row.who,
        kind=row.kind,
        from_mode=row.from_mode,
        from_percent=row.from_percent,
        to_mode=row.to_mode,
        to_percent=row.to_percent,
        reason=row.reason,
        details=row.details,
    )


def _audit_row(draft: AuditDraft) -> FlipAuditRow:
    return FlipAuditRow(
        at=_now(),
        name=draft.name,
        who=draft.who,
        kind=draft.kind,
        from_mode=draft.from_mode,
        from_percent=draft.from_percent,
        to_mode=draft.to_mode,
        to_percent=draft.to_percent,
        reason=draft.reason,
        details=dict(draft.details) if draft.details else None,
    )


_Row = TypeVar("_Row", RouteStateRow, UpstreamSwitchRow)


def _key_column(model: type[RouteStateRow | UpstreamSwitchRow]) -> str:
    return "name" if model is RouteStateRow else "upstream"


class StateStore:
    """Async access to the control database; every SQLAlchemy error becomes :class:`StoreError`."""

    def __init__(self, url: str, *, engine: AsyncEngine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer; serialising our own writes avoids "database is locked".
        self._write_lock = asyncio.Lock()

    async def upgrade(self) -> None:
        """Bring the control tables to the newest migration (what ``strangler db upgrade`` does)."""
        from strangler_proxy import migrate  # the registry imports alembic; only needed here

        await migrate.upgrade(migrate.CONTROL, self.url)

    async def close(self) -> None:
        await self.engine.dispose()

    def _where(self) -> str:
        return "SQLite" if is_sqlite(self.url) else self.engine.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------- reads

    async def overrides(self) -> dict[str, StoredOverride]:
        """Every override, routes and fields (names with a dot), by name."""
        rows = await self._read_all(RouteStateRow)
        return {r.name: _override(r) for r in rows}

    async def switches(self) -> dict[str, StoredSwitch]:
        """Every upstream's switches, by upstream name."""
        rows = await self._read_all(UpstreamSwitchRow)
        return {r.upstream: _stored_switch(r) for r in rows}

    async def _read_all(self, model: type[_Row]) -> list[_Row]:
        try:
            async with self._sessions() as session:
                return list((await session.scalars(select(model))).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {model.__tablename__}: {exc}") from exc

    async def audit(self, *, name: str | None = None, limit: int = DEFAULT_AUDIT_LIMIT) -> list[AuditEntry]:
        """Newest first."""
        limit = max(1, min(limit, MAX_AUDIT_LIMIT))
        stmt = select(FlipAuditRow).order_by(FlipAuditRow.id.desc()).limit(limit)
        if name is not None:
            stmt = stmt.where(FlipAuditRow.name == name)
        try:
            async with self._sessions() as session:
                rows = (await session.scalars(stmt)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read flip_audit: {exc}") from exc
        return [_entry(r) for r in rows]

    # ------------------------------------------------------------ writes

    async def put_override(
        self, override: StoredOverride, audit: AuditDraft, *, expected_version: int | None
    ) -> StoredOverride:
        """Write one override and its audit entry in one transaction.

        ``expected_version`` is the version this replica last saw (None: no row);
        when another replica flipped in between, the write is refused so the
        caller never silently overwrites a flip it did not know about.
        """

        def fill(row: RouteStateRow) -> None:
            row.mode = override.mode
            row.percent = override.percent
            row.file_mode = override.file_mode
            row.file_percent = override.file_percent
            row.updated_by = override.updated_by

        row = await self._put_versioned(RouteStateRow, override.name, fill, [audit], expected_version=expected_version)
        return _override(row)

    async def put_switch(
        self, switch: StoredSwitch, audits: Sequence[AuditDraft], *, expected_version: int | None
    ) -> StoredSwitch:
        """Write one upstream's switches and their audit entries in one transaction
        (refused like :meth:`put_override` when another replica changed them meanwhile)."""

        def fill(row: UpstreamSwitchRow) -> None:
            row.pinned_zone = switch.pinned_zone
            row.drained = sorted(switch.drained)
            row.updated_by = switch.updated_by

        row = await self._put_versioned(UpstreamSwitchRow, switch.upstream, fill, audits,
                                        expected_version=expected_version)
        return _stored_switch(row)

    async def _put_versioned(
        self, model: type[_Row], key: str, fill: Callable[[_Row], None], audits: Sequence[AuditDraft], *,
        expected_version: int | None,
    ) -> _Row:
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    row = await session.get(model, key, with_for_update=True)
                    current = row.version if row is not None else None
                    if current != expected_version:
                        raise StoreError(
                            f"{key}: changed by another replica meanwhile "
                            f"(version {current}, expected {expected_version}); retry"
                        )
                    if row is None:
                        row = model(version=1)
                        setattr(row, _key_column(model), key)
                        session.add(row)
                    else:
                        row.version = row.version + 1
                    fill(row)
                    row.updated_at = _now()
                    session.add_all([_audit_row(a) for a in audits])
                    await session.flush()
                    return row
            except (IntegrityError, StaleDataError) as exc:
                # Two replicas inserted the first row at once, or another one deleted the row
                # between this one's read and write (SQLite has no SELECT ... FOR UPDATE).
                raise StoreError(f"{key}: changed by another replica meanwhile; retry") from exc
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write {model.__tablename__}: {exc}") from exc

    async def clear_override(self, name: str, audit: AuditDraft | None, *, expected_version: int | None) -> bool:
        """Delete an override (the file decides again) and audit it, once.

        Returns False when the row was already gone or changed: another replica
        got there first, so only one audit entry is written for one change.
        """
        return await self._delete_versioned(RouteStateRow, name, [audit] if audit else [],
                                            expected_version=expected_version)

    async def clear_switch(self, upstream: str, audits: Sequence[AuditDraft], *, expected_version: int | None) -> bool:
        """Delete an upstream's switches (health alone decides again) and audit it, once
        (False, as :meth:`clear_override`, when another replica got there first)."""
        return await self._delete_versioned(UpstreamSwitchRow, upstream, audits, expected_version=expected_version)

    async def _delete_versioned(
        self, model: type[_Row], key: str, audits: Sequence[AuditDraft], *, expected_version: int | None
    ) -> bool:
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    column = getattr(model, _key_column(model))
                    stmt = delete(model).where(column == key)
                    if expected_version is not None:
                        stmt = stmt.where(model.version == expected_version)
                    result = await session.execute(stmt)
                    if result.rowcount != 1:  # type: ignore[attr-defined]
                        return False
                    session.add_all([_audit_row(a) for a in audits])
                    return True
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write {model.__tablename__}: {exc}") from exc

    async def add_audit(self, entries: Sequence[AuditDraft]) -> None:
        """Audit changes that touch no override (a file value changed on reload)."""
        if not entries:
            return
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    session.add_all([_audit_row(e) for e in entries])
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write flip_audit: {exc}") from exc
