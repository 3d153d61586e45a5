"""Learned noise: legacy compared with itself."""

from __future__ import annotations

import itertools

import pytest

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.comparator import DiffComparator
from strangler_proxy.diff.noise import NoiseModel
from strangler_proxy.diff.result import DiffKind, Verdict
from strangler_proxy.errors import NoiseModelError

from .helpers import exchange, jpair, pair

_clock = itertools.count(1000)


def legacy_answer(title: str = "Alien", cast: tuple[str, ...] = ("Sigourney", "Tom")) -> dict[str, object]:
    """A deliberately volatile monolith answer: a fresh timestamp per call,
    and a per-item fetch time inside a list."""
    return {
        "id": "tt1",
        "title": title,
        "generated_at": f"2024-01-01T00:00:{next(_clock) % 60:02d}.{next(_clock)}",
        "cast": [{"name": n, "fetched": next(_clock)} for n in cast],
    }


def test_volatile_fields_are_learned_and_then_reported_as_noise() -> None:
    model = NoiseModel()
    comparator = DiffComparator(noise=model)
    rules = CompareConfig()

    # Before learning, volatility looks like a mismatch.
    before = comparator.compare(jpair(legacy_answer(), legacy_answer()), rules)
    assert before.verdict is Verdict.MISMATCH
    assert {d.path for d in before.differences} == {"$.generated_at", "$.cast[0].fetched", "$.cast[1].fetched"}

    # A sampled request: legacy asked twice, and the two answers disagree.
    learn = comparator.compare(jpair(legacy_answer(), legacy_answer(), again=legacy_answer()), rules)
    assert learn.verdict is Verdict.MATCH
    assert {d.path for d in learn.noise} == {"$.generated_at", "$.cast[0].fetched", "$.cast[1].fetched"}
    assert learn.extra["noise_sources"] == ["learned"] * 3
    assert model.snapshot() == {"titles": [("$.cast[*].fetched", 1), ("$.generated_at", 1)]}
    assert model.samples("titles") == 1

    # Learned paths generalise over list positions: a third cast member is noise too.
    after = comparator.compare(
        jpair(legacy_answer(cast=("A", "B", "C")), legacy_answer(cast=("A", "B", "C"))), rules
    )
    assert after.verdict is Verdict.MATCH
    assert "$.cast[2].fetched" in {d.path for d in after.noise}

    # A real difference is still a mismatch, with the noise listed apart.
    real = comparator.compare(jpair(legacy_answer(), legacy_answer(title="Aliens")), rules)
    assert real.verdict is Verdict.MISMATCH
    assert [(d.kind, d.path) for d in real.differences] == [(DiffKind.VALUE, "$.title")]
    assert len(real.noise) == 3


def test_noise_is_learned_per_key() -> None:
    comparator = DiffComparator()
    comparator.compare(jpair({"t": 1}, {"t": 1}, again={"t": 2}, key="titles"), CompareConfig())
    assert comparator.compare(jpair({"t": 1}, {"t": 3}, key="titles"), CompareConfig()).verdict is Verdict.MATCH
    assert comparator.compare(jpair({"t": 1}, {"t": 3}, key="people"), CompareConfig()).verdict is Verdict.MISMATCH


def test_noise_at_a_node_covers_everything_under_it() -> None:
    comparator = DiffComparator()
    comparator.compare(jpair({"stats": {"a": 1}}, {"stats": {"a": 1}}, again={"stats": None}), CompareConfig())
    assert comparator.noise.snapshot() == {"titles": [("$.stats", 1)]}
    r = comparator.compare(jpair({"stats": {"a": 1}}, {"stats": {"a": 2, "b": 3}}), CompareConfig())
    assert r.verdict is Verdict.MATCH and len(r.noise) == 2


def test_ignored_paths_are_not_learned_and_status_never_is() -> None:
    comparator = DiffComparator()
    rules = CompareConfig(ignore=("$.request_id",))
    comparator.compare(jpair({"request_id": "a"}, {"request_id": "b"}, again={"request_id": "c"}), rules)
    assert comparator.noise.snapshot() == {}
    assert comparator.noise.samples("titles") == 1
    # a legacy that flips status is not teaching noise
    leg, again = exchange({"x": 1}), exchange({"x": 2}, status=404)
    comparator.compare(pair(leg, exchange({"x": 1}), again=again), rules)
    assert comparator.noise.snapshot() == {}


def test_volatile_headers_can_be_learned() -> None:
    rules = CompareConfig(headers=("content-type", "etag"))
    comparator = DiffComparator()
    h = lambda e: (("Content-Type", "application/json"), ("ETag", e))  # noqa: E731
    comparator.compare(pair(exchange({}, headers=h("1")), exchange({}, headers=h("1")), again=exchange({}, headers=h("2"))), rules)
    assert comparator.noise.paths("titles") == {"header:etag"}
    r = comparator.compare(pair(exchange({}, headers=h("1")), exchange({}, headers=h("9"))), rules)
    assert r.verdict is Verdict.MATCH and [d.path for d in r.noise] == ["header:etag"]


def test_persisted_model_round_trips() -> None:
    model = NoiseModel()
    model.observe("titles")
    model.learn("titles", ["$.generated_at", "$.items[*].ts"], at=5.0)
    model.learn("titles", ["$.generated_at"], at=6.0)
    model.learn("graphql:Title.rating", ["$.computed_at"], at=7.0)
    again = NoiseModel.from_json(model.to_json())
    assert again.snapshot() == model.snapshot() == {
        "graphql:Title.rating": [("$.computed_at", 1)],
        "titles": [("$.generated_at", 2), ("$.items[*].ts", 1)],
    }
    assert again.samples("titles") == 1
    assert again.explains("titles", ["$", "$.items", "$.items[*]", "$.items[*].ts"]) == "$.items[*].ts"
    assert again.to_json() == model.to_json()


def test_min_count_delays_learning() -> None:
    model = NoiseModel(min_count=2)
    model.learn("k", ["$.a"])
    assert model.explains("k", ["$", "$.a"]) is None and model.snapshot() == {"k": []}
    model.learn("k", ["$.a"])
    assert model.explains("k", ["$", "$.a"]) == "$.a"


@pytest.mark.parametrize("bad", [b"not json", b"{}", b'{"version": 99, "keys": {}}', b'{"version": 1, "keys": {"k": {"paths": {"$.a": 3}}}}'])
def test_unreadable_saved_model_is_a_typed_error(bad: bytes) -> None:
    with pytest.raises(NoiseModelError):
        NoiseModel.from_json(bad)


def test_a_legacy_that_answers_in_another_form_teaches_nothing() -> None:
    comparator = DiffComparator()
    html = exchange(raw=b"<html>maintenance</html>", headers=(("Content-Type", "text/html"),))
    comparator.compare(pair(exchange({"a": 1}), exchange({"a": 1}), again=html), CompareConfig())
    assert comparator.noise.snapshot() == {} and comparator.noise.samples("titles") == 0


def test_volatile_text_bodies_are_learned_at_the_root() -> None:
    comparator = DiffComparator()
    text = lambda s: exchange(raw=s.encode(), headers=(("Content-Type", "text/plain"),))  # noqa: E731
    comparator.compare(pair(text("built 10:01"), text("built 10:01"), again=text("built 10:02")), CompareConfig())
    assert comparator.noise.snapshot() == {"titles": [("$", 1)]}
    r = comparator.compare(pair(text("built 10:03"), text("built 10:04")), CompareConfig())
    assert r.verdict is Verdict.MATCH and r.noise[0].kind is DiffKind.BODY


def test_noise_is_learned_even_when_the_candidate_failed() -> None:
    comparator = DiffComparator()
    r = comparator.compare(pair(exchange({"t": 1}), exchange(None, status=None, error="timeout"), again=exchange({"t": 2})), CompareConfig())
    assert r.verdict is Verdict.CANDIDATE_ERROR
    assert comparator.noise.snapshot() == {"titles": [("$.t", 1)]}
