"""One report, built once from the store, rendered three ways (text, JSON, HTML).

    report = await build_report(engine, config)           # every key with results
    report = await build_report(engine, config, ["ratings", "graphql:Title.rating"])
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
from strangler_proxy.errors import StoreError
from strangler_proxy.report.progress import Progress
from strangler_proxy.store.queries import (
    DEFAULT_SAMPLES_PER_KEY,
    KeySummary,
    ResultsReader,
    StoredSample,
    empty_summary,
)


@dataclass(frozen=True, slots=True)
class KeyReport:
    """One route or field: its aggregates, readiness and a few examples."""

    key: str
    kind: KeyKind
    summary: KeySummary
    readiness: Readiness
    samples: tuple[StoredSample, ...]

    def p(self, side: str, q: float) -> float | None:
        hist = self.summary.legacy_latency if side == "legacy" else self.summary.candidate_latency
        return hist.quantile(q)


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: float
    database: str  # URL without password
    keys: tuple[KeyReport, ...]
    progress: Progress | None = None  # the migration's progress (progress.py), when it was read

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
) -> Report:
    """Read the store and judge readiness. Without ``keys``: every key with
    results plus every configured route or field that is not in legacy mode
    (so one that gets no traffic shows up as insufficient samples). ``since``
    (epoch seconds) leaves out older time buckets -- to see a fix take effect."""
    reader = ResultsReader(engine, config.store.bucket_s if config is not None else DEFAULT_BUCKET_S)
    if not await reader.has_tables():
        raise StoreError(f"the results store at {database or 'the database'} has no tables; run `strangler db upgrade`")
    summaries = {s.key: s for s in await reader.summaries(keys, since=since)}
    if keys is None:
        names = sorted(set(summaries) | {k for k in configured_keys(config) if _shadowed(config, k)})
    else:
        names = list(dict.fromkeys(keys))
    # Routes first, then GraphQL fields; alphabetical within each.
    names.sort(key=lambda k: (key_kind(k) != "route", k))
    redaction = redactions_for(config)
    out = []
    for name in names:
        summary = summaries.get(name) or empty_summary(name)
        readiness = judge(config, summary)
        samples = await reader.samples(name, samples_per_key, since) if summary.counts.total else []
        # Samples stored before a query parameter was named secret are redacted now.
        samples = [replace(s, target=redaction(name).target(s.target)) for s in samples]
        out.append(KeyReport(name, key_kind(name), summary, readiness, tuple(samples)))
    return Report(generated_at=time.time(), database=database, keys=tuple(out))
