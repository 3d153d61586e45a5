"""Reading strangler.yaml as YAML: duplicate keys and invalid YAML name their lines and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from strangler_proxy.config import load_config, load_config_text
from strangler_proxy.errors import ConfigErrors

SHIPPED = Path(__file__).parents[1] / "strangler.yaml"

BASE = """\
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  ratings: {url: "http://127.0.0.1:8101"}
compare:
  ignore: [$..generated_at]
routes:
  - name: ratings
    path: /api/titles/{id}/ratings
    mode: shadow
    target: ratings
graphql:
  backends:
    legacy: {upstream: legacy}
    ratings: {upstream: ratings}
  fields:
    Title.rating: {target: ratings}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, file="s.yaml")
    return [str(e) for e in info.value.errors]


def test_the_base_text_is_valid() -> None:
    cfg = load_config_text(BASE)
    assert [r.name for r in cfg.routes] == ["ratings"] and list(cfg.graphql.fields) == ["Title.rating"]


def test_a_second_top_level_routes_is_refused_naming_both_lines() -> None:
    # Last-one-wins would have turned this into a file without routes.
    [error] = _errors(BASE + "routes: []\n")
    assert error.startswith("s.yaml:17: routes: duplicate key 'routes'")
    assert "line 6 and again on line 17" in error


def test_a_duplicated_mode_inside_a_route_is_refused() -> None:
    text = BASE.replace("    target: ratings\n", "    target: ratings\n    mode: extracted\n")
    [error] = _errors(text)
    assert error.startswith("s.yaml:11: routes[0].mode: duplicate key 'mode'")
    assert "line 9 and again on line 11" in error


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # a compare rule given twice
        ("  ignore: [$..generated_at]\n", "  ignore: [$..generated_at]\n  ignore: []\n",
         "s.yaml:6: compare.ignore: duplicate key 'ignore': given on line 5 and again on line 6"),
        # a GraphQL field given twice
        ("    Title.rating: {target: ratings}\n",
         "    Title.rating: {target: ratings}\n    Title.rating: {target: legacy}\n",
         "s.yaml:17: graphql.fields.Title.rating: duplicate key 'Title.rating': given on line 16 and again on line 17"),
        # twice in one flow mapping
        ('  legacy: {url: "http://127.0.0.1:8001"}', '  legacy: {url: "http://127.0.0.1:8001", url: "http://h"}',
         "s.yaml:2: upstreams.legacy.url: duplicate key 'url': given twice on line 2"),
        # a route's own compare rules
        ("    target: ratings\n", "    target: ratings\n    compare:\n      abs_tolerance: 0.1\n      abs_tolerance: 1\n",
         "s.yaml:13: routes[0].compare.abs_tolerance: duplicate key 'abs_tolerance': given on line 12 and again"),
    ],
)
def test_duplicate_keys_deeper_down_are_refused(old: str, new: str, expected: str) -> None:
    assert BASE.count(old) == 1
    errors = _errors(BASE.replace(old, new))
    assert any(expected in e for e in errors), errors


def test_every_duplicate_is_reported_at_once() -> None:
    text = BASE.replace("    mode: shadow\n", "    mode: shadow\n    mode: legacy\n") + "graphql: {}\n"
    errors = _errors(text)
    assert [e.split(":")[1:3] for e in errors] == [["10", " routes[0].mode"], ["18", " graphql"]]


def test_merge_keys_may_override_what_they_merge() -> None:
    # `<<: *r` then `name:` is an override YAML allows, not a key given twice.
    text = BASE.replace("  - name: ratings\n", "  - &r\n    name: ratings\n").replace(
        "graphql:", "  - <<: *r\n    name: ratings-2\n    path: /api/r2\ngraphql:")
    cfg = load_config_text(text)
    assert [(r.name, r.path, r.mode.value) for r in cfg.routes] == [
        ("ratings", "/api/titles/{id}/ratings", "shadow"), ("ratings-2", "/api/r2", "shadow")]


def test_the_data_is_what_yaml_itself_reads() -> None:
    # The node tree composed for the lines is constructed once; it must give the same data.
    text = SHIPPED.read_text()
    assert load_config_text(text) == load_config_text(yaml.safe_dump(yaml.safe_load(text)))


def test_an_unclosed_flow_sequence_names_where_it_starts_and_the_key() -> None:
    lines = SHIPPED.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("bucket_s:"))
    lines[at] = "  bucket_s: [10\n"
    [error] = _errors("".join(lines))
    noticed = next(i for i, line in enumerate(lines) if i > at and line[:1].isalpha()) + 1
    assert error.startswith(f"s.yaml:{at + 1}: store.bucket_s: not valid YAML: line {at + 1}, column 13: ")
    assert f"line {noticed}, column 1: expected ',' or ']'" in error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an unclosed quote: where it opens, and its key
        ('upstreams:\n  legacy:\n    url: "http://x\n', "s.yaml:3: upstreams.legacy.url: not valid YAML: line 3, column 10"),
        # the scanner stops before the key's own line is read: the key on that line is named
        ("upstreams: legacy: x\n", "s.yaml:1: upstreams: not valid YAML: line 1, column 18: mapping values"),
        # a key indented wrongly: the problem line leads, not the top of the enclosing block
        ("upstreams:\n  legacy: {url: 'http://x'}\n bad: 1\n", "s.yaml:3: bad: not valid YAML: line 1, column 1"),
        # a tab
        ("upstreams:\n\tlegacy: {}\n", "s.yaml:2: upstreams: not valid YAML"),
        # an unclosed list in a route
        ("upstreams: {legacy: {url: 'http://x'}}\nroutes:\n  - name: a\n    methods: [GET\n    path: /a\n",
         "s.yaml:4: routes[0].methods: not valid YAML: line 4, column 14: while parsing a flow sequence; line 5"),
        # a tag SafeLoader does not construct
        ("upstreams:\n  legacy: !secret x\n", "s.yaml:2: upstreams.legacy: not valid YAML: line 2, column 11"),
    ],
)
def test_invalid_yaml_names_its_lines_and_the_key(text: str, expected: str) -> None:
    [error] = _errors(text)
    assert error.startswith(expected), error


def test_a_recursive_alias_does_not_hang_the_loader() -> None:
    errors = _errors("upstreams: &a {legacy: *a}\n")
    assert errors and all(e.startswith("s.yaml:1: upstreams.legacy") for e in errors)


def test_load_config_reports_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "strangler.yaml"
    path.write_text(BASE + "routes: []\n")
    with pytest.raises(ConfigErrors, match=rf"^{path}:17: routes: duplicate key"):
        load_config(path)


def test_the_yaml_reader_examples_hold() -> None:
    import doctest

    from strangler_proxy import yaml_lines

    failed, attempted = doctest.testmod(yaml_lines)
    assert attempted > 0 and failed == 0
