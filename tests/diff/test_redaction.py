"""Secrets never leave the comparator in clear."""

from __future__ import annotations

import dataclasses

import orjson

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.comparator import DiffComparator
from strangler_proxy.diff.redaction import OPAQUE_SAMPLE, REDACTED
from strangler_proxy.diff.result import DiffKind, ShadowResult, Verdict

from .helpers import exchange, pair

SECRET = "s3cr3t-VALUE-9f2"
RULES = CompareConfig(redact_paths=("$..token", "$.user.password", "$.cards[*].number"), redact_headers=("X-Api-Key",))


def everything(result: ShadowResult) -> bytes:
    """Every byte a store could take from the result."""
    fields = dataclasses.asdict(result)
    return orjson.dumps(fields, default=lambda v: v.decode("latin-1") if isinstance(v, bytes) else str(v))


def body(token: str, password: str, year: int) -> dict[str, object]:
    return {
        "session": {"token": token},
        "user": {"name": "ann", "password": password},
        "cards": [{"number": f"4111-{password}", "exp": "12/30"}],
        "year": year,
    }


def secret_headers(value: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Content-Type", "application/json"),
        ("Set-Cookie", f"sid={value}"),
        ("Authorization", f"Bearer {value}"),
        ("X-Api-Key", value),
        ("Cookie", f"c={value}"),
    )


def test_secret_headers_and_fields_never_appear_anywhere_in_the_result() -> None:
    leg = exchange(body(SECRET, SECRET, 1999), headers=secret_headers(SECRET))
    cand = exchange(body(SECRET + "x", SECRET + "y", 2000), headers=secret_headers(SECRET + "z"), upstream="target")
    r = DiffComparator().compare(pair(leg, cand), CompareConfig(**{**RULES.model_dump(), "headers": ("content-type", "authorization")}))
    assert r.verdict is Verdict.MISMATCH
    assert SECRET.encode() not in everything(r)
    paths = {d.path: d for d in r.differences}
    assert paths["$.year"].legacy == 1999  # ordinary values are kept
    for p in ("$.session.token", "$.user.password", "$.cards[0].number", "header:authorization"):
        assert (paths[p].legacy, paths[p].candidate) == (REDACTED, REDACTED), p
    sample = orjson.loads(r.legacy_body or b"")
    assert sample["session"]["token"] == REDACTED and sample["user"] == {"name": "ann", "password": REDACTED}
    assert sample["cards"] == [{"number": REDACTED, "exp": "12/30"}]
    assert dict((k, v) for k, v in r.extra["legacy_headers"]) == {
        "Content-Type": "application/json",
        "Set-Cookie": REDACTED,
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "Cookie": REDACTED,
    }


def test_a_difference_above_a_redacted_path_has_the_secret_blanked_inside() -> None:
    leg = exchange({"user": {"name": "ann", "password": SECRET}})
    cand = exchange({})
    r = DiffComparator().compare(pair(leg, cand), RULES)
    (d,) = r.differences
    assert d.kind is DiffKind.MISSING and d.legacy == {"name": "ann", "password": REDACTED}
    assert SECRET.encode() not in everything(r)


def test_learned_noise_values_are_redacted_too() -> None:
    comparator = DiffComparator()
    comparator.compare(pair(exchange({"token": "a"}), exchange({"token": "a"}), again=exchange({"token": "b"})), RULES)
    r = comparator.compare(pair(exchange({"token": SECRET}), exchange({"token": SECRET + "2"})), RULES)
    assert r.verdict is Verdict.MATCH and [(d.legacy, d.candidate) for d in r.noise] == [(REDACTED, REDACTED)]


def test_non_json_bodies_are_not_sampled_when_paths_must_be_redacted() -> None:
    html = (("Content-Type", "text/html"),)
    r = DiffComparator().compare(
        pair(exchange(raw=f"<p>{SECRET}</p>".encode(), headers=html), exchange(raw=b"<p>x</p>", headers=html)), RULES
    )
    assert r.legacy_body == OPAQUE_SAMPLE and SECRET.encode() not in everything(r)
    # without redact_paths a text sample is useful evidence and is kept
    r = DiffComparator().compare(
        pair(exchange(raw=b"<p>a</p>", headers=html), exchange(raw=b"<p>b</p>", headers=html)), CompareConfig()
    )
    assert r.legacy_body == b"<p>a</p>"


def test_samples_are_truncated_to_the_limit() -> None:
    big = {"items": ["x" * 100] * 100}
    r = DiffComparator(sample_body_limit=256).compare(pair(exchange(big), exchange({"items": []})), CompareConfig())
    assert r.legacy_body is not None and len(r.legacy_body) == 256
    assert r.extra["legacy_body_truncated"] is True and "candidate_body_truncated" not in r.extra


def test_unchanged_bodies_are_not_reserialised() -> None:
    raw = b'{"b": 1,   "a": 2}'
    r = DiffComparator().compare(pair(exchange(raw=raw), exchange(raw=b'{"a": 3, "b": 1}')), RULES)
    assert r.legacy_body == raw  # no redacted member in it: the original bytes
