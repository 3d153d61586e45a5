from __future__ import annotations

import pytest

from strangler_proxy.config import Mode, load_config, load_config_text
from strangler_proxy.errors import ConfigErrors

GOOD = """
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  ratings: {url: "http://127.0.0.1:8101"}
routes:
  - name: title-ratings
    path: /api/titles/{id}/ratings
    mode: shadow
    target: ratings
"""


def test_good_config_loads() -> None:
    cfg = load_config_text(GOOD)
    assert cfg.routes[0].mode is Mode.SHADOW
    assert cfg.proxy.default_upstream == "legacy"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("upstreams:\n  legacy: {url: 'http://x'}\nroutes:\n  - name: a\n    path: /a\n    mode: shaddow\n",
         "s.yaml:6: routes[0].mode"),
        ("upstreams:\n  legacy: {url: 'http://x'}\nroutes:\n  - name: a\n    path: /a\n    colour: red\n",
         "s.yaml:6: routes[0].colour: unknown field"),
        ("upstreams:\n  legacy: {url: 'http://x'}\nroutes:\n  - name: a\n    path: /a\n    mode: shadow\n    target: nope\n",
         "s.yaml:7: routes[0].target: 'nope' is not an upstream"),
        ("upstreams:\n  legacy: {url: 'ftp://x'}\n", "s.yaml:2: upstreams.legacy.url: must be an http"),
        ("upstreams: [\n", "s.yaml:2: upstreams: not valid YAML: line 2, column 1: while parsing a flow node, expected"),
        ("upstreams:\n  legacy: {url: 'http://x'}\ncompare:\n  ignore: [foo]\n",
         "s.yaml:3: compare: path 'foo' must start with '$'"),
        ("", "the file is empty"),
        ("upstreams:\n  legacy: {url: 'http://x'}\nroutes:\n  - name: a\n    path: /a/{id}\n    partition_key: path:nope\n    mode: canary\n    target: legacy\n",
         "routes[0]: partition_key 'path:nope': the path has no {nope}"),
    ],
)
def test_bad_configs_name_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, file="s.yaml")
    assert expected in str(info.value)


def test_missing_file_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigErrors, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
