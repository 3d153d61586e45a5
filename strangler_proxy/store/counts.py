"""Verdict counts of one key (over a bucket, a time span or all time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VerdictCounts:
    """How many results of each verdict one key has."""

    match: int = 0
    mismatch: int = 0
    candidate_error: int = 0
    legacy_error: int = 0
    skipped: int = 0

    @property
    def compared(self) -> int:
        """Samples where the candidate was actually judged."""
        return self.match + self.mismatch + self.candidate_error

    @property
    def total(self) -> int:
        return self.compared + self.legacy_error + self.skipped

    def __add__(self, other: VerdictCounts) -> VerdictCounts:
        return VerdictCounts(
            self.match + other.match,
            self.mismatch + other.mismatch,
            self.candidate_error + other.candidate_error,
            self.legacy_error + other.legacy_error,
            self.skipped + other.skipped,
        )
