"""Is a route (or GraphQL field) ready to flip?

A key is ready when all four hold, with its :class:`ReadinessConfig` (the
route's or field's own, else the global one):

1. at least ``min_samples`` compared samples (match + mismatch + candidate
   error; legacy errors, skipped requests and requests the candidate served
   without a comparison (SERVED) compared nothing, and a TRANSIENT result --
   a mismatch gone when both sides were asked again -- is neither a sample
   nor a mismatch);
2. the upper bound of the 95 % Wilson score interval on the mismatch rate is
   under ``max_mismatch_rate`` -- so a clean run of 100 samples does not
   prove a 1 % threshold (its bound is 3.7 %), a clean run of 400 does;
3. the observed candidate error rate is under ``max_error_rate``. Candidate
   errors count wherever they happened -- mirrored or served to a client --
   so the rate is over every request the candidate handled
   (:attr:`VerdictCounts.handled`: compared + served), not over the compared
   samples alone, which would overstate it by the served share;
4. the candidate's p99 latency is at most ``latency_factor`` x legacy's, or
   at most ``latency_slack_ms`` over it (:func:`too_slow`: on a loopback-fast
   legacy a ratio alone would call a millisecond of noise a regression).

    >>> round(wilson_upper(0, 100), 4)
    0.037
    >>> r = evaluate(VerdictCounts(match=400), legacy_p99_s=0.1, candidate_p99_s=0.12,
    ...              rules=ReadinessConfig())
    >>> r.ready, r.label
    (True, 'ready')
    >>> evaluate(VerdictCounts(match=7), None, None, ReadinessConfig()).label
    'insufficient samples (7/100)'
    >>> served = evaluate(VerdictCounts(match=7, candidate_error=1, served=92), None, None, ReadinessConfig())
    >>> served.samples, served.error_rate
    (8, 0.01)
    >>> evaluate(VerdictCounts(match=400, transient=300), 0.1, 0.12, ReadinessConfig()).label
    'ready'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from strangler_proxy.config import ReadinessConfig, StranglerConfig
from strangler_proxy.diff.keys import configured_for_key
from strangler_proxy.store.counts import VerdictCounts

__all__ = ["Readiness", "VerdictCounts", "evaluate", "rules_for_key", "too_slow", "wilson_upper"]

# The two-sided 95 % normal quantile, z_{0.975}.
Z_95 = 1.959963984540054

Status = Literal["ready", "not-ready", "insufficient-samples"]


def wilson_upper(k: int, n: int, z: float = Z_95) -> float:
    """Upper bound of the Wilson score interval for ``k`` successes in ``n``
    trials (1.0 when there are no trials: nothing is known)."""
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def too_slow(legacy_p99_s: float, candidate_p99_s: float, factor: float, slack_s: float) -> bool:
    """Whether the candidate's p99 is a regression: over ``factor`` x legacy's *and* more
    than ``slack_s`` over it.

    >>> too_slow(0.002, 0.0034, 1.5, 0.010), too_slow(0.100, 0.160, 1.5, 0.010), too_slow(0.1, 0.14, 1.5, 0.01)
    (False, True, False)
    """
    return candidate_p99_s > max(factor * legacy_p99_s, legacy_p99_s + slack_s)


@dataclass(frozen=True, slots=True)
class Readiness:
    """The verdict on one key, with the numbers behind it."""

    status: Status
    samples: int
    min_samples: int
    mismatch_rate: float | None
    mismatch_upper: float | None
    max_mismatch_rate: float
    error_rate: float | None
    max_error_rate: float
    latency_ratio: float | None  # candidate p99 / legacy p99
    latency_factor: float
    reasons: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def label(self) -> str:
        if self.status == "ready":
            return "ready"
        if self.status == "insufficient-samples":
            return f"insufficient samples ({self.samples}/{self.min_samples})"
        return "not ready: " + "; ".join(self.reasons)


def evaluate(
    counts: VerdictCounts,
    legacy_p99_s: float | None,
    candidate_p99_s: float | None,
    rules: ReadinessConfig,
) -> Readiness:
    """Apply the readiness rules to one key's counts and latencies."""
    n = counts.compared
    handled = counts.handled
    mismatch_rate = counts.mismatch / n if n else None
    upper = wilson_upper(counts.mismatch, n) if n else None
    error_rate = counts.candidate_error / handled if handled else None
    ratio = None
    if legacy_p99_s and candidate_p99_s is not None:
        ratio = candidate_p99_s / legacy_p99_s
    reasons: list[str] = []
    if upper is not None and upper >= rules.max_mismatch_rate:
        reasons.append(f"mismatch upper bound {upper:.2%} >= {rules.max_mismatch_rate:.2%}")
    if error_rate is not None and error_rate >= rules.max_error_rate and counts.candidate_error:
        reasons.append(f"candidate errors {error_rate:.2%} >= {rules.max_error_rate:.2%}")
    if ratio is None:
        if n:
            reasons.append("no latency data for both sides")
    elif too_slow(legacy_p99_s or 0.0, candidate_p99_s or 0.0, rules.latency_factor, rules.latency_slack_ms / 1000):
        reasons.append(f"candidate p99 is {ratio:.2f}x legacy's (max {rules.latency_factor:g}x)")
    if n < rules.min_samples:
        status: Status = "insufficient-samples"
    else:
        status = "not-ready" if reasons else "ready"
    return Readiness(
        status=status,
        samples=n,
        min_samples=rules.min_samples,
        mismatch_rate=mismatch_rate,
        mismatch_upper=upper,
        max_mismatch_rate=rules.max_mismatch_rate,
        error_rate=error_rate,
        max_error_rate=rules.max_error_rate,
        latency_ratio=ratio,
        latency_factor=rules.latency_factor,
        reasons=tuple(reasons),
    )


def rules_for_key(config: StranglerConfig | None, key: str) -> ReadinessConfig:
    """The readiness rules of a key: its route's or field's, else the global ones."""
    if config is None:
        return ReadinessConfig()
    target = configured_for_key(config, key)
    return config.readiness_for(target) if target is not None else config.readiness
