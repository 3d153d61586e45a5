"""Path patterns, rendering and compiled-rule answers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.rules import (
    CompiledRules,
    Keyed,
    compile_rules,
    generalise_path,
    generalised_prefixes,
    parse_path,
    path_matches,
    render_path,
)
from strangler_proxy.errors import ConfigError


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("$..request_id", ("request_id",), True),
        ("$..request_id", ("items", 3, "meta", "request_id"), True),
        ("$..request_id", ("items", 3, "request_ids"), False),
        ("$.items[*].updated_at", ("items", 0, "updated_at"), True),
        ("$.items[*].updated_at", ("items", Keyed("id", "x"), "updated_at"), True),
        ("$.items[*].updated_at", ("items", "0", "updated_at"), True),  # * is any one segment
        ("$.items[*].updated_at", ("other", 0, "updated_at"), False),
        ("$.a.*", ("a", "b"), True),
        ("$.a.*", ("a",), False),
        ("$.items[2]", ("items", 2), True),
        ("$.items[2]", ("items", 1), False),
        ("$['odd key'].x", ("odd key", "x"), True),
        ('$.images[id=rm1].url', ("images", Keyed("id", "rm1"), "url"), True),
        ('$.images[id=rm1].url', ("images", Keyed("id", "rm2"), "url"), False),
        ('$.images[id="a b"]', ("images", Keyed("id", "a b")), True),
        ("$.x[n=42]", ("x", Keyed("n", 42)), True),
        ("$", (), True),
        ("$..*", ("anything", 1), True),
    ],
)
def test_full_path_matching(pattern: str, path: tuple, expected: bool) -> None:
    assert path_matches(parse_path(pattern), path) is expected


def test_prefix_matching_covers_everything_under_a_match() -> None:
    p = parse_path("$.user")
    assert path_matches(p, ("user", "password"), prefix=True)
    assert not path_matches(p, ("user", "password"))
    assert not path_matches(p, ("users", "password"), prefix=True)


@pytest.mark.parametrize("bad", ["items", "$.", "$.a[", "$.a[x]", "$.a..", "$.a['x", "$ .a"])
def test_bad_patterns_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_path(bad)


def test_compiling_rules_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        CompiledRules(CompareConfig.model_construct(ignore=("$.ok", "oops")))
    assert info.value.field == "compare.ignore[1]"


def test_a_bad_pattern_is_refused_when_the_config_loads() -> None:
    with pytest.raises(ValidationError, match="oops"):
        CompareConfig(ignore=("$.ok", "oops"))


def test_rendering_is_readable_and_round_trips_through_the_parser() -> None:
    cases = {
        ("cast", 3, "name"): "$.cast[3].name",
        ("images", Keyed("id", "rm1"), "url"): "$.images[id=rm1].url",
        ("images", Keyed("id", "a b")): '$.images[id="a b"]',
        ("images", Keyed("id", "42")): '$.images[id="42"]',
        ("images", Keyed("id", 42)): "$.images[id=42]",
        ("odd key", "it's"): "$['odd key']['it\\'s']",
        (): "$",
    }
    for path, text in cases.items():
        assert render_path(path) == text
        assert path_matches(parse_path(text), path), text


def test_generalised_paths_forget_list_positions() -> None:
    assert generalise_path(("items", 3, "ts")) == "$.items[*].ts"
    assert generalise_path(("images", Keyed("id", "rm1"), "url")) == "$.images[*].url"
    assert generalised_prefixes(("items", 3, "ts")) == ["$", "$.items", "$.items[*]", "$.items[*].ts"]


def test_rules_compile_once_per_config_object() -> None:
    cfg = CompareConfig(ignore=("$..x",))
    assert compile_rules(cfg) is compile_rules(cfg)
    assert compile_rules(compile_rules(cfg)) is compile_rules(cfg)
    # merged() builds a fresh, equal object per call: still compiled once
    route = CompareConfig(ignore=("$..y",))
    assert compile_rules(cfg.merged(route)) is compile_rules(cfg.merged(route))
    assert compile_rules(cfg.merged(route)).is_ignored(("a", "y"))
    assert compile_rules(CompareConfig(ignore=("$..z",))) is not compile_rules(cfg)


def test_list_modes_and_normalisers() -> None:
    r = compile_rules(
        CompareConfig(
            unordered=("$.tags", "$.items[*].genres"),
            list_keys={"$.images": "id"},
            normalise={"$.title": ("strip", "lower"), "$..name": ("collapse-space",)},
        )
    )
    assert r.list_mode(("tags",)) == ""
    assert r.list_mode(("items", 7, "genres")) == ""
    assert r.list_mode(("images",)) == "id"
    assert r.list_mode(("other",)) is None
    norm = r.normaliser(("title",))
    assert norm is not None and norm("  The MOVIE ") == "the movie"
    assert r.normaliser(("cast", 0, "name"))("a   b") == "a b"  # type: ignore[misc]
    assert r.normaliser(("kind",)) is None


def test_header_allowlist_defaults_to_content_type() -> None:
    assert compile_rules(CompareConfig()).headers == ("content-type",)
    assert compile_rules(CompareConfig(headers=("ETag", "Cache-Control"))).headers == ("etag", "cache-control")
    assert compile_rules(CompareConfig(headers=())).headers == ()
    assert {"authorization", "cookie", "set-cookie", "x-api-key"} <= compile_rules(
        CompareConfig(redact_headers=("X-Api-Key",))
    ).redact_headers
