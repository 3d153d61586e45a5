"""Flips: validated, persisted, audited, applied atomically, shared between replicas.

:class:`FlipService` is the only thing that changes a route's (or a GraphQL
field's) mode at run time. A flip is

1. validated against the running config (the route exists, the mode needs a
   target, the percent fits) and by building the new route table;
2. persisted with its audit entry in one transaction of the state store;
3. applied by swapping the runtime's whole table (``ProxyRuntime.apply``).

Replicas sharing a database poll ``route_state`` and apply what they find.

Which value is in force, the file's or a flip's, is decided by the pure
functions of precedence.py (docs/operations.md); this module does the I/O
around their answers. Replicas follow each other's flips through
replicas.py.

    >>> service = FlipService(runtime, store)                         # doctest: +SKIP
    >>> await service.flip("ratings", "canary", 5, who="ops", reason="first 5%")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from strangler_proxy.config import Mode, StranglerConfig
from strangler_proxy.control.precedence import (
    effective,
    file_value,
    flip_percent,
    is_field,
    override_state,
    reconcile,
    route_overrides,
)
from strangler_proxy.control.replicas import ReplicaPoller
from strangler_proxy.control.state_store import AuditDraft, AuditEntry, StateStore, StoredOverride
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.errors import FlipError, StoreError
from strangler_proxy.routing.cells import Tables, build_tables, split_scoped
from strangler_proxy.routing.router import RouteState

log = logging.getLogger("strangler.flips")

WHO_FILE = "file"
KIND_FLIP = "flip"
KIND_FILE = "file"
KIND_ROLLBACK = "rollback"
KIND_PROMOTION = "promotion"
# How often a flip is retried when another replica changed the same row meanwhile.
CONFLICT_RETRIES = 2
ACTIVE_MODES = frozenset({Mode.CANARY, Mode.EXTRACTED})
DEFAULT_ROLLBACK_MODE = Mode.SHADOW
_ROLLBACK_HISTORY = 200

OverridesListener = Callable[[Mapping[str, RouteState]], None]


@dataclass(frozen=True, slots=True)
class FlipOutcome:
    """What a flip did (``changed`` False: it was already in that state)."""

    name: str
    changed: bool
    from_mode: Mode
    from_percent: float
    to_mode: Mode
    to_percent: float
    who: str
    reason: str
    kind: str
    overridden: bool  # False: the name follows the file again

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "changed": self.changed,
            "from": {"mode": self.from_mode.value, "percent": self.from_percent},
            "to": {"mode": self.to_mode.value, "percent": self.to_percent},
            "who": self.who,
            "reason": self.reason,
            "kind": self.kind,
            "source": "flip" if self.overridden else "file",
        }


@dataclass(frozen=True, slots=True)
class Removed:
    """A route or field a reloaded file no longer has, with the state it was in until then."""

    name: str
    mode: Mode
    percent: float
    source: str  # "file", or "flip" when a runtime override was in force (it is dropped)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode.value, "percent": self.percent, "source": self.source}


@dataclass(frozen=True, slots=True)
class FileReload:
    """What applying a new file did: the mode changes it made and the routes and fields it removed."""

    changes: list[AuditDraft]
    removed_routes: list[Removed]
    removed_fields: list[Removed]


def _parse_mode(mode: Mode | str, name: str) -> Mode:
    try:
        return Mode(mode)
    except ValueError as exc:
        allowed = ", ".join(m.value for m in Mode)
        raise FlipError(f"unknown mode {mode!r}; allowed: {allowed}", route=name) from exc


class FlipService:
    """Validates, persists, audits and applies flips; keeps replicas in step.

    Route overrides go to the runtime's table; field overrides (``Type.field``)
    are kept here for the GraphQL gateway (:meth:`field_state`,
    :meth:`add_listener`).
    """

    def __init__(
        self,
        runtime: ProxyRuntime,
        store: StateStore,
        *,
        poll_interval_s: float | None = None,
        on_flip: Callable[[FlipOutcome], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.poll_interval_s = poll_interval_s or runtime.config.proxy.state_poll_interval_s
        self._stored: dict[str, StoredOverride] = {}
        self._lock = asyncio.Lock()
        self._poller = ReplicaPoller(self.poll_once, self.poll_interval_s)
        self._listeners: list[OverridesListener] = []
        self._on_flip = on_flip

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load persisted overrides, let a changed file win, apply, start polling."""
        async with self._lock:
            self._stored = await self.store.overrides()
            await self._reconcile(self.runtime.config, old_config=None)
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    # ---------------------------------------------------------------- reads

    @property
    def config(self) -> StranglerConfig:
        return self.runtime.config

    def overrides(self) -> dict[str, RouteState]:
        """Every override in force, routes and fields, by name."""
        return {name: override_state(o) for name, o in self._stored.items() if file_value(self.config, name) is not None}

    def stored(self, name: str) -> StoredOverride | None:
        return self._stored.get(name)

    def state(self, name: str) -> RouteState | None:
        """The effective mode/percent of a route or field (override, else file); None if unknown.
        A per-cell name (``ratings@eu-1``) without an override of its own follows the route's."""
        base, cell = split_scoped(name)
        if cell is not None and name not in self._stored:
            return self.state(base) if file_value(self.config, name) is not None else None
        return effective(self.config, name, self._stored.get(name))

    def field_state(self, name: str) -> RouteState | None:
        """Effective mode/percent of GraphQL field ``Type.field`` (for the gateway)."""
        return self.state(name) if is_field(name) else None

    def add_listener(self, listener: OverridesListener) -> None:
        """Called with :meth:`overrides` after every change (flip, reload, another replica's flip)."""
        self._listeners.append(listener)

    async def audit(self, *, name: str | None = None, limit: int = 50) -> list[AuditEntry]:
        return await self.store.audit(name=name, limit=limit)

    async def rollback_target(self, name: str) -> RouteState:
        """The mode before the route last entered canary/extracted from legacy/shadow.

        Walking back past canary->extracted steps means a rollback never lands
        on another mode that still sends traffic to the failing candidate.
        """
        for entry in await self.store.audit(name=name, limit=_ROLLBACK_HISTORY):
            if Mode(entry.to_mode) in ACTIVE_MODES and Mode(entry.from_mode) not in ACTIVE_MODES:
                return RouteState(mode=Mode(entry.from_mode), percent=entry.from_percent)
        fv = file_value(self.config, name)
        if fv is not None and fv[0] not in ACTIVE_MODES:
            return RouteState(mode=fv[0], percent=fv[1])
        return RouteState(mode=DEFAULT_ROLLBACK_MODE, percent=0.0)

    # --------------------------------------------------------------- flips

    async def flip(
        self,
        name: str,
        mode: Mode | str,
        percent: float | None = None,
        *,
        who: str,
        reason: str = "",
        kind: str = KIND_FLIP,
        details: Mapping[str, Any] | None = None,
        only_if: RouteState | None = None,
    ) -> FlipOutcome:
        """Change one route or field; raise :class:`FlipError` and change nothing if refused.

        ``only_if``: refuse unless the current state is this one (guardrails use
        it so a rollback never undoes a flip a person made meanwhile).
        """
        for attempt in range(CONFLICT_RETRIES + 1):
            async with self._lock:
                try:
                    return await self._flip_locked(name, mode, percent, who, reason, kind, details, only_if)
                except StoreError as exc:
                    if "another replica" not in str(exc) or attempt == CONFLICT_RETRIES:
                        raise
                    # Someone else flipped this name: learn their state, recompute "from".
                    self._stored = await self.store.overrides()
                    self._apply(self.config)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _flip_locked(
        self,
        name: str,
        mode_in: Mode | str,
        percent_in: float | None,
        who: str,
        reason: str,
        kind: str,
        details: Mapping[str, Any] | None,
        only_if: RouteState | None,
    ) -> FlipOutcome:
        config = self.config
        fv = file_value(config, name)
        if fv is None:
            base, cell = split_scoped(name)
            if cell is not None and file_value(config, base) is not None:
                cells = ", ".join(config.cells.names) if config.cells else "none: the file has no cells: section"
                raise FlipError(f"no such cell {cell!r} (cells: {cells})", route=name)
            known = [r.name for r in config.routes] + list(config.graphql.fields)
            raise FlipError(f"no such route or field (known: {', '.join(known) or 'none'})", route=name)
        mode = _parse_mode(mode_in, name)
        current = self.state(name)
        assert current is not None
        base, cell = split_scoped(name)
        # What the name follows without an override: a cell follows its route, a route its file.
        inherited = fv
        if cell is not None:
            followed = self.state(base)
            assert followed is not None
            inherited = (followed.mode, followed.percent)
        if only_if is not None and (current.mode, current.percent) != (only_if.mode, only_if.percent):
            raise FlipError(
                f"state changed meanwhile (now {current.mode.value} {current.percent:g}%); not applied", route=name
            )
        percent = flip_percent(name, mode, percent_in, current, inherited)
        if not is_field(name):
            rc = config.route(base)
            if rc is not None and mode is not Mode.LEGACY and not rc.target:
                raise FlipError(f"mode {mode.value!r} needs a 'target' upstream in strangler.yaml", route=name)
        outcome = FlipOutcome(
            name=name,
            changed=(mode, percent) != (current.mode, current.percent),
            from_mode=current.mode,
            from_percent=current.percent,
            to_mode=mode,
            to_percent=percent,
            who=who,
            reason=reason,
            kind=kind,
            overridden=(mode, percent) != inherited,
        )
        if not outcome.changed:
            return outcome
        audit = AuditDraft(
            name=name, who=who, kind=kind, from_mode=current.mode.value, from_percent=current.percent,
            to_mode=mode.value, to_percent=percent, reason=reason, details=details,
        )
        previous = self._stored.get(name)
        new_stored = dict(self._stored)
        if outcome.overridden:
            new_stored[name] = StoredOverride(
                name=name, mode=mode.value, percent=percent, file_mode=fv[0].value, file_percent=fv[1],
                version=(previous.version + 1) if previous else 1, updated_by=who,
            )
        else:
            new_stored.pop(name, None)
        self._route_table(config, new_stored)  # validates the whole table before anything is written
        expected = previous.version if previous else None
        if outcome.overridden:
            new_stored[name] = await self.store.put_override(new_stored[name], audit, expected_version=expected)
        elif not await self.store.clear_override(name, audit, expected_version=expected):
            raise StoreError(f"{name}: changed by another replica meanwhile; retry")
        self._stored = new_stored
        self._apply(config)
        metrics = self.runtime.metrics
        metrics.inc(metrics.flips_total, name, mode.value)
        log.info(
            "flip %s: %s %g%% -> %s %g%% by %s (%s)%s", name, current.mode.value, current.percent, mode.value,
            percent, who, kind, f": {reason}" if reason else "",
        )
        if self._on_flip is not None:
            self._on_flip(outcome)
        return outcome

    # -------------------------------------------------------------- reloads

    async def reload(self, config: StranglerConfig) -> list[AuditDraft]:
        """Swap in a new (already validated) config, letting changed file values win.

        Returns what the file changed (also written to the audit log). Raises
        and keeps the running config if the new table cannot be built.
        """
        return (await self.reload_file(config)).changes

    async def reload_file(self, config: StranglerConfig) -> FileReload:
        """:meth:`reload`, also naming every route and field the new file removes and its mode until now."""
        async with self._lock:
            gone = [
                Removed(name, state.mode, state.percent, "flip" if name in self._stored else "file")
                for name in self._names(self.config)
                if file_value(config, name) is None and (state := self.state(name)) is not None
            ]
            changes = await self._reconcile(config, old_config=self.config)
        return FileReload(
            changes=changes,
            removed_routes=[r for r in gone if not is_field(r.name)],
            removed_fields=[r for r in gone if is_field(r.name)],
        )

    async def _reconcile(self, config: StranglerConfig, *, old_config: StranglerConfig | None) -> list[AuditDraft]:
        # Stale overrides and those the new file makes impossible are dropped. Replicas
        # share one file, so a name missing from it was removed (also across a restart).
        reconciled = reconcile(config, self._stored)
        stored = reconciled.kept
        clears = [
            (o, self._file_draft(o.name, override_state(o), file_value(config, o.name) or (Mode.LEGACY, 0.0), why))
            for o, why in reconciled.dropped
        ]
        plain: list[AuditDraft] = []
        if old_config is not None:
            for name in self._names(config):
                old, new = file_value(old_config, name), file_value(config, name)
                if name not in stored and old is not None and new != old and name not in {o.name for o, _ in clears}:
                    assert new is not None
                    plain.append(self._file_draft(name, RouteState(*old), new, "the file changed it"))
        for o, draft in clears:
            # Conditional delete: of several replicas reloading the same file, one audits.
            await self.store.clear_override(o.name, draft, expected_version=o.version)
        await self.store.add_audit(plain)
        self.runtime.apply(config=config, overrides=self._route_overrides(config, stored))
        self._stored = stored
        self._notify()
        for _, draft in clears:
            log.warning("%s: %s -> %s %g%% (%s)", draft.name, draft.from_mode, draft.to_mode, draft.to_percent,
                        draft.reason)
        return [d for _, d in clears] + plain

    @staticmethod
    def _file_draft(name: str, old: RouteState, new: tuple[Mode, float], reason: str) -> AuditDraft:
        return AuditDraft(
            name=name, who=WHO_FILE, kind=KIND_FILE, from_mode=Mode(old.mode).value, from_percent=old.percent,
            to_mode=new[0].value, to_percent=new[1], reason=reason,
        )

    @staticmethod
    def _names(config: StranglerConfig) -> list[str]:
        return [r.name for r in config.routes] + list(config.graphql.fields)

    # ----------------------------------------------------------- replicas

    async def poll_once(self) -> bool:
        """Apply other replicas' flips; True if anything changed."""
        fresh = await self.store.overrides()
        if fresh == self._stored:
            return False
        async with self._lock:
            fresh = await self.store.overrides()  # again under the lock: a local flip may have landed
            if fresh == self._stored:
                return False
            self._stored = fresh
            self._apply(self.config)
            return True

    # -------------------------------------------------------------- helpers

    def _route_overrides(self, config: StranglerConfig, stored: Mapping[str, StoredOverride]) -> dict[str, RouteState]:
        return route_overrides(config, stored)

    def _route_table(self, config: StranglerConfig, stored: Mapping[str, StoredOverride]) -> Tables:
        return build_tables(config, self._route_overrides(config, stored))

    def _apply(self, config: StranglerConfig) -> None:
        """Swap the runtime's table; an override this config cannot take is skipped and logged."""
        overrides = self._route_overrides(config, self._stored)
        while True:
            try:
                self.runtime.apply(overrides=overrides)
                break
            except FlipError as exc:
                if exc.route not in overrides:
                    raise
                log.error("ignoring the stored override of %s: %s", exc.route, exc)
                del overrides[exc.route]
        self._notify()

    def _notify(self) -> None:
        current = self.overrides()
        for listener in self._listeners:
            try:
                listener(current)
            except Exception:  # noqa: BLE001 -- a listener must not break a flip that is already applied
                log.exception("an overrides listener failed")
