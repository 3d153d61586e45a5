"""Verdict logic of the comparator, lifting and status/header comparison."""

from __future__ import annotations

import dataclasses

import pytest

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff import comparator
from strangler_proxy.diff.comparator import DiffComparator
from strangler_proxy.diff.result import Difference, DiffKind, ShadowResult, Verdict

from .helpers import exchange, jpair, pair

RULES = CompareConfig(ignore=("$..request_id",))


def compare(p, rules: CompareConfig = RULES) -> ShadowResult:  # type: ignore[no-untyped-def]
    return DiffComparator().compare(p, rules)


def test_match_carries_both_sides_and_no_samples() -> None:
    r = compare(jpair({"id": "tt1", "request_id": "a"}, {"id": "tt1", "request_id": "b"}))
    assert r.verdict is Verdict.MATCH
    assert r.differences == ()
    assert [d.path for d in r.noise] == ["$.request_id"]
    assert r.extra["noise_sources"] == ["rule"]
    assert (r.key, r.mode, r.method, r.target) == ("titles", "shadow", "GET", "/api/titles/tt0000001")
    assert (r.legacy_status, r.candidate_status) == (200, 200)
    assert r.legacy_latency_s == r.candidate_latency_s == 0.01
    assert r.legacy_body is None and r.candidate_body is None


def test_byte_equal_bodies_match_through_the_fast_path() -> None:
    r = compare(jpair({"a": [1, True]}, {"a": [1, True]}))
    assert r.verdict is Verdict.MATCH and r.noise == ()


def test_byte_equal_answers_are_not_lifted(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lifting(_: object) -> None:
        raise AssertionError("byte-equal answers need no parsing")

    monkeypatch.setattr(comparator, "lift", no_lifting)
    r = compare(pair(exchange(raw=b'{"broken": '), exchange(raw=b'{"broken": ', upstream="ratings")))
    assert r.verdict is Verdict.MATCH and r.differences == () and r.extra == {}


def test_byte_equal_bodies_still_mismatch_on_status_or_compared_headers() -> None:
    status = compare(pair(exchange({"a": 1}), exchange({"a": 1}, status=404, upstream="ratings")))
    assert status.verdict is Verdict.MISMATCH
    assert [d.kind for d in status.differences] == [DiffKind.STATUS]
    text = (("Content-Type", "text/plain"),)
    header = compare(pair(exchange({"a": 1}), exchange({"a": 1}, headers=text, upstream="ratings")))
    assert header.verdict is Verdict.MISMATCH
    assert [d.path for d in header.differences] == ["header:content-type"]


def test_mismatch_lists_differences_and_keeps_samples() -> None:
    r = compare(jpair({"id": "tt1", "year": 1999}, {"id": "tt1", "year": 2000}))
    assert r.verdict is Verdict.MISMATCH
    assert r.differences == (Difference(DiffKind.VALUE, "$.year", 1999, 2000),)
    assert r.legacy_body == b'{"id":"tt1","year":1999}'
    assert r.candidate_body == b'{"id":"tt1","year":2000}'
    assert r.extra["legacy_headers"] == [["Content-Type", "application/json"]]


def test_result_is_immutable() -> None:
    r = compare(jpair({"a": 1}, {"a": 2}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.verdict = Verdict.MATCH  # type: ignore[misc]


def test_status_difference_is_a_mismatch() -> None:
    r = compare(pair(exchange({"error": "x"}, status=404), exchange({"error": "x"}, status=400, upstream="target")))
    assert r.verdict is Verdict.MISMATCH
    assert r.differences == (Difference(DiffKind.STATUS, "status", 404, 400),)


@pytest.mark.parametrize(
    ("legacy", "candidate", "verdict", "reason"),
    [
        (exchange({}), exchange(None, status=None, error="connect"), Verdict.CANDIDATE_ERROR, "candidate: connect"),
        (exchange({}), exchange(None, status=None, error="timeout"), Verdict.CANDIDATE_ERROR, "candidate: timeout"),
        (exchange({}), exchange({"error": "boom"}, status=503), Verdict.CANDIDATE_ERROR, "candidate: status 503"),
        (exchange({}), exchange(None, status=None), Verdict.CANDIDATE_ERROR, "candidate: no response"),
        (exchange({"e": 1}, status=500), exchange({}), Verdict.LEGACY_ERROR, "legacy: status 500"),
        (exchange(None, status=None, error="reset"), exchange({}), Verdict.LEGACY_ERROR, "legacy: reset"),
        # nothing to compare wins over a candidate failure
        (exchange(None, status=502), exchange(None, status=None, error="timeout"), Verdict.LEGACY_ERROR, "legacy: status 502"),
        (exchange({}), exchange(None, status=None, error="too-large"), Verdict.SKIPPED, "candidate: too-large"),
        (exchange({}, truncated=True), exchange({}), Verdict.SKIPPED, "legacy: too-large"),
        (exchange({}), exchange(None, status=None, error="unsafe-method"), Verdict.SKIPPED, "candidate: unsafe-method"),
        (exchange({}), exchange(None, status=None, error="dropped"), Verdict.SKIPPED, "candidate: dropped"),
    ],
)
def test_error_and_skip_verdicts(legacy, candidate, verdict: Verdict, reason: str) -> None:  # type: ignore[no-untyped-def]
    r = compare(pair(legacy, candidate))
    assert r.verdict is verdict
    assert r.reason == reason
    assert r.differences == ()


def test_candidate_error_keeps_a_sample_of_its_error_page() -> None:
    r = compare(pair(exchange({"ok": 1}), exchange({"error": "db down"}, status=500)))
    assert r.candidate_body == b'{"error":"db down"}'


def test_a_comparator_failure_becomes_a_skipped_result_not_an_exception() -> None:
    r = compare(jpair({"a": 1}, {"a": 2}), CompareConfig.model_construct(ignore=("no-dollar",)))
    assert r.verdict is Verdict.SKIPPED
    assert r.reason is not None and r.reason.startswith("compare-failed: ConfigError")


# ------------------------------------------------------------ lifting and headers


def test_content_type_compared_by_media_type_only() -> None:
    charset = (("Content-Type", "application/json; charset=utf-8"),)
    spaced = (("content-type", "Application/JSON;charset=UTF-8"),)
    r = compare(pair(exchange({"a": 1}, headers=charset), exchange({"a": 1}, headers=spaced)))
    assert r.verdict is Verdict.MATCH
    r = compare(pair(exchange({"a": 1}, headers=charset), exchange({"a": 1}, headers=(("Content-Type", "text/plain"),))))
    assert r.differences == (Difference(DiffKind.HEADER, "header:content-type", "application/json", "text/plain"),)


def test_header_allowlist_is_configurable() -> None:
    leg = exchange({"a": 1}, headers=(("Content-Type", "application/json"), ("Cache-Control", "max-age=60"), ("Date", "x")))
    cand = exchange({"a": 1}, headers=(("Content-Type", "application/json"), ("Date", "y")))
    assert compare(pair(leg, cand)).verdict is Verdict.MATCH  # Date and Cache-Control not compared by default
    r = compare(pair(leg, cand), CompareConfig(headers=("Cache-Control",)))
    assert r.differences == (Difference(DiffKind.HEADER, "header:cache-control", "max-age=60", None),)
    assert compare(pair(leg, exchange({"a": 1}, headers=())), CompareConfig(headers=())).verdict is Verdict.MATCH


def test_json_member_order_and_whitespace_do_not_matter() -> None:
    leg = exchange(raw=b'{"a": 1, "b": [1, 2]}')
    cand = exchange(raw=b'{\n  "b":[1,2],"a":1}\n')
    assert compare(pair(leg, cand)).verdict is Verdict.MATCH


def test_text_bodies_are_compared_as_text_with_optional_normalisation() -> None:
    html = (("Content-Type", "text/html"),)
    leg = exchange(raw=b"<p>Hello   World</p>", headers=html)
    cand = exchange(raw=b"<p>Hello World</p>", headers=html)
    r = compare(pair(leg, cand))
    assert r.verdict is Verdict.MISMATCH
    (d,) = r.differences
    assert (d.kind, d.path) == (DiffKind.BODY, "$") and "Hello   World" in d.legacy
    assert compare(pair(leg, cand), CompareConfig(normalise={"$": ("collapse-space",)})).verdict is Verdict.MATCH


def test_binary_bodies_are_compared_by_hash() -> None:
    png = (("Content-Type", "image/png"),)
    leg = exchange(raw=b"\x89PNG\xff\x00\x01", headers=png)
    assert compare(pair(leg, exchange(raw=b"\x89PNG\xff\x00\x01", headers=png))).verdict is Verdict.MATCH
    r = compare(pair(leg, exchange(raw=b"\x89PNG\xff\x00\x02", headers=png)))
    (d,) = r.differences
    assert d.kind is DiffKind.BODY and d.legacy.startswith("sha256:") and d.legacy != d.candidate


def test_json_against_html_is_a_type_difference_at_the_root() -> None:
    r = compare(pair(exchange({"a": 1}), exchange(raw=b"<html>oops</html>", headers=(("Content-Type", "text/html"),))))
    assert r.differences[-1] == Difference(DiffKind.TYPE, "$", "json", "text")


def test_empty_against_empty_matches_and_against_json_differs() -> None:
    assert compare(pair(exchange(raw=b"", status=204), exchange(raw=b"", status=204))).verdict is Verdict.MATCH
    r = compare(pair(exchange(raw=b"", status=204), exchange(raw=b"{}", status=204)))
    assert r.differences == (Difference(DiffKind.TYPE, "$", "empty", "json"),)


def test_bare_json_subtrees_as_graphql_fields_send_them() -> None:
    leg = exchange(raw=b"7.5", headers=())
    cand = exchange(raw=b"7.500001", headers=())
    p = pair(leg, cand, key="graphql:Title.rating")
    assert DiffComparator().compare(p, CompareConfig(abs_tolerance=0.001)).verdict is Verdict.MATCH
    r = DiffComparator().compare(p, CompareConfig())
    assert r.key == "graphql:Title.rating" and r.differences == (Difference(DiffKind.VALUE, "$", 7.5, 7.500001),)


def test_text_difference_shows_both_sides_around_the_first_change() -> None:
    plain = (("Content-Type", "text/plain"),)
    a = "x" * 5000 + "LEGACY" + "y" * 5000
    b = "x" * 5000 + "CANDIDATE" + "y" * 5000
    r = compare(pair(exchange(raw=a.encode(), headers=plain), exchange(raw=b.encode(), headers=plain)))
    (d,) = r.differences
    assert d.legacy.startswith("…x") and "LEGACY" in d.legacy and "CANDIDATE" in d.candidate
    assert len(d.legacy) < 300
