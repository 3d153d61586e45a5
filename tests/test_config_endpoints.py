"""``upstreams.<name>``: one ``url`` or several ``endpoints`` (zone, priority,
weight), health checks, outlier detection, retries, header rules -- what loads,
with which defaults, and every bad file refused naming its file, line and field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from strangler_proxy.config import DEFAULT_ZONE, UpstreamConfig, load_config_text
from strangler_proxy.errors import ConfigErrors

TWO_ZONES = """
upstreams:
  legacy:
    endpoints:
      - {url: "http://127.0.0.1:8001/", zone: zone-a}
      - {url: "http://127.0.0.1:8002", zone: zone-b, weight: 3}
      - {url: "http://10.0.0.9:8001", zone: dr, priority: 1}
    health: {path: /healthz}
    headers: {set: {Authorization: "Bearer ${T_TOKEN}"}, remove: [Cookie]}
  ratings: {url: "http://127.0.0.1:8101"}
"""


def test_endpoints_load_with_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", "t0k")
    config = load_config_text(TWO_ZONES)
    legacy, ratings = config.upstreams["legacy"], config.upstreams["ratings"]
    assert [(e.url, e.zone, e.priority, e.weight) for e in legacy.endpoint_list] == [
        ("http://127.0.0.1:8001", "zone-a", 0, 1), ("http://127.0.0.1:8002", "zone-b", 0, 3),
        ("http://10.0.0.9:8001", "dr", 1, 1)]
    assert legacy.primary_url == "http://127.0.0.1:8001"
    assert legacy.health is not None and (legacy.health.interval_s, legacy.health.timeout_s) == (5.0, 1.0)
    assert (legacy.health.healthy_after, legacy.health.unhealthy_after) == (2, 3)
    assert (legacy.outlier.consecutive_failures, legacy.outlier.max_ejected_percent) == (5, 50.0)
    assert (legacy.retries.budget_percent, legacy.retries.window_s, legacy.failover_threshold) == (20.0, 10.0, 0.7)
    assert legacy.headers.resolved() == (("Authorization", "Bearer t0k"),)
    # the url shorthand is one endpoint in the default zone, no health checks, no header rules
    [one] = ratings.endpoint_list
    assert (one.url, one.zone, one.priority, one.weight) == ("http://127.0.0.1:8101", DEFAULT_ZONE, 0, 1)
    assert ratings.health is None and ratings.headers.resolved() == ()


def upstream(body: str) -> str:
    return "upstreams:\n  legacy:\n" + body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(upstream('    endpoints:\n      - {url: "http://127.0.0.1:8001"}\n      - {url: "127.0.0.1:8002"}\n'),
                     "s.yaml:5: upstreams.legacy.endpoints[1].url: must be an http:// or https:// URL", id="bad-url"),
        pytest.param(upstream('    endpoints:\n      - {url: "http://127.0.0.1:8001", zone: a}\n'
                              '      - {url: "http://127.0.0.1:8001/", zone: b}\n'),
                     "s.yaml:5: upstreams.legacy.endpoints[1].url: http://127.0.0.1:8001 is listed twice "
                     "(also endpoints[0])", id="duplicate"),
        pytest.param(upstream('    endpoints:\n      - {url: "http://127.0.0.1:8001"}\n'
                              '      - {url: "http://127.0.0.1:8002", priority: 2}\n'),
                     "s.yaml:5: upstreams.legacy.endpoints[1].priority: priorities are 0, 1, 2, ... without a gap",
                     id="priority-gap"),
        pytest.param(upstream('    endpoints:\n      - {url: "http://127.0.0.1:8001", priority: 1}\n'),
                     "s.yaml:4: upstreams.legacy.endpoints[0].priority: priorities are 0, 1, 2", id="no-priority-0"),
        pytest.param(upstream('    url: "http://127.0.0.1:8001"\n    health: {path: healthz}\n'),
                     "s.yaml:4: upstreams.legacy.health.path: must be a path starting with /", id="health-path"),
        pytest.param(upstream('    url: "http://127.0.0.1:8001"\n    headers:\n'
                              '      set: {Authorization: "Bearer ${STRANGLER_T_UNSET}"}\n'),
                     "s.yaml:5: upstreams.legacy.headers.set: Authorization: the environment variable "
                     "STRANGLER_T_UNSET is not set", id="unset-env"),
        pytest.param(upstream('    url: "http://127.0.0.1:8001"\n    endpoints: [{url: "http://127.0.0.1:8002"}]\n'),
                     "s.yaml:2: upstreams.legacy: give url (one endpoint) or endpoints (several), not both",
                     id="url-and-endpoints"),
        pytest.param(upstream("    timeout_s: 3\n"),
                     "s.yaml:2: upstreams.legacy: give url (one endpoint) or endpoints (several); only an upstream "
                     "every cell gives may leave both out", id="neither"),
        pytest.param(upstream("    endpoints: []\n"), "s.yaml:2: upstreams.legacy: give url", id="no-endpoints"),
        pytest.param(upstream('    url: "http://127.0.0.1:8001"\n    headers: {remove: [Content-Length]}\n'),
                     "s.yaml:4: upstreams.legacy.headers.remove: Content-Length is the proxy's to set", id="framing"),
        pytest.param(upstream('    url: "http://127.0.0.1:8001"\n    headers: {set: {X-Strangler-Dry-Run: "0"}}\n'),
                     "s.yaml:4: upstreams.legacy.headers.set: X-Strangler-Dry-Run is the proxy's to set",
                     id="control-header"),
        pytest.param(upstream('    url: "http://127.0.0.1:8001"\n    headers: {set: {"Bad Name": "x"}}\n'),
                     "s.yaml:4: upstreams.legacy.headers.set: 'Bad Name' is not a header name", id="header-name"),
        pytest.param(upstream('    endpoints: [{url: "http://127.0.0.1:8001", weight: 0}]\n'),
                     "s.yaml:3: upstreams.legacy.endpoints[0].weight", id="weight"),
        pytest.param(upstream('    url: "http://127.0.0.1:8001"\n    outlier: {max_ejected_percent: 120}\n'),
                     "s.yaml:4: upstreams.legacy.outlier.max_ejected_percent", id="ejected-percent"),
    ],
)
def test_bad_upstreams_name_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigErrors) as exc:
        load_config_text(text, file="s.yaml")
    assert expected in str(exc.value), str(exc.value)


def test_a_secret_with_a_line_break_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", "a\r\nX-Injected: 1")
    with pytest.raises(ConfigErrors, match=r"s.yaml:4: upstreams.legacy.headers.set: Authorization: the environment "
                                           r"variable T_TOKEN holds a line break"):
        load_config_text(upstream('    url: "http://x"\n    headers: {set: {Authorization: "${T_TOKEN}"}}\n'),
                         file="s.yaml")


def test_every_problem_of_a_file_is_named_at_once() -> None:
    text = upstream('    endpoints:\n      - {url: "http://127.0.0.1:8001"}\n      - {url: "http://127.0.0.1:8001"}\n'
                    '      - {url: "http://127.0.0.1:8003", priority: 3}\n')
    with pytest.raises(ConfigErrors) as exc:
        load_config_text(text, file="s.yaml")
    assert [(e.line, e.field) for e in exc.value.errors] == [
        (5, "upstreams.legacy.endpoints[1].url"), (6, "upstreams.legacy.endpoints[2].priority")]


def test_a_model_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValidationError, match=r"endpoints\[1\].url: http://a is listed twice"):
        UpstreamConfig(endpoints=({"url": "http://a"}, {"url": "http://a"}))  # type: ignore[arg-type]
