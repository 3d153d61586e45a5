"""The control database: runtime flips (``route_state``) and their audit log (``flip_audit``).

One row of ``route_state`` is one runtime override of a route or a GraphQL
field (names with a dot are fields, ``Type.field``). It also remembers what the
file said for that name when the flip was made (``file_mode``/``file_percent``):
that is how a later reload -- or a restart -- can tell whether the file changed
since, in which case the file wins (see docs/operations.md, "precedence").

Every replica that shares the database polls :meth:`StateStore.overrides`; the
table is tiny (one row per flipped route), so reading it whole is cheaper and
simpler than change tracking.

    >>> store = StateStore("sqlite+aiosqlite:///data/control.sqlite3")  # doctest: +SKIP
    >>> await store.upgrade()                                            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, MetaData, String, Text, delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from strangler_proxy.databases import NAMING_CONVENTION, is_sqlite, make_engine
from strangler_proxy.errors import StoreError

DEFAULT_AUDIT_LIMIT = 50
MAX_AUDIT_LIMIT = 1000


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
    kind: Mapped[str] = mapped_column(String(20))  # flip | rollback | file | promotion
    from_mode: Mapped[str] = mapped_column(String(20))
    from_percent: Mapped[float] = mapped_column(Float)
    to_mode: Mapped[str] = mapped_column(String(20))
    to_percent: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


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
        try:
            async with self._sessions() as session:
                rows = (await session.scalars(select(RouteStateRow))).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read route_state: {exc}") from exc
        return {r.name: _override(r) for r in rows}

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
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    row = await session.get(RouteStateRow, override.name, with_for_update=True)
                    current = row.version if row is not None else None
                    if current != expected_version:
                        raise StoreError(
                            f"{override.name}: changed by another replica meanwhile "
                            f"(version {current}, expected {expected_version}); retry"
                        )
                    if row is None:
                        row = RouteStateRow(name=override.name, version=1)
                        session.add(row)
                    else:
                        row.version = row.version + 1
                    row.mode = override.mode
                    row.percent = override.percent
                    row.file_mode = override.file_mode
                    row.file_percent = override.file_percent
                    row.updated_by = override.updated_by
                    row.updated_at = _now()
                    session.add(_audit_row(audit))
                    await session.flush()
                    return _override(row)
            except IntegrityError as exc:  # two replicas inserted the first row at once
                raise StoreError(f"{override.name}: changed by another replica meanwhile; retry") from exc
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write route_state: {exc}") from exc

    async def clear_override(self, name: str, audit: AuditDraft | None, *, expected_version: int | None) -> bool:
        """Delete an override (the file decides again) and audit it, once.

        Returns False when the row was already gone or changed: another replica
        got there first, so only one audit entry is written for one change.
        """
        async with self._write_lock:
            try:
                async with self._sessions.begin() as session:
                    stmt = delete(RouteStateRow).where(RouteStateRow.name == name)
                    if expected_version is not None:
                        stmt = stmt.where(RouteStateRow.version == expected_version)
                    result = await session.execute(stmt)
                    if result.rowcount != 1:  # type: ignore[attr-defined]
                        return False
                    if audit is not None:
                        session.add(_audit_row(audit))
                    return True
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot write route_state: {exc}") from exc

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
