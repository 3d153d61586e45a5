"""The machine-readable report (``strangler report --json``).

The shape is versioned by ``schema`` and documented in docs/reports.md;
fields are only ever added within one schema version. Rates are fractions
(0..1), latencies milliseconds, times ISO 8601 UTC; ``null`` means "no data".
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from strangler_proxy.report.build import KeyReport, Report
from strangler_proxy.report.progress_render import progress_to_json
from strangler_proxy.store.queries import StoredSample

SCHEMA = "strangler.report/v1"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def body_text(body: bytes | None) -> str | None:
    """A stored body as text; binary bodies as ``base64:...``."""
    if body is None:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")


def _sample(s: StoredSample) -> dict[str, Any]:
    return {
        "key": s.key,  # the stored key: ratings@c1 names the cell
        "at": _iso(s.at),
        "verdict": s.verdict,
        "method": s.method,
        "target": s.target,
        "path": s.path,
        "status": {"legacy": s.legacy_status, "candidate": s.candidate_status},
        "latency_ms": {"legacy": _ms(s.legacy_latency_s), "candidate": _ms(s.candidate_latency_s)},
        "reason": s.reason,
        "differences": list(s.differences),
        "legacy_body": body_text(s.legacy_body),
        "candidate_body": body_text(s.candidate_body),
    }


def key_to_json(k: KeyReport) -> dict[str, Any]:
    s, r = k.summary, k.readiness
    c = s.counts
    n = c.compared
    return {
        "key": k.key,
        "kind": k.kind,
        "cell": k.cell,
        # Ready, and in every cell of "cells" too: what --gate asks.
        "ready": k.ready,
        "samples": n,
        "counts": {
            "match": c.match,
            "mismatch": c.mismatch,
            "candidate_error": c.candidate_error,
            "legacy_error": c.legacy_error,
            "skipped": c.skipped,
            "served": c.served,  # served by the target, nothing compared; not samples
            "transient": c.transient,  # mismatches gone when asked again (lag); neither samples nor mismatches
            "total": c.total,
        },
        "match_rate": _rate(c.match, n),
        "mismatch_rate": _rate(c.mismatch, n),
        # Over every request the candidate handled (compared + served), as readiness judges it.
        "candidate_error_rate": _rate(c.candidate_error, c.handled),
        "latency_ms": {
            "legacy": {"p50": _ms(k.p("legacy", 0.5)), "p99": _ms(k.p("legacy", 0.99))},
            "candidate": {"p50": _ms(k.p("candidate", 0.5)), "p99": _ms(k.p("candidate", 0.99))},
        },
        "first_bucket": _iso(s.first_bucket) if c.total else None,
        "last_bucket": _iso(s.last_bucket) if c.total else None,
        "differing_paths": s.distinct_paths,
        "top_paths": [{"path": p.path, "kind": p.kind, "count": p.count} for p in s.top_paths],
        "noise_paths": len(s.noise),
        "noise": [{"path": e.path, "count": e.count, "source": e.source} for e in s.noise],
        "readiness": {
            "ready": r.ready,
            "status": r.status,
            "label": r.label,
            "reasons": list(r.reasons),
            "samples": r.samples,
            "min_samples": r.min_samples,
            "mismatch_upper_bound": None if r.mismatch_upper is None else round(r.mismatch_upper, 6),
            "max_mismatch_rate": r.max_mismatch_rate,
            "candidate_error_rate": None if r.error_rate is None else round(r.error_rate, 6),
            "max_error_rate": r.max_error_rate,
            "latency_ratio": None if r.latency_ratio is None else round(r.latency_ratio, 4),
            "latency_factor": r.latency_factor,
        },
        "timeline": [
            {
                "start": _iso(p.start),
                "end": _iso(p.end),
                "samples": p.counts.compared,
                "served": p.counts.served,
                "transient": p.counts.transient,
                "match_rate": _rate(p.counts.match, p.counts.compared),
                "legacy_p99_ms": _ms(p.legacy_latency.quantile(0.99)),
                "candidate_p99_ms": _ms(p.candidate_latency.quantile(0.99)),
            }
            for p in s.timeline
        ],
        "examples": [_sample(x) for x in k.samples],
        # The breakdown per cell (same shape; their examples are the route's, named by "key").
        "cells": [key_to_json(c) for c in k.cells],
    }


def report_to_json(report: Report) -> dict[str, Any]:
    keys = [key_to_json(k) for k in report.keys]
    return {
        "schema": SCHEMA,
        "generated_at": _iso(report.generated_at),
        "database": report.database,
        "cell": report.cell,
        "empty": report.empty,
        "message": "no shadow results stored yet" if report.empty else None,
        "ready": bool(keys) and all(k["ready"] for k in keys),
        "keys": keys,
        # Added in v1: the migration's progress (its own schema, strangler.progress/v1).
        "progress": progress_to_json(report.progress) if report.progress is not None else None,
    }


def render_json(report: Report) -> str:
    return orjson.dumps(report_to_json(report), option=orjson.OPT_INDENT_2).decode()
