"""Verdict counts of one key (over a bucket, a time span or all time).

Two different denominators, on purpose:

- :attr:`VerdictCounts.compared` -- the readiness *samples*: results where the
  candidate was judged against legacy (or failed outright);
- :attr:`VerdictCounts.handled` -- every request the candidate handled,
  mirrored or served: the denominator of its *error rate*, because candidate
  errors count wherever they happen (a 5xx on target-served traffic is as
  real as one on mirrored traffic).

``transient`` -- mismatches that disappeared when both sides were asked
again (replication lag) -- is in neither: it is counted and reported, never
judged.

    >>> c = VerdictCounts(match=98, candidate_error=2, served=100, transient=5)
    >>> c.compared, c.handled, c.total
    (100, 200, 205)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VerdictCounts:
    """How many results of each verdict one key has.

    ``served`` counts requests the candidate served with nothing compared
    (canary's target share, extracted without reverse shadow) and that did
    not fail; the failed ones are in ``candidate_error``.
    """

    match: int = 0
    mismatch: int = 0
    candidate_error: int = 0
    legacy_error: int = 0
    skipped: int = 0
    served: int = 0
    transient: int = 0  # a mismatch that was gone when asked again: neither a sample nor a mismatch

    @property
    def compared(self) -> int:
        """Samples where the candidate was actually judged (never SERVED)."""
        return self.match + self.mismatch + self.candidate_error

    @property
    def handled(self) -> int:
        """Requests the candidate answered or failed: compared plus served."""
        return self.compared + self.served

    @property
    def total(self) -> int:
        return self.compared + self.legacy_error + self.skipped + self.served + self.transient

    def __add__(self, other: VerdictCounts) -> VerdictCounts:
        return VerdictCounts(
            self.match + other.match,
            self.mismatch + other.mismatch,
            self.candidate_error + other.candidate_error,
            self.legacy_error + other.legacy_error,
            self.skipped + other.skipped,
            self.served + other.served,
            self.transient + other.transient,
        )
