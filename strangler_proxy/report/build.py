"""One report, built once from the store, rendered three ways (text, JSON, HTML).

    report = await build_report(engine, config)           # every key with results
    report = await build_report(engine, config, ["ratings", "graphql:Title.rating"])
    report = await build_report(engine, config, cell="c1")  # one cell: ratings@c1, ...

With cells, results are stored per (route, cell) under ``ratings@c1``. The
report shows each route once, its results over every cell together, with a
breakdown per cell (:attr:`KeyReport.cells`, each with its own readiness); a
route is ready for a gate only when it is ready in every cell of its breakdown
too (:attr:`KeyReport.ready`). ``cell=`` reports one cell's keys alone. A key
named with its cell (``ratings@c1``) is reported alone as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from strangler_proxy.config import DEFAULT_BUCKET_S, Mode, StranglerConfig
from strangler_proxy.control.readiness import Readiness, evaluate, rules_for_key
from strangler_proxy.diff.keys import KeyKind, configured_for_key, configured_keys, key_kind
from strangler_proxy.diff.redaction import redactions_for
from strangler_proxy.errors import ConfigError, StoreError
from strangler_proxy.report.progress import Progress
from strangler_proxy.routing.cells import scoped, split_scoped
from strangler_proxy.store.queries import (
    DEFAULT_SAMPLES_PER_KEY,
    KeySummary,
    ResultsReader,
    StoredSample,
    empty_summary,
)


@dataclass(frozen=True, slots=True)
class KeyReport:
    """One route or field (or one cell's of it): its aggregates, readiness and a few examples."""

    key: str
    kind: KeyKind
    summary: KeySummary
    readiness: Readiness
    samples: tuple[StoredSample, ...]
    cell: str | None = None  # the cell this key is of (``ratings@c1``), None for a route over all cells
    cells: tuple[KeyReport, ...] = ()  # the breakdown per cell (empty without cells)

    def p(self, side: str, q: float) -> float | None:
        hist = self.summary.legacy_latency if side == "legacy" else self.summary.candidate_latency
        return hist.quantile(q)

    @property
    def ready(self) -> bool:
        """Ready over all its results and in every cell of its breakdown (what a gate asks)."""
        return self.readiness.ready and all(c.readiness.ready for c in self.cells)

    @property
    def gate_label(self) -> str:
        """The readiness label, and the cells that hold a gate back."""
        held = [f"in {c.cell}: {c.readiness.label}" for c in self.cells if not c.readiness.ready]
        return "; ".join([self.readiness.label, *held])


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: float
    database: str  # URL without password
    keys: tuple[KeyReport, ...]
    progress: Progress | None = None  # the migration's progress (progress.py), when it was read
    cell: str | None = None  # the report of one cell's keys (``strangler report --cell``)

    @property
    def empty(self) -> bool:
        """No results stored for any key in the report."""
        return all(k.summary.counts.total == 0 for k in self.keys)

    def key(self, name: str) -> KeyReport | None:
        return next((k for k in self.keys if k.key == name), None)


def safe_url(url: str) -> str:
    """A database URL fit for a report: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- any unparsable URL is simply not shown
        return "(unparsable URL)"


def _shadowed(config: StranglerConfig | None, key: str) -> bool:
    target = configured_for_key(config, key)
    return target is not None and target.mode is not Mode.LEGACY


def judge(config: StranglerConfig | None, summary: KeySummary) -> Readiness:
    """The readiness of one key's aggregates, by its route's or field's rules."""
    return evaluate(
        summary.counts,
        summary.legacy_latency.quantile(0.99),
        summary.candidate_latency.quantile(0.99),
        rules_for_key(config, summary.key),
    )


async def build_report(
    engine: AsyncEngine,
    config: StranglerConfig | None,
    keys: list[str] | None = None,
    *,
    database: str = "",
    samples_per_key: int = DEFAULT_SAMPLES_PER_KEY,
    since: float | None = None,
    cell: str | None = None,
) -> Report:
    """Read the store and judge readiness. Without ``keys``: every key with
    results plus every configured route or field that is not in legacy mode
    (so one that gets no traffic shows up as insufficient samples). ``since``
    (epoch seconds) leaves out older time buckets -- to see a fix take effect.
    ``cell``: only that cell's keys (``keys`` then name routes, without the cell)."""
    reader = ResultsReader(engine, config.store.bucket_s if config is not None else DEFAULT_BUCKET_S)
    if not await reader.has_tables():
        raise StoreError(f"the results store at {database or 'the database'} has no tables; run `strangler db upgrade`")
    stored = await reader.keys(since)
    if cell is not None:
        out = await _one_cell(reader, config, stored, keys, cell, samples_per_key, since)
    else:
        out = await _by_route(reader, config, stored, keys, samples_per_key, since)
    return Report(generated_at=time.time(), database=database, keys=tuple(out), cell=cell)


def _ordered(names: list[str]) -> list[str]:
    """Routes first, then GraphQL fields; alphabetical within each."""
    return sorted(dict.fromkeys(names), key=lambda k: (key_kind(k) != "route", k))


def _configured_cells(config: StranglerConfig | None) -> tuple[str, ...]:
    return config.cells.names if config is not None and config.cells is not None else ()


async def _key_report(reader: ResultsReader, config: StranglerConfig | None, name: str, summary: KeySummary,
                      samples_per_key: int, since: float | None, members: list[str] | None = None,
                      cells: tuple[KeyReport, ...] = ()) -> KeyReport:
    redaction = redactions_for(config)
    samples = await reader.samples(members or name, samples_per_key, since) if summary.counts.total else []
    # Samples stored before a query parameter was named secret are redacted now.
    samples = [replace(s, target=redaction(name).target(s.target)) for s in samples]
    return KeyReport(name, key_kind(name), summary, judge(config, summary), tuple(samples),
                     cell=split_scoped(name)[1], cells=cells)


async def _by_route(reader: ResultsReader, config: StranglerConfig | None, stored: list[str], keys: list[str] | None,
                    samples_per_key: int, since: float | None) -> list[KeyReport]:
    """Each route once, over all its cells, with the breakdown per cell."""
    def base(key: str) -> str:
        return split_scoped(key)[0]

    if keys is None:
        names = _ordered([*(base(k) for k in stored), *(k for k in configured_keys(config) if _shadowed(config, k))])
    else:
        names = list(dict.fromkeys(keys))
    alone = [n for n in names if split_scoped(n)[1] is not None]  # a key named with its cell
    members = {n: [k for k in stored if base(k) == n] for n in names if n not in alone}
    grouped = {s.key: s for s in await reader.summaries([k for m in members.values() for k in m], group=base, since=since)}
    scoped_keys = [k for m in members.values() for k in m if k != base(k)] + alone
    per_cell = {s.key: s for s in await reader.summaries(scoped_keys, since=since)} if scoped_keys else {}
    known = _configured_cells(config)
    out = []
    for name in names:
        if name in alone:
            summary = per_cell.get(name) or empty_summary(name)
            out.append(await _key_report(reader, config, name, summary, samples_per_key, since))
            continue
        seen = [c for k in members[name] if (c := split_scoped(k)[1]) is not None]
        configured = known if configured_for_key(config, name) is not None else ()
        cells = [*configured, *sorted(set(seen) - set(configured))]
        breakdown = tuple([
            KeyReport(scoped(name, c), key_kind(name), summary, judge(config, summary), (), cell=c)
            for c in cells
            for summary in (per_cell.get(scoped(name, c)) or empty_summary(scoped(name, c)),)
        ])
        summary = grouped.get(name) or empty_summary(name)
        out.append(await _key_report(reader, config, name, summary, samples_per_key, since, members[name], breakdown))
    return out


async def _one_cell(reader: ResultsReader, config: StranglerConfig | None, stored: list[str], keys: list[str] | None,
                    cell: str, samples_per_key: int, since: float | None) -> list[KeyReport]:
    """One cell's keys, each as its own key (``ratings@c1``)."""
    known = _configured_cells(config)
    in_store = [k for k in stored if split_scoped(k)[1] == cell]
    if cell not in known and not in_store:
        cells = f"cells: {', '.join(known)}" if known else "the config has no cells: section"
        raise ConfigError(f"no such cell {cell!r} ({cells}) and no results stored for it", field="--cell")
    if keys is not None:
        names = [scoped(split_scoped(k)[0], cell) for k in dict.fromkeys(keys)]
    else:
        configured = [scoped(k, cell) for k in configured_keys(config) if _shadowed(config, k)] if cell in known else []
        names = _ordered([*in_store, *configured])
    summaries = {s.key: s for s in await reader.summaries(names, since=since)}
    return [await _key_report(reader, config, name, summaries.get(name) or empty_summary(name), samples_per_key, since)
            for name in names]
