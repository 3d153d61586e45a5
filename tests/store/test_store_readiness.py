"""Readiness arithmetic on known counts; Wilson bounds checked by hand.

Hand computation (z = 1.959964, z^2 = 3.841459):
  k=0, n=100:  (0 + .019207 + 1.959964*sqrt(3.841459/40000)) / 1.0384146
             = (.019207 + .019207) / 1.0384146              = 0.036994
  k=1, n=100:  p=.01, centre .029207, sqrt(.000099 + .00009604) = .0139657
             = (.029207 + .027372) / 1.0384146              = 0.054486
  k=5, n=1000: p=.005, centre .0069207, sqrt(4.975e-6 + 9.6036e-7) = .0024363
             = (.0069207 + .0047750) / 1.0038415            = 0.011651
"""

from __future__ import annotations

import pytest

from strangler_proxy.config import ReadinessConfig, load_config_text
from strangler_proxy.control.readiness import VerdictCounts, evaluate, rules_for_key, wilson_upper


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(0, 100, 0.036994), (1, 100, 0.054486), (5, 1000, 0.011651), (50, 50, 1.0)],
)
def test_wilson_upper_matches_hand_computation(k: int, n: int, expected: float) -> None:
    assert wilson_upper(k, n) == pytest.approx(expected, abs=2e-6)


def test_wilson_upper_without_trials_knows_nothing() -> None:
    assert wilson_upper(0, 0) == 1.0
    with pytest.raises(ValueError):
        wilson_upper(3, 2)


def test_clean_run_needs_enough_samples_for_the_bound() -> None:
    rules = ReadinessConfig(min_samples=100, max_mismatch_rate=0.01)
    # 300 clean samples: bound 1.26 % -- not yet under 1 %.
    r300 = evaluate(VerdictCounts(match=300), 0.1, 0.1, rules)
    assert r300.status == "not-ready"
    assert r300.mismatch_upper == pytest.approx(0.012644, abs=1e-5)
    # 400 clean: 3.841459 / 403.841459 = 0.9512 % -- ready.
    r400 = evaluate(VerdictCounts(match=400), 0.1, 0.1, rules)
    assert r400.ready and r400.mismatch_upper == pytest.approx(0.009512, abs=1e-5)


def test_insufficient_samples_label() -> None:
    r = evaluate(VerdictCounts(match=40, legacy_error=500, skipped=9), 0.1, 0.1, ReadinessConfig(min_samples=50))
    assert r.status == "insufficient-samples"
    assert r.label == "insufficient samples (40/50)"  # legacy errors and skips compared nothing


def test_candidate_errors_and_latency_are_judged() -> None:
    rules = ReadinessConfig(min_samples=10, max_mismatch_rate=0.5, max_error_rate=0.05, latency_factor=1.5)
    errs = evaluate(VerdictCounts(match=90, candidate_error=10), 0.1, 0.1, rules)
    assert not errs.ready and errs.error_rate == pytest.approx(0.1)
    assert any("candidate errors" in x for x in errs.reasons)
    slow = evaluate(VerdictCounts(match=100), 0.100, 0.151, rules)
    assert not slow.ready and slow.latency_ratio == pytest.approx(1.51)
    assert "candidate p99 is 1.51x" in slow.label
    fast_enough = evaluate(VerdictCounts(match=100), 0.100, 0.149, rules)
    assert fast_enough.ready


def test_rules_come_from_the_route_or_field_else_global() -> None:
    cfg = load_config_text(
        """
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  ratings: {url: "http://127.0.0.1:8101"}
readiness: {min_samples: 500}
routes:
  - {name: ratings, path: "/api/titles/{id}/ratings", target: ratings, mode: shadow,
     readiness: {min_samples: 7}}
graphql:
  backends: {ratings: {upstream: ratings}}
  fields:
    Title.rating: {target: ratings, readiness: {min_samples: 9}}
"""
    )
    assert rules_for_key(cfg, "ratings").min_samples == 7
    assert rules_for_key(cfg, "graphql:Title.rating").min_samples == 9
    assert rules_for_key(cfg, "gone").min_samples == 500
    assert rules_for_key(None, "x").min_samples == ReadinessConfig().min_samples


def test_served_traffic_is_no_sample_but_its_candidate_errors_count() -> None:
    rules = ReadinessConfig(min_samples=100, max_mismatch_rate=0.01, max_error_rate=0.01)
    clean = evaluate(VerdictCounts(match=400), 0.1, 0.1, rules)
    # 10 000 requests served by the target add no samples and change no bound...
    busy = evaluate(VerdictCounts(match=400, served=10_000), 0.1, 0.1, rules)
    assert busy.ready and busy.samples == 400 and busy.mismatch_upper == clean.mismatch_upper
    assert busy.error_rate == 0.0
    # ...and served traffic alone never makes a key ready: nothing was compared.
    only_served = evaluate(VerdictCounts(served=10_000), None, 0.1, rules)
    assert only_served.label == "insufficient samples (0/100)" and only_served.mismatch_upper is None
    # Candidate errors are real wherever they happen; the rate is over every
    # request the candidate handled: 50 / (400 + 50 + 10 000) = 0.478 %, under
    # 1 % -- over the compared samples alone it would read 50 / 450 = 11 %.
    # The mismatch bound is over 450 judged samples: 3.84 / 453.84 = 0.846 %.
    some = evaluate(VerdictCounts(match=400, candidate_error=50, served=10_000), 0.1, 0.1, rules)
    assert some.samples == 450 and some.error_rate == pytest.approx(50 / 10_450)
    assert some.mismatch_upper == pytest.approx(0.008464, abs=1e-5) and some.ready
    # 150 errors in 10 400 handled = 1.44 %: not ready, whoever served them.
    failing = evaluate(VerdictCounts(match=400, candidate_error=150, served=9_850), 0.1, 0.1, rules)
    assert failing.error_rate == pytest.approx(150 / 10_400)
    assert failing.label == "not ready: candidate errors 1.44% >= 1.00%"
    # Without served traffic the arithmetic is what it always was.
    assert evaluate(VerdictCounts(match=90, candidate_error=10), 0.1, 0.1, rules).error_rate == pytest.approx(0.1)
