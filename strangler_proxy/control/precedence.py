"""Which value is in force: the file's or a runtime flip's. Pure functions, no I/O.

A runtime flip wins over ``strangler.yaml`` until the file's own value for that
route or field changes: the changed file value is a newer deliberate decision,
so it wins and the override is dropped (audited as ``who="file"``). A route
removed from the file drops its override. A flip back to exactly the file's
value is no override at all: the file decides again. :class:`FlipService`
(flips.py) does the I/O around these answers.

    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text("upstreams: {legacy: {url: 'http://127.0.0.1:1'}, t: {url: 'http://127.0.0.1:2'}}\\n"
    ...                        "routes: [{name: r, path: /r, target: t, mode: shadow}]")
    >>> o = StoredOverride("r", "canary", 5.0, file_mode="shadow", file_percent=0.0, version=1, updated_by="ops")
    >>> effective(cfg, "r", o)
    RouteState(mode=<Mode.CANARY: 'canary'>, percent=5.0)
    >>> stale_override(cfg, "r", o) is None        # the file still says shadow: the flip wins
    True
    >>> stale_override(cfg, "r", replace(o, file_mode="legacy"))   # the file changed since the flip
    'the file changed it (was legacy 0% when flipped by ops)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace  # noqa: F401 -- replace is used by the doctest

from strangler_proxy.config import Mode, StranglerConfig
from strangler_proxy.control.state_store import StoredOverride
from strangler_proxy.errors import FlipError
from strangler_proxy.routing.cells import build_tables, split_scoped
from strangler_proxy.routing.router import RouteState

FileValue = tuple[Mode, float]


def is_field(name: str) -> bool:
    """GraphQL fields are ``Type.field``; route names never contain a dot."""
    return "." in name


def file_value(config: StranglerConfig, name: str) -> FileValue | None:
    """What ``strangler.yaml`` says for a route or field, or None if it is not there.
    A per-cell name (``ratings@eu-1``) has its route's value while the cell exists."""
    base, cell = split_scoped(name)
    if cell is not None:
        return file_value(config, base) if config.cells is not None and cell in config.cells.names else None
    if is_field(name):
        fc = config.graphql.fields.get(name)
        return (fc.mode, float(fc.percent)) if fc is not None else None
    rc = config.route(name)
    return (rc.mode, float(rc.percent)) if rc is not None else None


def override_state(override: StoredOverride) -> RouteState:
    return RouteState(mode=Mode(override.mode), percent=float(override.percent))


def effective(config: StranglerConfig, name: str, override: StoredOverride | None) -> RouteState | None:
    """The mode/percent in force: the override, else the file's; None when the file has no such name."""
    fv = file_value(config, name)
    if fv is None:
        return None
    return override_state(override) if override is not None else RouteState(mode=fv[0], percent=fv[1])


def stale_override(config: StranglerConfig, name: str, override: StoredOverride) -> str | None:
    """Why ``config`` drops ``override`` (the name was removed, or the file's value
    changed since the flip), or None when the flip still wins."""
    fv = file_value(config, name)
    if fv is None:
        base, cell = split_scoped(name)
        if cell is not None and file_value(config, base) is not None:
            return f"cell {cell!r} was removed from the file; its override is dropped"
        return "removed from the file; its override is dropped"
    if (fv[0].value, fv[1]) != (override.file_mode, override.file_percent):
        return (f"the file changed it (was {override.file_mode} {override.file_percent:g}% "
                f"when flipped by {override.updated_by})")
    return None


def route_overrides(config: StranglerConfig, stored: Mapping[str, StoredOverride]) -> dict[str, RouteState]:
    """The overrides of ``stored`` that are routes of ``config`` (``route@cell`` for one cell
    included), as :func:`build_tables` takes them."""
    return {n: override_state(o) for n, o in stored.items()
            if not is_field(n) and file_value(config, n) is not None}


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a new file does to the overrides in force: the ones that stay, and the
    ones it drops with the reason (each then follows the new file's value)."""

    kept: dict[str, StoredOverride]
    dropped: tuple[tuple[StoredOverride, str], ...]


def reconcile(config: StranglerConfig, stored: Mapping[str, StoredOverride]) -> Reconciled:
    """The overrides ``config`` keeps, as a reload (or a restart) applies them: a stale
    one (:func:`stale_override`) is dropped, and so is one the new file makes
    impossible (say, its target is gone) -- found by building the route table.

    Raises what :func:`build_tables` raises for the file itself (a bad template):
    such a file is refused whole. The flip service applies the answer; ``strangler
    plan`` shows it before the file is saved.
    """
    kept = dict(stored)
    dropped: list[tuple[StoredOverride, str]] = []
    for name, o in sorted(stored.items()):
        why = stale_override(config, name, o)
        if why is not None:
            dropped.append((o, why))
            del kept[name]
    while True:
        try:
            build_tables(config, route_overrides(config, kept))
            return Reconciled(kept, tuple(dropped))
        except FlipError as exc:
            o = kept.pop(exc.route, None) if exc.route else None
            if o is None:
                raise
            dropped.append((o, f"the file no longer allows it: {exc}"))


def flip_percent(name: str, mode: Mode, percent: float | None, current: RouteState, fv: FileValue) -> float:
    """The percent a flip to ``mode`` sets: a canary's own (or the current canary's),
    else the file's -- so a flip back to the file's mode clears the override."""
    if mode is not Mode.CANARY:
        if percent is not None:
            raise FlipError(f"--percent applies to canary only, not {mode.value}", route=name)
        return fv[1]  # the percent means nothing outside canary
    if percent is None:
        if current.mode is Mode.CANARY:
            return current.percent
        raise FlipError("canary needs a percent (0..100), e.g. --percent 5", route=name)
    try:
        value = float(percent)
    except (TypeError, ValueError) as exc:
        raise FlipError(f"percent must be a number 0..100, got {percent!r}", route=name) from exc
    if not 0.0 <= value <= 100.0:
        raise FlipError(f"percent {value:g} is outside 0..100", route=name)
    return value
