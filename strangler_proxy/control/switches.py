"""Operators' switches of upstreams: failover to a zone and drained endpoints --
validated, persisted, audited, applied as one snapshot, shared between replicas.

:class:`SwitchService` is the only thing that changes them at run time, the way
:class:`~strangler_proxy.control.flips.FlipService` changes modes. A switch is

1. validated against the running config by switch_rules.py's pure functions
   (the upstream, zone and endpoint exist; the upstream keeps an endpoint to choose);
2. persisted in ``upstream_switch`` with its audit row (``flip_audit``, named
   ``upstream:NAME``, kind ``failover``/``drain``/``undrain``) in one transaction;
3. applied by handing the runtime a new immutable snapshot
   (``Mapping[str, UpstreamSwitch]``), which it pushes to the data plane's
   endpoint pools -- the served path's and the shadow path's.

Replicas sharing the control database poll ``upstream_switch`` as they poll
flips (replicas.py); a reloaded file drops what it no longer allows, audited
(``reload``). The data plane only ever reads the snapshot.

    >>> service = SwitchService(runtime, store)                            # doctest: +SKIP
    >>> await service.failover("legacy", "eu-west", who="ops", reason="us-east is down")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from strangler_proxy.config import StranglerConfig
from strangler_proxy.control import switch_rules as rules
from strangler_proxy.control.replicas import ReplicaPoller
from strangler_proxy.control.state_store import AuditDraft, StateStore, StoredSwitch
from strangler_proxy.dataplane.runtime import ProxyRuntime
from strangler_proxy.errors import StoreError
from strangler_proxy.routing.endpoints import UpstreamSwitch

log = logging.getLogger("strangler.switches")

CONFLICT_RETRIES = 2  # as flips: another replica changed the same upstream meanwhile


@dataclass(frozen=True, slots=True)
class SwitchOutcome:
    """What a failover, drain or undrain did (``changed`` False: it was already so)."""

    upstream: str
    kind: str
    changed: bool
    before: UpstreamSwitch
    after: UpstreamSwitch
    who: str
    reason: str
    endpoint: str | None = None  # the URL, for a drain or undrain
    zone: str | None = None  # the endpoint's zone (drain), or the zone pinned to (failover)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "upstream": self.upstream,
            "kind": self.kind,
            "changed": self.changed,
            "who": self.who,
            "reason": self.reason,
            "pinned_zone": self.after.pinned_zone,
            "drained": sorted(self.after.drained),
        }
        if self.kind == rules.KIND_FAILOVER:
            out["from"] = self.before.pinned_zone or rules.AUTO
            out["to"] = self.after.pinned_zone or rules.AUTO
        else:
            out["endpoint"] = self.endpoint
            out["zone"] = self.zone
        return out


def _stored(upstream: str, switch: UpstreamSwitch, previous: StoredSwitch | None, who: str) -> StoredSwitch:
    return StoredSwitch(upstream=upstream, pinned_zone=switch.pinned_zone, drained=tuple(sorted(switch.drained)),
                        version=(previous.version + 1) if previous else 1, updated_by=who)


class SwitchService:
    """Validates, persists, audits and applies upstream switches; keeps replicas in step."""

    def __init__(self, runtime: ProxyRuntime, store: StateStore, *, poll_interval_s: float | None = None) -> None:
        self.runtime = runtime
        self.store = store
        self.poll_interval_s = poll_interval_s or runtime.config.proxy.state_poll_interval_s
        self._stored: dict[str, StoredSwitch] = {}
        self._lock = asyncio.Lock()
        self._poller = ReplicaPoller(self.poll_once, self.poll_interval_s, name="strangler-switch-poll")

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the persisted switches, drop what the file no longer allows (audited), apply, poll."""
        async with self._lock:
            self._stored = await self.store.switches()
            await self._reconcile(self.config)
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    # ---------------------------------------------------------------- reads

    @property
    def config(self) -> StranglerConfig:
        return self.runtime.config

    def switches(self) -> dict[str, UpstreamSwitch]:
        """The switches in force, by upstream (endpoints named as :func:`switch_rules.endpoint_key` does)."""
        return rules.effective_switches(self.config, self._stored)

    def switch(self, upstream: str) -> UpstreamSwitch:
        """The switches in force on ``upstream`` (none set: health alone decides)."""
        return self.switches().get(upstream, UpstreamSwitch())

    def stored(self, upstream: str) -> StoredSwitch | None:
        return self._stored.get(upstream)

    # -------------------------------------------------------------- changes

    async def failover(self, upstream: str, zone: str | None, *, who: str, reason: str = "") -> SwitchOutcome:
        """Pin ``upstream`` to ``zone``; None returns it to health-driven behaviour.
        Raises :class:`SwitchError` (nothing changed) when refused."""

        def change(config: StranglerConfig, current: UpstreamSwitch) -> SwitchOutcome:
            up = rules.upstream_config(config, upstream)
            after = rules.failover(upstream, up, current, zone)
            return SwitchOutcome(upstream, rules.KIND_FAILOVER, after != current, current, after, who, reason,
                                 zone=zone)

        return await self._change(upstream, change)

    async def drain(self, upstream: str, endpoint: str, *, who: str, reason: str = "") -> SwitchOutcome:
        """Stop new requests to ``endpoint`` (URL, index or a zone with one endpoint);
        requests in flight finish. Refused for the upstream's last choosable endpoint."""

        def change(config: StranglerConfig, current: UpstreamSwitch) -> SwitchOutcome:
            up = rules.upstream_config(config, upstream)
            e = rules.resolve_endpoint(upstream, up, endpoint)
            after = rules.drain(upstream, up, current, e)
            return SwitchOutcome(upstream, rules.KIND_DRAIN, after != current, current, after, who, reason,
                                 endpoint=rules.endpoint_key(e), zone=e.zone)

        return await self._change(upstream, change)

    async def undrain(self, upstream: str, endpoint: str, *, who: str, reason: str = "") -> SwitchOutcome:
        """Put a drained endpoint back."""

        def change(config: StranglerConfig, current: UpstreamSwitch) -> SwitchOutcome:
            up = rules.upstream_config(config, upstream)
            e = rules.resolve_endpoint(upstream, up, endpoint)
            after = rules.undrain(up, current, e)
            return SwitchOutcome(upstream, rules.KIND_UNDRAIN, after != current, current, after, who, reason,
                                 endpoint=rules.endpoint_key(e), zone=e.zone)

        return await self._change(upstream, change)

    async def _change(self, upstream: str, change: Callable[[StranglerConfig, UpstreamSwitch], SwitchOutcome]
                      ) -> SwitchOutcome:
        for attempt in range(CONFLICT_RETRIES + 1):
            async with self._lock:
                try:
                    return await self._change_locked(upstream, change)
                except StoreError as exc:
                    if "another replica" not in str(exc) or attempt == CONFLICT_RETRIES:
                        raise
                    # Someone else switched this upstream: learn their state, decide again.
                    self._stored = await self.store.switches()
                    self._apply()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _change_locked(self, upstream: str,
                             change: Callable[[StranglerConfig, UpstreamSwitch], SwitchOutcome]) -> SwitchOutcome:
        outcome = change(self.config, self.switch(upstream))
        if not outcome.changed:
            return outcome
        if outcome.kind == rules.KIND_FAILOVER:
            draft = rules.failover_draft(upstream, outcome.before, outcome.after, who=outcome.who,
                                         kind=outcome.kind, reason=outcome.reason)
        else:
            assert outcome.endpoint is not None
            states = (rules.SERVING, rules.DRAINED) if outcome.kind == rules.KIND_DRAIN else (rules.DRAINED,
                                                                                               rules.SERVING)
            draft = rules.drain_draft(upstream, outcome.endpoint, outcome.zone, *states, who=outcome.who,
                                      kind=outcome.kind, reason=outcome.reason)
        previous = self._stored.get(upstream)
        expected = previous.version if previous else None
        new = _stored(upstream, outcome.after, previous, outcome.who)
        stored = dict(self._stored)
        if not new.is_empty:
            stored[upstream] = await self.store.put_switch(new, [draft], expected_version=expected)
        elif previous is None or await self.store.clear_switch(upstream, [draft], expected_version=expected):
            stored.pop(upstream, None)
        else:
            raise StoreError(f"{upstream}: changed by another replica meanwhile; retry")
        self._stored = stored
        self._apply()
        self._count(outcome)
        log.info("%s %s: %s -> %s by %s%s", outcome.kind, upstream, draft.from_mode, draft.to_mode, outcome.who,
                    (f" ({outcome.endpoint})" if outcome.endpoint else "") + (f": {outcome.reason}"
                                                                               if outcome.reason else ""))
        return outcome

    def _count(self, outcome: SwitchOutcome) -> None:
        metrics = self.runtime.metrics
        if outcome.kind == rules.KIND_FAILOVER:
            metrics.inc(metrics.failovers_total, outcome.upstream, outcome.after.pinned_zone or rules.AUTO)
        else:
            metrics.inc(metrics.drains_total, outcome.upstream, outcome.kind)

    # -------------------------------------------------------------- reloads

    async def reload(self, config: StranglerConfig) -> list[AuditDraft]:
        """Apply a new (already validated and swapped in) config: switches it no longer
        allows are dropped and audited. Returns what was dropped."""
        async with self._lock:
            return await self._reconcile(config)

    def apply_now(self, config: StranglerConfig) -> None:
        """Hand the data plane the switches ``config`` keeps, at once (no I/O): a reload
        calls it in the same step as the config swap, so no request sees a new file with
        a pin to a zone it no longer has; :meth:`reload` then persists and audits."""
        self._apply(config)

    async def _reconcile(self, config: StranglerConfig) -> list[AuditDraft]:
        changes = rules.reconcile_switches(config, self._stored)
        stored = dict(self._stored)
        for name, c in changes.items():
            # Conditional writes: of several replicas reloading the same file, one audits.
            try:
                if c.after is None:
                    await self.store.clear_switch(name, c.drafts, expected_version=c.before.version)
                    stored.pop(name, None)
                else:
                    stored[name] = await self.store.put_switch(c.after, c.drafts, expected_version=c.before.version)
            except StoreError as exc:
                if "another replica" not in str(exc):
                    raise
                fresh = (await self.store.switches()).get(name)
                stored[name] = fresh  # type: ignore[assignment]
                if fresh is None:
                    stored.pop(name, None)
            for d in c.drafts:
                log.warning("%s: %s -> %s (%s)%s", d.name, d.from_mode, d.to_mode, d.reason,
                            f" {d.details['endpoint']}" if d.details and "endpoint" in d.details else "")
        self._stored = stored
        self._apply(config)
        return [d for c in changes.values() for d in c.drafts]

    # ----------------------------------------------------------- replicas

    async def poll_once(self) -> bool:
        """Apply other replicas' switches; True if anything changed."""
        fresh = await self.store.switches()
        if fresh == self._stored:
            return False
        async with self._lock:
            fresh = await self.store.switches()  # again under the lock: a local change may have landed
            if fresh == self._stored:
                return False
            self._stored = fresh
            self._apply()
            return True

    # -------------------------------------------------------------- helpers

    def _apply(self, config: StranglerConfig | None = None) -> None:
        """Swap the runtime's switches snapshot: what the config keeps of the stored ones."""
        config = config or self.config
        snapshot = rules.data_plane_switches(config, rules.effective_switches(config, self._stored))
        self.runtime.set_switches(MappingProxyType(snapshot))

