"""What one stored example looks like: the ``samples`` row of a result.

Secrets are redacted again here (defence in depth, see :mod:`.redaction`)
before anything is cut to ``store.body_limit``: a truncated JSON document no
longer parses, so redaction must see the whole body first.
"""

from __future__ import annotations

from typing import Any

import orjson

from strangler_proxy.diff.redaction import REDACTED, Redaction
from strangler_proxy.diff.result import Difference, DiffKind, ShadowResult

MAX_SAMPLE_DIFFERENCES = 50  # differences kept per stored sample


def sample_row(r: ShadowResult, path: str, red: Redaction, limit: int) -> dict[str, Any]:
    """The ``samples`` row of one result: secrets redacted again, bodies and
    extras cut to ``limit`` bytes."""
    extra = red.headers_in(dict(r.extra))
    legacy_body, legacy_cut = _stored_body(r.legacy_body, red, limit)
    candidate_body, candidate_cut = _stored_body(r.candidate_body, red, limit)
    if legacy_cut or candidate_cut:
        extra = {**extra, "bodies_truncated_at": limit}
    extra_json = orjson.dumps(extra, default=str, option=orjson.OPT_NON_STR_KEYS)
    if len(extra_json) > limit:
        extra_json = orjson.dumps({"truncated": True, "bytes": len(extra_json)})
    return {
        "key": r.key,
        "path": path,
        "at": r.at,
        "verdict": r.verdict.value,
        "method": r.method[:16],
        "target": red.target(r.target)[:limit] if limit else "",  # redacted before the cut
        "legacy_status": r.legacy_status,
        "candidate_status": r.candidate_status,
        "legacy_latency_s": r.legacy_latency_s,
        "candidate_latency_s": r.candidate_latency_s,
        "reason": r.reason,
        "differences": _differences_json(r.differences, red, limit),
        "legacy_body": legacy_body,
        "candidate_body": candidate_body,
        "extra": extra_json.decode(),
    }


def _stored_body(body: bytes | None, red: Redaction, limit: int) -> tuple[bytes | None, bool]:
    if body is None:
        return None, False
    # Redact the whole body first (a truncated JSON document no longer parses).
    body = red.json_bytes(body)
    if len(body) > limit:
        return body[:limit], True
    return body, False


def _difference_value(d: Difference, value: Any, red: Redaction) -> Any:
    if d.kind is DiffKind.HEADER:
        name = d.path.rsplit(".", 1)[-1].strip("[]'\"")
        if red.is_secret_header(name) or red.is_secret_header(d.path):
            return REDACTED
        return value
    if red.matches_path(d.path):
        return REDACTED
    return red.json_value(value, d.path) if isinstance(value, (dict, list)) else value


def _differences_json(diffs: tuple[Difference, ...], red: Redaction, limit: int) -> str:
    out = []
    for d in diffs[:MAX_SAMPLE_DIFFERENCES]:
        item = {
            "kind": d.kind.value,
            "path": d.path,
            "legacy": _difference_value(d, d.legacy, red),
            "candidate": _difference_value(d, d.candidate, red),
        }
        encoded = orjson.dumps(item, default=str)
        if len(encoded) > limit:
            item = {**item, "legacy": "[TRUNCATED]", "candidate": "[TRUNCATED]"}
        out.append(item)
    return orjson.dumps(out, default=str).decode()
