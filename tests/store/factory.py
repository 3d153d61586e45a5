"""Shadow results and migrated stores for the store and report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strangler_proxy import migrate
from strangler_proxy.diff.result import Difference, DiffKind, ShadowResult, Verdict

BASE_T = 1_700_000_000.0  # a fixed bucket-aligned instant (multiple of 60)


def result(
    key: str = "ratings",
    verdict: Verdict = Verdict.MATCH,
    at: float = BASE_T,
    *,
    legacy_s: float | None = 0.010,
    candidate_s: float | None = 0.012,
    diffs: tuple[tuple[str, Any, Any], ...] = (),
    noise: tuple[str, ...] = (),
    legacy_body: bytes | None = None,
    candidate_body: bytes | None = None,
    extra: dict[str, Any] | None = None,
    kind: DiffKind = DiffKind.VALUE,
) -> ShadowResult:
    return ShadowResult(
        key=key,
        mode="shadow",
        verdict=verdict,
        at=at,
        legacy_status=200,
        candidate_status=500 if verdict is Verdict.CANDIDATE_ERROR else 200,
        legacy_latency_s=legacy_s,
        candidate_latency_s=candidate_s,
        differences=tuple(Difference(kind, p, a, b) for p, a, b in diffs),
        noise=tuple(Difference(DiffKind.VALUE, p, 1, 2) for p in noise),
        method="GET",
        target=f"/api/{key}",
        legacy_body=legacy_body,
        candidate_body=candidate_body,
        extra=extra or {},
    )


async def migrated_sqlite(tmp_path: Path, name: str = "control") -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / (name + '.sqlite3')}"
    await migrate.upgrade(migrate.RESULTS, url)
    return url


def served(
    key: str = "ratings",
    at: float = BASE_T,
    *,
    status: int | None = 200,
    candidate_s: float = 0.012,
    error: str | None = None,
    mode: str = "extracted",
) -> ShadowResult:
    """What the data plane records for a request the target served with
    nothing compared: SERVED, or CANDIDATE_ERROR when it failed."""
    failed = error is not None or status is None or status >= 500
    return ShadowResult(
        key=key,
        mode=mode,
        verdict=Verdict.CANDIDATE_ERROR if failed else Verdict.SERVED,
        at=at,
        candidate_status=status,
        candidate_latency_s=candidate_s,
        reason=(error or f"status {status}") if failed else None,
        method="GET",
        target=f"/api/{key}",
    )
