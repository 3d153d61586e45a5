"""Which operator switches an upstream may take, and which of them a config keeps.
Pure functions, no I/O; :class:`~strangler_proxy.control.switches.SwitchService` does
the I/O around their answers, as the flip service does around precedence.py's.

Two switches exist per upstream (``routing/endpoints.py``'s :class:`UpstreamSwitch`):
the zone it is pinned to (``strangler failover UPSTREAM --to ZONE``; ``--auto``
unpins) and its drained endpoints (``strangler drain``/``undrain``). One rule
holds whatever the order of changes: **an upstream always keeps a candidate**,
an endpoint that is not drained (in the pinned zone, when pinned). A drained
endpoint is never chosen, not even in panic mode, so draining the last one
would turn a drain -- "let in-flight requests finish, send new ones elsewhere"
-- into an outage of every route on that upstream; it is refused, and so is a
pin to a zone whose endpoints are all drained. A reloaded file that breaks the
rule (it removed the other endpoints) loses the pin first, then the drains.

Endpoints are named by their URL as every admin answer shows it, a password
hidden (:func:`endpoint_key`): that is what is stored, audited and accepted
back from an operator; only :func:`data_plane_switches` maps it to the real URL
the pools use.

    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text('''upstreams:
    ...   legacy:
    ...     endpoints:
    ...       - {url: "http://10.0.0.1:8001", zone: eu}
    ...       - {url: "http://10.0.0.2:8001", zone: us}''')
    >>> up = cfg.upstreams["legacy"]
    >>> resolve_endpoint("legacy", up, "us").url          # a zone with one endpoint names it
    'http://10.0.0.2:8001'
    >>> drained = drain("legacy", up, UpstreamSwitch(), resolve_endpoint("legacy", up, "0"))
    >>> sorted(drained.drained)
    ['http://10.0.0.1:8001']
    >>> drain("legacy", up, drained, resolve_endpoint("legacy", up, "1"))
    Traceback (most recent call last):
    ...
    strangler_proxy.errors.SwitchError: upstream 'legacy': http://10.0.0.2:8001 is its last endpoint that is not drained; ...
    >>> failover("legacy", up, drained, "eu")
    Traceback (most recent call last):
    ...
    strangler_proxy.errors.SwitchError: upstream 'legacy': every endpoint in zone 'eu' is drained: undrain one first
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from strangler_proxy.config import EndpointConfig, StranglerConfig, UpstreamConfig
from strangler_proxy.control.config_view import shown_http_url
from strangler_proxy.control.state_store import AuditDraft, StoredSwitch
from strangler_proxy.errors import SwitchError
from strangler_proxy.routing.endpoints import UpstreamSwitch

# Audit rows of switches are named ``upstream:NAME``: route and upstream names share no
# namespace (the demo has both a route and an upstream called ratings), and readers of a
# route's history take every row of its name for a change of mode.
AUDIT_PREFIX = "upstream:"
KIND_FAILOVER = "failover"
KIND_DRAIN = "drain"
KIND_UNDRAIN = "undrain"
KIND_FILE = "file"  # the file dropped a switch it no longer allows (who is "file")
WHO_FILE = "file"
AUTO = "auto"  # a failover's from/to when no zone is pinned: health decides
SERVING = "serving"
DRAINED = "drained"
REMOVED = "removed"  # a drained endpoint the file no longer lists


def audit_name(upstream: str) -> str:
    """``upstream:NAME``, the name of an upstream's switches in the audit log.

    >>> audit_name("legacy")
    'upstream:legacy'
    """
    return AUDIT_PREFIX + upstream


def upstream_config(config: StranglerConfig, name: str) -> UpstreamConfig:
    """The upstream ``name`` of ``config``; :class:`SwitchError` naming the known ones if there is none."""
    found = config.upstreams.get(name)
    if found is None:
        raise SwitchError(f"no such upstream (known: {', '.join(sorted(config.upstreams)) or 'none'})", upstream=name)
    return found


def zones(upstream: UpstreamConfig) -> list[str]:
    """The upstream's zones, in the order the file first names them."""
    return list(dict.fromkeys(e.zone for e in upstream.endpoint_list))


def endpoint_key(endpoint: EndpointConfig) -> str:
    """How the control plane names an endpoint: its URL, a password hidden.

    >>> endpoint_key(EndpointConfig(url="http://app:pw@10.0.0.1:8001/"))
    'http://app:***@10.0.0.1:8001'
    """
    return shown_http_url(endpoint.url)


def _listing(upstream: UpstreamConfig) -> str:
    return ", ".join(f"{i} {endpoint_key(e)} ({e.zone})" for i, e in enumerate(upstream.endpoint_list))


def resolve_endpoint(name: str, upstream: UpstreamConfig, ref: str) -> EndpointConfig:
    """The endpoint ``ref`` names: its URL, its index in the file's list (``0``, ``1``,
    ... as ``strangler upstreams`` shows), or a zone that has exactly one endpoint.
    A reference that could mean two endpoints is refused rather than guessed."""
    ref = ref.strip()
    endpoints = upstream.endpoint_list
    if "://" in ref:
        url = ref.rstrip("/")
        for e in endpoints:
            if url in (e.url, endpoint_key(e)):
                return e
        raise SwitchError(f"no endpoint {ref} (endpoints: {_listing(upstream)})", upstream=name)
    by_index = endpoints[int(ref)] if ref.isdigit() and int(ref) < len(endpoints) else None
    in_zone = [e for e in endpoints if e.zone == ref]
    by_zone = in_zone[0] if len(in_zone) == 1 else None
    if by_index is not None and by_zone is not None and by_index is not by_zone:
        raise SwitchError(f"{ref!r} is both endpoint {ref} ({endpoint_key(by_index)}) and zone {ref} "
                          f"({endpoint_key(by_zone)}): "
                          "name it by URL", upstream=name)
    found = by_index or by_zone
    if found is not None:
        return found
    if in_zone:
        raise SwitchError(f"zone {ref!r} has {len(in_zone)} endpoints: name one by URL or index "
                          f"(endpoints: {_listing(upstream)})", upstream=name)
    raise SwitchError(f"no endpoint {ref!r}: give its URL, index or zone (endpoints: {_listing(upstream)})",
                      upstream=name)


def candidates(upstream: UpstreamConfig, switch: UpstreamSwitch) -> list[EndpointConfig]:
    """The endpoints the switches leave choosable: not drained, in the pinned zone if any."""
    return [e for e in upstream.endpoint_list if endpoint_key(e) not in switch.drained
            and (switch.pinned_zone is None or e.zone == switch.pinned_zone)]


def failover(name: str, upstream: UpstreamConfig, current: UpstreamSwitch, zone: str | None) -> UpstreamSwitch:
    """Pin to ``zone`` (None: back to health-driven behaviour)."""
    if zone is not None and zone not in zones(upstream):
        raise SwitchError(f"no endpoint in zone {zone!r} (zones: {', '.join(zones(upstream))})", upstream=name)
    new = replace(current, pinned_zone=zone)
    if not candidates(upstream, new):
        raise SwitchError(f"every endpoint in zone {zone!r} is drained: undrain one first", upstream=name)
    return new


def drain(name: str, upstream: UpstreamConfig, current: UpstreamSwitch, endpoint: EndpointConfig) -> UpstreamSwitch:
    """Take ``endpoint`` out of the choice; refused for the last candidate (module docstring)."""
    key = endpoint_key(endpoint)
    new = replace(current, drained=current.drained | {key})
    if new != current and not candidates(upstream, new):
        if current.pinned_zone is not None and candidates(upstream, UpstreamSwitch(drained=new.drained)):
            raise SwitchError(f"{key} is the last endpoint not drained in zone {current.pinned_zone!r}, "
                              "which the upstream is pinned to: fail over to another zone (or --auto) first",
                              upstream=name)
        raise SwitchError(f"{key} is its last endpoint that is not drained; a drained endpoint is never "
                          "chosen, so every request to it would fail: undrain or add another endpoint first",
                          upstream=name)
    return new


def undrain(upstream: UpstreamConfig, current: UpstreamSwitch, endpoint: EndpointConfig) -> UpstreamSwitch:
    """Put ``endpoint`` back into the choice."""
    del upstream  # every endpoint may come back; the argument keeps the three changes alike
    return replace(current, drained=current.drained - {endpoint_key(endpoint)})


def failover_draft(name: str, before: UpstreamSwitch, after: UpstreamSwitch, *, who: str, kind: str,
                   reason: str) -> AuditDraft:
    """The audit row of a pin changing, from zone (or ``auto``) to zone (or ``auto``)."""
    return AuditDraft(
        name=audit_name(name), who=who, kind=kind, from_mode=before.pinned_zone or AUTO, from_percent=0.0,
        to_mode=after.pinned_zone or AUTO, to_percent=0.0, reason=reason, details={"upstream": name},
    )


def drain_draft(name: str, url: str, zone: str | None, before: str, after: str, *, who: str, kind: str,
                reason: str) -> AuditDraft:
    """The audit row of one endpoint drained, undrained or dropped (``serving``/``drained``/``removed``)."""
    details: dict[str, Any] = {"upstream": name, "endpoint": url}
    if zone is not None:
        details["zone"] = zone
    return AuditDraft(
        name=audit_name(name), who=who, kind=kind, from_mode=before, from_percent=0.0, to_mode=after,
        to_percent=0.0, reason=reason, details=details,
    )


@dataclass(frozen=True, slots=True)
class SwitchChange:
    """What a file does to one upstream's stored switches: the switches that stay
    (None: nothing is left, the row goes) and the audit rows saying what was dropped."""

    before: StoredSwitch
    after: StoredSwitch | None
    drafts: tuple[AuditDraft, ...]


def reconcile_switches(config: StranglerConfig, stored: Mapping[str, StoredSwitch]) -> dict[str, SwitchChange]:
    """Per upstream whose switches ``config`` no longer allows all of, what stays and why
    the rest goes: a removed upstream, a pinned zone or a drained endpoint the file no
    longer has, and -- so the upstream keeps a candidate -- the pin, then the drains, of
    an upstream the file left with nothing else (who ``file``, kind ``file``)."""
    out: dict[str, SwitchChange] = {}
    for name, s in sorted(stored.items()):
        change = _Dropping(name, s, config.upstreams.get(name)).run()
        if change is not None:
            out[name] = change
    return out


class _Dropping:
    """What one upstream's stored switches lose to a file (see :func:`reconcile_switches`)."""

    def __init__(self, name: str, stored: StoredSwitch, upstream: UpstreamConfig | None) -> None:
        self.name, self.stored, self.upstream = name, stored, upstream
        self.by_key = {endpoint_key(e): e for e in upstream.endpoint_list} if upstream is not None else {}
        self.pin = stored.pinned_zone
        self.drained = set(stored.drained)
        self.drafts: list[AuditDraft] = []

    def run(self) -> SwitchChange | None:
        up = self.upstream
        if up is None:
            if self.pin is not None:
                self.unpin("the upstream was removed from the file")
            self.undrain(list(self.drained), REMOVED, "the upstream was removed from the file")
        else:
            if self.pin is not None and self.pin not in zones(up):
                self.unpin(f"the file has no endpoint in zone {self.pin!r} any more")
            self.undrain([k for k in self.drained if k not in self.by_key], REMOVED,
                         "the endpoint was removed from the file")
            if self.pin is not None and not self.choosable(up):
                self.unpin(f"the file leaves no endpoint in zone {self.pin!r} that is not drained")
            if not self.choosable(up):
                self.undrain(list(self.drained), SERVING,
                             "the file leaves no other endpoint; a drained endpoint is never chosen")
        if not self.drafts:
            return None
        after = replace(self.stored, pinned_zone=self.pin, drained=tuple(sorted(self.drained)), updated_by=WHO_FILE)
        return SwitchChange(before=self.stored, after=None if after.is_empty else after, drafts=tuple(self.drafts))

    def choosable(self, up: UpstreamConfig) -> bool:
        return bool(candidates(up, UpstreamSwitch(self.pin, frozenset(self.drained))))

    def unpin(self, why: str) -> None:
        self.drafts.append(failover_draft(self.name, UpstreamSwitch(pinned_zone=self.pin), UpstreamSwitch(),
                                          who=WHO_FILE, kind=KIND_FILE, reason=why))
        self.pin = None

    def undrain(self, keys: list[str], to: str, why: str) -> None:
        for key in sorted(keys):
            zone = self.by_key[key].zone if key in self.by_key else None
            self.drafts.append(drain_draft(self.name, key, zone, DRAINED, to, who=WHO_FILE, kind=KIND_FILE,
                                           reason=why))
            self.drained.discard(key)


def effective_switches(config: StranglerConfig, stored: Mapping[str, StoredSwitch]) -> dict[str, UpstreamSwitch]:
    """The switches in force: what ``config`` keeps of ``stored``, by upstream (an upstream
    without switches is absent; endpoints named by :func:`endpoint_key`)."""
    changes = reconcile_switches(config, stored)
    out: dict[str, UpstreamSwitch] = {}
    for name, s in stored.items():
        kept: StoredSwitch | None = changes[name].after if name in changes else s
        if kept is not None and not kept.is_empty:
            out[name] = kept.switch
    return out


def data_plane_switches(config: StranglerConfig, switches: Mapping[str, UpstreamSwitch]) -> dict[str, UpstreamSwitch]:
    """``switches`` (from :func:`effective_switches`) as the endpoint pools take them: drained
    endpoints by their real URL, as the file gives it."""
    out: dict[str, UpstreamSwitch] = {}
    for name, switch in switches.items():
        up = config.upstreams[name]
        urls = frozenset(e.url for e in up.endpoint_list if endpoint_key(e) in switch.drained)
        out[name] = UpstreamSwitch(pinned_zone=switch.pinned_zone, drained=urls)
    return out
