"""What saving a config file would do to the running proxy: a plan, computed, not applied.

:func:`make_plan` is a pure function of three things -- the running config (as
``GET /config`` shows it, :func:`~strangler_proxy.control.config_view.config_view`),
the new file's config, and the state of every route and field in force
(``GET /routes``: mode, percent, source, the file's value) -- and answers a
list of typed changes:

- :class:`Added` / :class:`Removed` -- a route or GraphQL field the file adds or
  drops (a dropped one with a runtime flip loses the flip too);
- :class:`ModeChange` -- a mode, percent or source that would change, decided
  by the same precedence a reload applies
  (:func:`~strangler_proxy.control.precedence.reconcile`): a runtime flip stays
  in force until the file's own value for that name changes, or the file makes
  the flip impossible;
- :class:`SettingChange` -- any other setting: upstreams, compare rules,
  guardrails, a route's or field's other keys, proxy settings. Settings the
  proxy reads only at start say so (``applies="restart"``).

The ``stack:`` section and secret values are not compared (config_view hides
them on both sides): a changed admin token's *value* does not show, a new
token name does.

    >>> from strangler_proxy.config import load_config_text
    >>> from strangler_proxy.control.config_view import config_view
    >>> old = load_config_text('''
    ... upstreams: {legacy: {url: "http://127.0.0.1:1"}, t: {url: "http://127.0.0.1:2"}}
    ... routes: [{name: r, path: /r, target: t, mode: shadow}]''')
    >>> new = load_config_text('''
    ... upstreams: {legacy: {url: "http://127.0.0.1:1"}, t: {url: "http://127.0.0.1:3"}}
    ... routes: [{name: r, path: /r, target: t, mode: extracted}]''')
    >>> flipped = RunningState("r", Mode.CANARY, 25.0, "flip", Mode.SHADOW, 0.0, "ops")
    >>> for change in make_plan(config_view(old), new, {"r": flipped}).changes:
    ...     print(change.describe())
    r: canary 25% (flip by ops) -> extracted (file): the file changed it (was shadow 0% when flipped by ops); the file's value wins over the runtime flip
    upstreams.t.url: "http://127.0.0.1:2" -> "http://127.0.0.1:3"
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from strangler_proxy.config import Mode, StranglerConfig
from strangler_proxy.control.config_view import config_view
from strangler_proxy.control.precedence import file_value, is_field, reconcile
from strangler_proxy.control.state_store import StoredOverride
from strangler_proxy.routing.router import RouteState, RouteTable

Kind = Literal["route", "field"]
Source = Literal["file", "flip"]
Applies = Literal["reload", "restart"]
Topic = Literal["upstreams", "compare", "guardrails", "routes", "fields", "settings"]
TOPICS: tuple[Topic, ...] = ("upstreams", "compare", "guardrails", "routes", "fields", "settings")

# What the proxy reads only when it starts (server.py): a reload leaves these as they are.
RESTART_ONLY: tuple[tuple[str, ...], ...] = (
    ("proxy", "listen"), ("proxy", "admin"), ("proxy", "limits"), ("shadow",), ("store",), ("databases",),
)
# The GraphQL gateway is composed at start; only field ownership follows a reload.
_GRAPHQL_RELOADED = "fields"
_STATE_KEYS = ("mode", "percent")  # compared through the precedence rules, not as plain settings
UNKNOWN_FLIPPER = "someone"


def _kind(name: str) -> Kind:
    return "field" if is_field(name) else "route"


@dataclass(frozen=True, slots=True)
class State:
    """A mode and percent, and where it comes from (the file, or a runtime flip)."""

    mode: Mode
    percent: float
    source: Source
    flipped_by: str | None = None

    def text(self) -> str:
        """``canary 25% (flip by ops)``, ``shadow (file)``; the percent only where it means something."""
        mode = RouteState(self.mode, self.percent).text()
        who = f" by {self.flipped_by}" if self.source == "flip" and self.flipped_by else ""
        return f"{mode} ({self.source}{who})"

    def same_effect(self, other: State) -> bool:
        """Whether both serve traffic the same way (the percent matters in canary only)."""
        if self.mode is not other.mode:
            return False
        return self.mode is not Mode.CANARY or self.percent == other.percent

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "percent": self.percent, "source": self.source}


@dataclass(frozen=True, slots=True)
class RunningState:
    """One route or field as the running proxy reports it (an entry of ``GET /routes``)."""

    name: str
    mode: Mode
    percent: float
    source: Source
    file_mode: Mode  # the running file's value; an override remembers it from its flip
    file_percent: float
    flipped_by: str | None = None

    @classmethod
    def from_admin(cls, entry: Mapping[str, Any]) -> RunningState:
        """From a ``routes`` or ``fields`` entry of ``GET /routes``; KeyError/ValueError if malformed."""
        file = entry.get("file") or {"mode": entry["mode"], "percent": entry["percent"]}
        return cls(
            name=str(entry["name"]),
            mode=Mode(entry["mode"]),
            percent=float(entry["percent"]),
            source="flip" if entry.get("source") == "flip" else "file",
            file_mode=Mode(file["mode"]),
            file_percent=float(file["percent"]),
            flipped_by=entry.get("flipped_by"),
        )

    @property
    def state(self) -> State:
        return State(self.mode, self.percent, self.source, self.flipped_by)

    def override(self) -> StoredOverride | None:
        """The override in force, as the state store keeps it (None: the file decides)."""
        if self.source != "flip":
            return None
        return StoredOverride(
            name=self.name, mode=self.mode.value, percent=self.percent, file_mode=self.file_mode.value,
            file_percent=self.file_percent, version=0, updated_by=self.flipped_by or UNKNOWN_FLIPPER,
        )


def running_states(routes: Mapping[str, Any]) -> dict[str, RunningState]:
    """Every route and field of a ``GET /routes`` answer, by name; KeyError/ValueError if malformed."""
    entries = [*routes.get("routes", []), *routes.get("fields", [])]
    return {s.name: s for s in (RunningState.from_admin(e) for e in entries)}


@dataclass(frozen=True, slots=True)
class Added:
    """A route or field the file adds, in the file's mode."""

    name: str
    kind: Kind
    state: State

    def describe(self) -> str:
        return f"+ {self.kind} {self.name}: {self.state.text()}"

    def as_json(self) -> dict[str, Any]:
        return {"change": "added", "name": self.name, "kind": self.kind, "after": self.state.as_json()}


@dataclass(frozen=True, slots=True)
class Removed:
    """A route or field the file no longer has (its requests then go to the default upstream)."""

    name: str
    kind: Kind
    before: State

    def describe(self) -> str:
        flip = "; its runtime flip is dropped" if self.before.source == "flip" else ""
        return f"- {self.kind} {self.name}: was {self.before.text()}{flip}"

    def as_json(self) -> dict[str, Any]:
        return {"change": "removed", "name": self.name, "kind": self.kind, "before": self.before.as_json()}


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A route or field whose mode, percent or source would change, and why."""

    name: str
    kind: Kind
    before: State
    after: State
    reason: str

    def describe(self) -> str:
        text = f"{self.name}: {self.before.text()} -> {self.after.text()}"
        if self.before.same_effect(self.after) and self.before.percent != self.after.percent:
            text += f" [percent {self.before.percent:g} -> {self.after.percent:g}, used in canary only]"
        return f"{text}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "change": "mode", "name": self.name, "kind": self.kind, "before": self.before.as_json(),
            "after": self.after.as_json(), "serves_differently": not self.before.same_effect(self.after),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class SettingChange:
    """Any other setting: ``path`` as in the file (``routes[ratings].compare.abs_tolerance``)."""

    path: str
    topic: Topic
    before: Any  # JSON data; None when the setting (or the entry holding it) is new
    after: Any  # ... None when it is gone
    applies: Applies

    def describe(self) -> str:
        later = " (read at start: takes effect on the next restart)" if self.applies == "restart" else ""
        return f"{self.path}: {_json(self.before)} -> {_json(self.after)}{later}"

    def as_json(self) -> dict[str, Any]:
        return {"change": "setting", "path": self.path, "topic": self.topic, "before": self.before,
                "after": self.after, "applies": self.applies}


Change = Added | Removed | ModeChange | SettingChange


@dataclass(frozen=True, slots=True)
class Plan:
    """Every change saving the file would make, in a stable order."""

    changes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def of(self, kind: type[Change]) -> list[Change]:
        return [c for c in self.changes if isinstance(c, kind)]

    def settings(self, topic: Topic) -> list[SettingChange]:
        return [c for c in self.changes if isinstance(c, SettingChange) and c.topic == topic]


def _compact(value: Any) -> Any:
    """A mapping without its unset (null) and empty entries: what a person wrote, roughly."""
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v not in (None, [], {})}
    return value


def _json(value: Any) -> str:
    return "(none)" if value is None else json.dumps(_compact(value), sort_keys=True, separators=(", ", ": "))


def check_like_reload(config: StranglerConfig) -> None:
    """What a reload checks beyond :func:`~strangler_proxy.config.load_config`: the route
    table builds. Raises :class:`~strangler_proxy.errors.ConfigError` as a reload refuses."""
    RouteTable.build(config)


def _names(config: StranglerConfig) -> list[str]:
    return [r.name for r in config.routes] + list(config.graphql.fields)


def _mode_changes(new: StranglerConfig, states: Mapping[str, RunningState]) -> Iterator[Change]:
    overrides = {n: o for n, s in states.items() if (o := s.override()) is not None}
    reconciled = reconcile(new, overrides)
    dropped = {o.name: why for o, why in reconciled.dropped}
    for name in _names(new):
        fv = file_value(new, name)
        assert fv is not None
        from_file = State(fv[0], fv[1], "file")
        running = states.get(name)
        if running is None:
            yield Added(name, _kind(name), from_file)
            continue
        if name in reconciled.kept:
            continue  # the flip stays in force: nothing changes for this name
        before = running.state
        if before == from_file:
            continue
        if name in dropped:
            reason = f"{dropped[name]}; the file's value wins over the runtime flip"
        else:
            reason = f"the file changed it (was {running.file_mode.value} {running.file_percent:g}%)"
        yield ModeChange(name, _kind(name), before, from_file, reason)
    known = set(_names(new))
    for name, running in states.items():
        if name not in known:
            yield Removed(name, _kind(name), running.state)


def _by_name(routes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in routes}


def _comparable(view: Mapping[str, Any], keep: set[str]) -> dict[str, Any]:
    """The view with routes keyed by name, only the routes and fields of ``keep``,
    and without their mode and percent (those go through the precedence rules)."""
    out = dict(view)
    routes = {n: {k: v for k, v in r.items() if k not in _STATE_KEYS}
              for n, r in _by_name(view.get("routes", [])).items() if n in keep}
    out["routes"] = routes
    graphql = dict(view.get("graphql", {}))
    graphql["fields"] = {n: {k: v for k, v in f.items() if k not in _STATE_KEYS}
                         for n, f in graphql.get("fields", {}).items() if n in keep}
    out["graphql"] = graphql
    return out


def _leaves(a: Any, b: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """The paths where ``a`` and ``b`` differ; a mapping entry on one side only is one change."""
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if key in a and key in b:
                yield from _leaves(a[key], b[key], (*path, key))
            else:
                yield (*path, key), a.get(key), b.get(key)
        return
    yield path, a, b


def _render(path: tuple[str, ...]) -> str:
    """``routes[ratings].compare.abs_tolerance``, ``graphql.fields[Title.rating].target``."""
    out = ""
    for i, part in enumerate(path):
        named = (i == 1 and path[0] == "routes") or (i == 2 and path[:2] == ("graphql", "fields")) or "." in part
        out += f"[{part}]" if named else ("." if out else "") + part
    return out


def _topic(path: tuple[str, ...]) -> Topic:
    if path[0] == "upstreams":
        return "upstreams"
    if "compare" in path:
        return "compare"
    if "guardrails" in path:
        return "guardrails"
    if path[0] == "routes":
        return "routes"
    if path[:2] == ("graphql", "fields"):
        return "fields"
    return "settings"


def _applies(path: tuple[str, ...]) -> Applies:
    if any(path[: len(p)] == p for p in RESTART_ONLY):
        return "restart"
    if path[0] == "graphql" and path[1:2] != (_GRAPHQL_RELOADED,):
        return "restart"
    return "reload"


def _setting_changes(running: Mapping[str, Any], new: StranglerConfig) -> Iterator[SettingChange]:
    new_view = config_view(new)
    keep = set(_by_name(running.get("routes", []))) & {r.name for r in new.routes}
    keep |= set(running.get("graphql", {}).get("fields", {})) & set(new.graphql.fields)
    a, b = _comparable(running, keep), _comparable(new_view, keep)
    for path, before, after in _leaves(a, b, ()):
        yield SettingChange(_render(path), _topic(path), before, after, _applies(path))
    # Route order breaks ties between equally specific routes (routing/router.py).
    order_a = [n for n in _by_name(running.get("routes", [])) if n in keep]
    order_b = [r.name for r in new.routes if r.name in keep]
    if order_a != order_b:
        yield SettingChange("routes (order)", "routes", order_a, order_b, "reload")


def make_plan(running: Mapping[str, Any], new: StranglerConfig, states: Mapping[str, RunningState]) -> Plan:
    """What saving ``new`` would change on a proxy running ``running`` (a config view)
    with ``states`` in force (by route name or ``Type.field``). Pure: no I/O.

    Raises :class:`~strangler_proxy.errors.ConfigError` when the new file's route
    table cannot be built (a reload refuses such a file); see :func:`check_like_reload`.
    """
    modes = list(_mode_changes(new, states))
    settings = sorted(_setting_changes(running, new), key=lambda c: TOPICS.index(c.topic))
    return Plan(tuple(modes + settings))
