"""Reading what :func:`~strangler_proxy.report.progress.build_progress` needs.

Everything comes from the control database, where the results store, the
runtime flips (``route_state``) and their audit log (``flip_audit``) live
together, so no running proxy is needed:

- the results, one time point per stored bucket (``ResultsReader.summaries``);
- when each key's mode changed: the audit log (flips, rollbacks, promotions and
  the file's changes while a proxy ran);
- the modes now: given by the caller when it asked a running proxy (``GET
  /routes``), else the file with the flips stored in the control database (as a
  proxy would apply them on start), else the file alone -- and the answer says
  which (:attr:`Progress.modes_from`, :attr:`Progress.modes_note`).

A database with the results tables but not the control ones (a results-only
store) still gives a progress: modes from the file, no history.

With cells, a cell's results (``ratings@c1``) are judged by that cell's mode
over time (its own flips, else its route's: ``progress.cell_history``), and
each route's readiness is over all its cells' results together.

    progress = await load_progress(engine, config, since=time.time() - 3600)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncEngine

from strangler_proxy.config import DEFAULT_BUCKET_S, Mode, StranglerConfig
from strangler_proxy.control.plan import RunningState
from strangler_proxy.control.precedence import effective, file_value, stale_override
from strangler_proxy.control.state_store import MAX_AUDIT_LIMIT, StateStore, StoredOverride
from strangler_proxy.diff.keys import configured_keys
from strangler_proxy.diff.result import GRAPHQL_KEY_PREFIX
from strangler_proxy.errors import StoreError
from strangler_proxy.report.build import judge
from strangler_proxy.report.progress import (
    DEFAULT_POINTS,
    KeyState,
    LiveShare,
    ModeHistory,
    ModesFrom,
    Progress,
    Switch,
    build_progress,
    cell_history,
)
from strangler_proxy.routing.cells import scoped, split_scoped
from strangler_proxy.store.histogram import merge_all
from strangler_proxy.store.queries import KeySummary, ResultsReader, empty_summary

# One time point per stored bucket: the modes are matched bucket by bucket.
PER_BUCKET = 1 << 40


def key_of(name: str) -> str:
    """A flip's name (``ratings``, ``Title.rating``) as a results key (``graphql:Title.rating``)."""
    return GRAPHQL_KEY_PREFIX + name if "." in name else name


def name_of(key: str) -> str:
    return key.removeprefix(GRAPHQL_KEY_PREFIX)


def states_from_admin(states: Mapping[str, RunningState]) -> dict[str, KeyState]:
    return {key_of(n): KeyState(s.mode, s.percent, s.source) for n, s in states.items()}


def _cells_of(config: StranglerConfig | None) -> tuple[str, ...]:
    return config.cells.names if config is not None and config.cells is not None else ()


def _states_from_file(config: StranglerConfig | None, stored: Mapping[str, StoredOverride]) -> dict[str, KeyState]:
    """The modes a proxy starting now would use: a stored flip wins unless the file changed since.
    A cell without a flip of its own has its route's mode."""
    out: dict[str, KeyState] = {}
    for key in configured_keys(config):
        assert config is not None
        for cell in (None, *_cells_of(config)):
            name = scoped(name_of(key), cell)
            o = stored.get(name)
            if o is not None and stale_override(config, name, o) is not None:
                o = None
            if cell is not None and o is None:
                continue  # follows the route (build_progress looks it up there)
            state = effective(config, name, o)
            if state is not None:
                out[scoped(key, cell)] = KeyState(Mode(state.mode), float(state.percent), "flip" if o is not None else "file")
    return out


async def _switches(store: StateStore, key: str) -> list[Switch]:
    entries = await store.audit(name=name_of(key), limit=MAX_AUDIT_LIMIT)
    return [Switch(e.at.timestamp(), Mode(e.from_mode), Mode(e.to_mode), e.from_percent, e.to_percent)
            for e in entries]


async def _histories(store: StateStore, keys: list[str], states: Mapping[str, KeyState],
                     config: StranglerConfig | None) -> dict[str, ModeHistory]:
    out: dict[str, ModeHistory] = {}
    routes: dict[str, list[Switch]] = {}
    for key in sorted(keys, key=lambda k: split_scoped(k)[1] is not None):  # routes before their cells
        base, cell = split_scoped(key)
        if cell is not None:
            if base not in routes:
                routes[base] = await _switches(store, base)
            state = states.get(key) or states.get(base)
            now = state.mode if state is not None else (out[base].now if base in out else Mode.SHADOW)
            out[key] = cell_history(routes[base], await _switches(store, key), now)
            continue
        switches = routes[key] = await _switches(store, key)
        state = states.get(key)
        if state is not None:
            now = state.mode
        elif switches:  # gone from the file: its last recorded mode
            now = max(switches, key=lambda s: s.at).to_mode
        else:
            fv = file_value(config, name_of(key)) if config is not None else None
            now = fv[0] if fv else Mode.SHADOW
        out[key] = ModeHistory(switches, now)
    return out


async def load_progress(
    engine: AsyncEngine,
    config: StranglerConfig | None,
    *,
    since: float | None = None,
    now: float | None = None,
    points: int = DEFAULT_POINTS,
    admin_states: Mapping[str, RunningState] | None = None,
    admin_note: str = "",
    live: LiveShare | None = None,
) -> Progress:
    """Read the store (and the audit log beside it) and build the progress.

    ``admin_states``: the modes a running proxy reported (``GET /routes``), with
    ``admin_note`` saying where from; without them the modes are read as the
    module docstring says (``admin_note`` then says why the proxy could not tell). Raises :class:`StoreError` when the store cannot be read.
    """
    now = time.time() if now is None else now
    bucket_s = config.store.bucket_s if config is not None else DEFAULT_BUCKET_S
    if since is not None:  # whole buckets: the one ``since`` falls in counts
        since = since // bucket_s * bucket_s
    reader = ResultsReader(engine, bucket_s)
    if not await reader.has_tables():
        raise StoreError("the results store has no tables; run `strangler db upgrade`")
    summaries = {s.key: s for s in await reader.summaries(top_paths=0, timeline_points=PER_BUCKET, since=since)}
    store = StateStore(str(engine.url), engine=engine)  # the engine is the caller's: not closed here
    modes_from: ModesFrom
    if admin_states is not None:
        states, modes_from, note = states_from_admin(admin_states), "admin", admin_note
    else:
        try:
            stored = await store.overrides()
            modes_from, note = "control-database", "the file's modes with the runtime flips stored in the control database"
        except StoreError:
            stored, modes_from, note = {}, "file", "the file's modes (no runtime flips found: this database has no control tables)"
        states = _states_from_file(config, stored)
        if config is None:
            modes_from, note = "none", "no config file: the modes are not known"
        if admin_note:  # why the running proxy could not say
            note += f" ({admin_note})"
    cell_keys = [scoped(k, c) for k in configured_keys(config) for c in _cells_of(config)]
    keys = list(dict.fromkeys([*configured_keys(config), *cell_keys, *summaries]))
    try:
        histories = await _histories(store, keys, states, config)
    except StoreError:
        histories = {}
        note += "; no audit log in this database, so every key is taken to have been in its mode now all along"
    readiness = {key: judge(config, _over_cells(key, summaries)) for key in keys}
    return build_progress(
        {k: s.timeline for k, s in summaries.items()}, readiness, states, histories, config,
        bucket_s=bucket_s, now=now, since=since, points=points, modes_from=modes_from, modes_note=note, live=live,
    )


def _over_cells(key: str, summaries: Mapping[str, KeySummary]) -> KeySummary:
    """A route's results over all its cells (a cell's key: its own), for its readiness."""
    if split_scoped(key)[1] is not None:
        return summaries.get(key) or empty_summary(key)
    members = [s for k, s in summaries.items() if split_scoped(k)[0] == key]
    if not members:
        return empty_summary(key)
    return replace(
        empty_summary(key),
        counts=sum((s.counts for s in members), empty_summary(key).counts),
        legacy_latency=merge_all(s.legacy_latency for s in members),
        candidate_latency=merge_all(s.candidate_latency for s in members),
    )
