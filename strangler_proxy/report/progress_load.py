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

    progress = await load_progress(engine, config, since=time.time() - 3600)
"""

from __future__ import annotations

import time
from collections.abc import Mapping

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
)
from strangler_proxy.store.queries import ResultsReader, empty_summary

# One time point per stored bucket: the modes are matched bucket by bucket.
PER_BUCKET = 1 << 40


def key_of(name: str) -> str:
    """A flip's name (``ratings``, ``Title.rating``) as a results key (``graphql:Title.rating``)."""
    return GRAPHQL_KEY_PREFIX + name if "." in name else name


def name_of(key: str) -> str:
    return key.removeprefix(GRAPHQL_KEY_PREFIX)


def states_from_admin(states: Mapping[str, RunningState]) -> dict[str, KeyState]:
    return {key_of(n): KeyState(s.mode, s.percent, s.source) for n, s in states.items()}


def _states_from_file(config: StranglerConfig | None, stored: Mapping[str, StoredOverride]) -> dict[str, KeyState]:
    """The modes a proxy starting now would use: a stored flip wins unless the file changed since."""
    out: dict[str, KeyState] = {}
    for key in configured_keys(config):
        assert config is not None
        name = name_of(key)
        o = stored.get(name)
        if o is not None and stale_override(config, name, o) is not None:
            o = None
        state = effective(config, name, o)
        if state is not None:
            out[key] = KeyState(Mode(state.mode), float(state.percent), "flip" if o is not None else "file")
    return out


async def _histories(store: StateStore, keys: list[str], states: Mapping[str, KeyState],
                     config: StranglerConfig | None) -> dict[str, ModeHistory]:
    out: dict[str, ModeHistory] = {}
    for key in keys:
        entries = await store.audit(name=name_of(key), limit=MAX_AUDIT_LIMIT)
        switches = [Switch(e.at.timestamp(), Mode(e.from_mode), Mode(e.to_mode)) for e in entries]
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
    keys = list(dict.fromkeys([*configured_keys(config), *summaries]))
    try:
        histories = await _histories(store, keys, states, config)
    except StoreError:
        histories = {}
        note += "; no audit log in this database, so every key is taken to have been in its mode now all along"
    readiness = {key: judge(config, summaries.get(key) or empty_summary(key)) for key in keys}
    return build_progress(
        {k: s.timeline for k, s in summaries.items()}, readiness, states, histories, config,
        bucket_s=bucket_s, now=now, since=since, points=points, modes_from=modes_from, modes_note=note, live=live,
    )
