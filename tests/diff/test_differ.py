"""Structural JSON differences: every kind and every rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.differ import MAX_DIFFERENCES, diff_json, diff_raw
from strangler_proxy.diff.result import Difference, DiffKind


def kinds(diffs: list[Difference]) -> list[tuple[str, str]]:
    return [(d.kind.value, d.path) for d in diffs]


# ------------------------------------------------------------ kinds


def test_each_kind_of_difference_with_its_path_and_values() -> None:
    legacy = {
        "id": "tt1",
        "gone": 1,
        "year": 1999,
        "votes": "12",
        "cast": [{"name": "A"}, {"name": "B"}, {"name": "C"}, {"name": "Dee"}],
        "genres": ["Drama", "Comedy"],
    }
    cand = {
        "id": "tt1",
        "year": 2000,
        "votes": 12,
        "cast": [{"name": "A"}, {"name": "B"}, {"name": "C"}, {"name": "D"}],
        "genres": ["Drama"],
        "new": True,
    }
    diffs = diff_json(legacy, cand)
    assert diffs == [
        Difference(DiffKind.MISSING, "$.gone", 1, None),
        Difference(DiffKind.VALUE, "$.year", 1999, 2000),
        Difference(DiffKind.TYPE, "$.votes", "12", 12),
        Difference(DiffKind.VALUE, "$.cast[3].name", "Dee", "D"),
        Difference(DiffKind.LENGTH, "$.genres", 2, 1),
        Difference(DiffKind.EXTRA, "$.new", None, True),
    ]


def test_json_numbers_are_one_type_but_booleans_are_not_numbers() -> None:
    assert diff_json({"a": 1, "b": [2.0]}, {"a": 1.0, "b": [2]}) == []
    assert kinds(diff_json({"a": True, "b": 0}, {"a": 1, "b": False})) == [("type", "$.a"), ("type", "$.b")]
    assert kinds(diff_json({"a": None}, {"a": 0})) == [("type", "$.a")]
    assert kinds(diff_json({"a": {}}, {"a": []})) == [("type", "$.a")]


def test_boolean_hidden_in_an_equal_looking_subtree_is_found_even_on_the_fast_path() -> None:
    # Python says {"x": [True]} == {"x": [1]}; the engine must not.
    raw, _, _ = diff_raw({"x": [True]}, {"x": [1]}, None, boolfree=False)
    assert [(k.value, p) for k, p, _, _ in raw] == [("type", ("x", 0))]


def test_root_scalars_and_top_level_arrays() -> None:
    assert kinds(diff_json(8.5, 8.4)) == [("value", "$")]
    assert kinds(diff_json([1, 2], [1, 3])) == [("value", "$[1]")]
    assert diff_json("x", "x") == []


def test_odd_member_names_render_quoted() -> None:
    assert kinds(diff_json({"a b": 1}, {"a b": 2})) == [("value", "$['a b']")]


def test_difference_count_is_bounded() -> None:
    a = {f"k{i}": i for i in range(500)}
    b = {f"k{i}": i + 1 for i in range(500)}
    raw, _, truncated = diff_raw(a, b, None)
    assert len(raw) == MAX_DIFFERENCES and truncated


def test_large_values_are_clipped_in_differences() -> None:
    big = {"blob": "x" * 5000, "list": list(range(2000))}
    (d,) = diff_json({"v": big}, {})
    assert d.kind is DiffKind.MISSING and isinstance(d.legacy, str) and "object with 2 members" in d.legacy
    (d,) = diff_json({"s": "y" * 5000}, {"s": "z"})
    assert len(d.legacy) < 1100


# ------------------------------------------------------------ rules


def test_ignore_with_recursive_descent_and_wildcards() -> None:
    rules = CompareConfig(ignore=("$..request_id", "$.items[*].updated_at", "$.meta.*"))
    legacy = {
        "request_id": "a",
        "items": [{"id": 1, "updated_at": "t1", "request_id": "q"}],
        "meta": {"host": "h1", "pid": 1},
        "kept": 1,
    }
    cand = {"request_id": "b", "items": [{"id": 1, "updated_at": "t2"}], "meta": {"host": "h2"}, "kept": 2}
    assert kinds(diff_json(legacy, cand, rules)) == [("value", "$.kept")]
    # ...and without the rules every one of them is a difference
    assert len(diff_json(legacy, cand)) == 6


def test_ignore_prunes_a_whole_subtree_and_records_it() -> None:
    raw, ignored, _ = diff_raw({"debug": {"a": 1, "b": [1, 2]}}, {"debug": {"a": 2, "b": []}}, CompareConfig(ignore=("$.debug",)))
    assert raw == []
    assert [p for _, p, _, _ in ignored] == [("debug",)]


def test_absolute_and_relative_tolerance() -> None:
    absolute = CompareConfig(abs_tolerance=0.01)
    assert diff_json({"r": 7.123}, {"r": 7.13}, absolute) == []
    assert kinds(diff_json({"r": 7.1}, {"r": 7.2}, absolute)) == [("value", "$.r")]
    relative = CompareConfig(rel_tolerance=0.001)
    assert diff_json({"n": 100000}, {"n": 100050}, relative) == []
    assert kinds(diff_json({"n": 10}, {"n": 11}, relative)) == [("value", "$.n")]
    both = CompareConfig(abs_tolerance=0.5, rel_tolerance=0.001)  # either one suffices
    assert diff_json({"a": 0.1, "b": 10000}, {"a": 0.5, "b": 10009}, both) == []
    # tolerance never makes booleans or strings equal
    assert kinds(diff_json({"b": True}, {"b": False}, both)) == [("value", "$.b")]


def test_string_normalisation_where_asked() -> None:
    rules = CompareConfig(normalise={"$.title": ("strip", "lower"), "$..caption": ("collapse-space",)})
    legacy = {"title": "  Alien ", "images": [{"caption": "a  big\tship"}], "kind": "Movie"}
    cand = {"title": "alien", "images": [{"caption": "a big ship"}], "kind": "movie"}
    assert kinds(diff_json(legacy, cand, rules)) == [("value", "$.kind")]


def test_unordered_lists_of_scalars_and_objects() -> None:
    rules = CompareConfig(unordered=("$.genres", "$.images"))
    legacy = {"genres": ["Drama", "Comedy", "Drama"], "images": [{"u": 1}, {"u": 2}]}
    cand = {"genres": ["Comedy", "Drama", "Drama"], "images": [{"u": 2}, {"u": 1}]}
    assert diff_json(legacy, cand, rules) == []
    # a multiset, not a set: the duplicate matters
    cand2 = {"genres": ["Comedy", "Drama", "Horror"], "images": [{"u": 2}, {"u": 1}]}
    assert diff_json(legacy, cand2, rules) == [
        Difference(DiffKind.MISSING, "$.genres[2]", "Drama", None),
        Difference(DiffKind.EXTRA, "$.genres[2]", None, "Horror"),
    ]
    # without the rule the order is a difference
    assert kinds(diff_json(legacy, cand)) == [("value", "$.genres[0]"), ("value", "$.genres[1]"), ("value", "$.images[0].u"), ("value", "$.images[1].u")]


def test_unordered_elements_pair_up_under_the_other_rules() -> None:
    rules = CompareConfig(unordered=("$.items",), ignore=("$.items[*].ts",), abs_tolerance=0.01)
    legacy = {"items": [{"id": 1, "ts": "a", "r": 1.0}, {"id": 2, "ts": "b", "r": 2.0}]}
    cand = {"items": [{"id": 2, "ts": "x", "r": 2.001}, {"id": 1, "ts": "y", "r": 1.0}]}
    assert diff_json(legacy, cand, rules) == []


def test_list_matched_by_key_reports_inside_elements_at_keyed_paths() -> None:
    rules = CompareConfig(list_keys={"$.images": "id"})
    legacy = {"images": [{"id": "rm1", "url": "a"}, {"id": "rm2", "url": "b"}, {"id": "rm3", "url": "c"}]}
    cand = {"images": [{"id": "rm3", "url": "c"}, {"id": "rm1", "url": "A"}, {"id": "rm4", "url": "d"}]}
    assert diff_json(legacy, cand, rules) == [
        Difference(DiffKind.VALUE, "$.images[id=rm1].url", "a", "A"),
        Difference(DiffKind.MISSING, "$.images[id=rm2]", {"id": "rm2", "url": "b"}, None),
        Difference(DiffKind.EXTRA, "$.images[id=rm4]", None, {"id": "rm4", "url": "d"}),
    ]


def test_keyed_list_rules_compose_with_ignore_on_keyed_paths() -> None:
    rules = CompareConfig(list_keys={"$.images": "id"}, ignore=("$.images[*].ts", "$.images[id=rm2]"))
    legacy = {"images": [{"id": "rm1", "ts": 1}, {"id": "rm2", "url": "b"}]}
    cand = {"images": [{"id": "rm1", "ts": 2}]}
    assert diff_json(legacy, cand, rules) == []


def test_keyed_list_with_duplicate_and_missing_keys() -> None:
    rules = CompareConfig(list_keys={"$.xs": "id"})
    legacy = {"xs": [{"id": 1, "v": "a"}, {"id": 1, "v": "b"}, {"v": "loose"}, 7]}
    cand = {"xs": [7, {"v": "loose"}, {"id": 1, "v": "a"}, {"id": 1, "v": "B"}]}
    assert kinds(diff_json(legacy, cand, rules)) == [("value", "$.xs[id=1].v")]


def test_nested_wildcard_list_rules() -> None:
    rules = CompareConfig(unordered=("$.items[*].genres",))
    legacy = {"items": [{"genres": ["a", "b"]}, {"genres": ["c", "d"]}]}
    cand = {"items": [{"genres": ["b", "a"]}, {"genres": ["d", "c"]}]}
    assert diff_json(legacy, cand, rules) == []


# ------------------------------------------------------------ properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1.0, 2.0]) | st.sampled_from(["a", "b", ""]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["x", "y", "z"]), children, max_size=3),
    max_leaves=12,
)


def json_equal(a: Any, b: Any) -> bool:
    """Reference equality of JSON values: numbers by value, booleans apart."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=False))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_no_difference_exactly_when_json_equal(a: Any, b: Any) -> None:
    assert (diff_json(a, b) == []) is json_equal(a, b)
    assert diff_json(a, a) == []


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_fast_path_agrees_with_the_full_walk_when_there_are_no_booleans(a: Any, b: Any) -> None:
    if "True" in repr((a, b)) or "False" in repr((a, b)):
        return
    full, _, _ = diff_raw(a, b, None, boolfree=False)
    fast, _, _ = diff_raw(a, b, None, boolfree=True)
    assert fast == full


def test_a_difference_of_exactly_the_tolerance_is_within_it() -> None:
    # 8.8 - 8.75 == 0.05000000000000071 in binary floating point
    assert diff_json({"avg": 8.75}, {"avg": 8.8}, CompareConfig(abs_tolerance=0.05)) == []
    assert diff_json({"avg": 8.75}, {"avg": 8.81}, CompareConfig(abs_tolerance=0.05)) != []
