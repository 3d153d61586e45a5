"""The Grafana dashboard and the Prometheus alert rules in ops/ match what strangler exports.

Every metric their PromQL names must exist in the ``/metrics`` of a real proxy that has carried
traffic (the demo monolith and services behind it: REST routes, the GraphQL gateway, shadows,
a flip, a guardrail rollback) or of a real sync worker that has applied the monolith's outbox.
The rules must parse (``promtool check rules``, and their unit tests pass with ``promtool test
rules``); without promtool, a schema check of the YAML (CI requires promtool:
scripts/ensure-test-services installs Debian's prometheus package for it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from gql_demo import backends_yaml, copy_databases, demo_template, running_demo, upstreams_yaml  # noqa: F401  (fixture)
from prometheus_client.parser import text_string_to_metric_families

from extracted_services.common.registry import service_spec
from strangler_proxy.databases import make_engine
from strangler_proxy.datamove.sync import SyncWorker
from strangler_proxy.server import ProxyServer
from strangler_proxy.stack.runners import SyncRunner

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "strangler.json"
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "ops" / "prometheus" / "alerts_test.yml"
TOKEN = "ops-admin-token"

# ---------------------------------------------------------------- reading PromQL

# Words of PromQL that are not metric names (functions are recognised by their "(").
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                      "bool", "offset", "inf", "nan", "Inf", "NaN"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_DURATION = re.compile(r"(?<![\w.])(?:\d+(?:ms|[smhdwy]))+\b")  # 5m, 1h30m (offset, @)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")  # 0.99, 2e3
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values`` query) reads.

    >>> sorted(metric_names('sum by (route) (rate(a_total{v=~"x|y"}[$__rate_interval])) / on(route) b > 0.5 and c'))
    ['a_total', 'b', 'c']
    >>> metric_names("label_values(strangler_proxy_requests_total, route)")
    {'strangler_proxy_requests_total'}
    """
    found = _LABEL_VALUES.match(expr.strip())
    if found:
        return {found.group(1)}
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _DURATION.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for m in _NAME.finditer(text):
        if m.group(0) in KEYWORDS or text[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group(0))
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target, template variable and annotation."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels") or [])

    for p in panels(dashboard["panels"]):
        for t in p.get("targets") or []:
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            yield f"variable ${v['name']}", q["query"] if isinstance(q, dict) else q
    for a in dashboard["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']!r}", a["expr"]


def rule_queries(rules: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def all_queries() -> list[tuple[str, str]]:
    return [*dashboard_queries(json.loads(DASHBOARD.read_text())), *rule_queries(yaml.safe_load(RULES.read_text()))]


# ---------------------------------------------------------------- the files themselves

def promtool() -> str | None:
    binary = shutil.which("promtool")
    if binary is None and os.environ.get("CI") == "true":
        pytest.fail("promtool is required in CI (scripts/ensure-test-services installs Debian's prometheus)")
    return binary


DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def test_the_rules_file_has_the_shape_prometheus_reads() -> None:
    """The schema check (always; the only one where promtool is missing)."""
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"} and doc["groups"]
    alerts: list[str] = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"] and group["rules"], group
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule
            if "alert" in rule:
                assert re.fullmatch(r"Strangler[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
                assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule
                assert rule["annotations"]["summary"], rule
                assert all(isinstance(v, str) for v in (*rule["labels"].values(), *rule["annotations"].values()))
                alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts)), alerts
    # What the issue asks alerts for, each at least once:
    for metric in ("strangler_shadow_verdicts_total", "strangler_shadow_dropped_total", "strangler_sync_lag_seconds_bucket",
                   "strangler_rollbacks_total", "strangler_flips_total"):
        assert any(metric in metric_names(e) for _, e in rule_queries(doc)), metric
    exprs = [e for _, e in rule_queries(doc)]
    assert any('verdict="mismatch"' in e for e in exprs) and any('verdict="candidate-error"' in e for e in exprs)


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    binary = promtool()
    if binary is None:
        pytest.skip("promtool is not installed (apt-get install prometheus); the schema check above ran")
    done = subprocess.run([binary, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([binary, "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=60,
                          cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int)
    assert {v["name"] for v in d["templating"]["list"]} >= {"datasource", "route", "key"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        cells = {(g["y"] + dy, g["x"] + dx) for dy in range(g["h"]) for dx in range(g["w"])}
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells
        if p["type"] != "row":
            assert p["targets"] and p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    # Every query reads at least one metric, so the existence check below covers it.
    for where, expr in dashboard_queries(d):
        assert metric_names(expr), where


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, Grafana's variables given values, as a recording rule: promtool parses it."""
    binary = promtool()
    if binary is None:
        pytest.skip("promtool is not installed")
    values = {"$__rate_interval": "5m", "$__range": "1h", "$route": ".*", "$key": ".*"}
    rules = []
    for i, (_, expr) in enumerate(dashboard_queries(json.loads(DASHBOARD.read_text()))):
        if expr.startswith("label_values("):
            continue
        for name, value in values.items():
            expr = expr.replace(name, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- against live /metrics

def series_names(text: str) -> tuple[set[str], set[str]]:
    """(every series name the families of a /metrics page can have, those that have samples now)."""
    possible: set[str] = set()
    present: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}
    for family in text_string_to_metric_families(text):
        possible |= {family.name + s for s in suffixes.get(family.type, ("",))}
        present |= {s.name for s in family.samples}
    return possible, present


def config_text(ports: dict[str, int]) -> str:
    ups, backends = upstreams_yaml(ports), backends_yaml(ports)
    return f"""
proxy:
  default_upstream: monolith
  admin_tokens: {{ops: {TOKEN}}}
upstreams:
{ups}
compare:
  ignore: ["$..generated_at", "$..request_id"]
routes:
  - name: ratings
    path: "/api/titles/{{id}}/ratings"
    methods: [GET]
    target: ratings
    mode: shadow
    partition_key: path:id
    guardrails: {{min_samples: 5, window: 20}}
graphql:
  enabled: true
  legacy_backend: monolith
  backends:
{backends}
  fields:
    Title.rating: {{target: ratings, mode: shadow}}
"""


async def wait_for_sample(session: aiohttp.ClientSession, url: str, headers: dict[str, str], sample: str,
                          timeout_s: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            text = await resp.text()
        if sample in text:
            return text
        assert asyncio.get_running_loop().time() < deadline, f"no {sample} in {url}"
        await asyncio.sleep(0.1)


async def test_every_metric_the_dashboard_and_the_rules_use_is_exported(demo_template: Path, tmp_path: Path) -> None:
    dbs = copy_databases(demo_template, tmp_path)
    config = tmp_path / "strangler.yaml"
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_demo(dbs) as demo:
        config.write_text(config_text(demo.ports))
        s = demo.session
        async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
            # Reads (shadowed), GraphQL (a shadowed field), votes (the monolith's outbox), then a flip.
            for i in range(1, 11):
                async with s.get(f"{server.url}/api/titles/tt{i:07d}/ratings") as resp:
                    assert resp.status == 200
                async with s.post(f"{server.url}/graphql",
                                  json={"query": f'{{ title(id: "tt{i:07d}") {{ primaryTitle rating {{ numVotes }} }} }}'}) as resp:
                    assert resp.status == 200
            for i in range(1, 4):
                async with s.post(f"{server.url}/api/titles/tt{i:07d}/ratings",
                                  json={"user_id": f"ops-u{i}", "value": 7}) as resp:
                    assert resp.status in (200, 201), await resp.text()
            async with s.post(f"{server.admin_url}/routes/ratings/flip", headers=auth,
                              json={"mode": "canary", "percent": 50, "reason": "dashboards test"}) as resp:
                assert resp.status == 200, await resp.text()
            # The candidate dies: its share fails, the guardrails roll the route back.
            await demo.servers["ratings"].close()
            for i in range(1, 41):
                async with s.get(f"{server.url}/api/titles/tt{i:07d}/ratings") as resp:
                    await resp.read()
            proxy_text = await wait_for_sample(s, f"{server.admin_url}/metrics", auth,
                                               'strangler_rollbacks_total{route="ratings"}')

        # A sync worker applying the monolith's outbox (the votes above) into the ratings database.
        spec = service_spec("ratings")
        assert spec.datamove is not None
        stream = spec.datamove.stream(reverse=False)
        assert stream is not None
        worker = SyncWorker("ratings", stream, make_engine(dbs["monolith"]), make_engine(dbs["ratings"]))
        runner = SyncRunner(worker, metrics_port=0)
        metrics_url = await runner.start()
        try:
            sync_text = await wait_for_sample(s, metrics_url, {}, "strangler_sync_lag_seconds_bucket{")
        finally:
            await runner.stop()

    proxy_possible, proxy_present = series_names(proxy_text)
    sync_possible, sync_present = series_names(sync_text)
    exported = proxy_possible | sync_possible
    missing = sorted((where, name) for where, expr in all_queries() for name in metric_names(expr) - exported)
    assert not missing, f"used by ops/ but exported by nothing: {missing}"

    # The traffic above really produced what the main panels and alerts read (not just their names).
    for name in ("strangler_proxy_requests_total", "strangler_proxy_client_latency_seconds_bucket",
                 "strangler_proxy_upstream_latency_seconds_count", "strangler_shadow_verdicts_total",
                 "strangler_shadow_submitted_total", "strangler_proxy_upstream_errors_total",
                 "strangler_flips_total", "strangler_rollbacks_total", "strangler_graphql_backend_fetch_seconds_bucket",
                 "strangler_graphql_shadows_total", "strangler_graphql_shaped_total", "strangler_shadow_queue_depth"):
        assert name in proxy_present, name
    assert 'verdict="candidate-error"' in proxy_text and 'verdict="match"' in proxy_text
    for name in ("strangler_sync_lag_seconds_bucket", "strangler_sync_applied_total", "strangler_sync_pending_rows",
                 "strangler_sync_last_lag_seconds"):
        assert name in sync_present, name


def test_metric_names_reads_promql_as_prometheus_does() -> None:
    import doctest

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(metric_names, globs={"metric_names": metric_names}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries == 2
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 2e3") == {"x_bucket"}
    assert metric_names("max by (service) (a) > 0 and sum by (service) (rate(b_total[5m])) == 0") == {"a", "b_total"}
    assert metric_names('x{route=~"$route", verdict="and"} offset 5m') == {"x"}
    assert metric_names("rate(x_total[5m] offset 1h30m) > 1e-3") == {"x_total"}
    assert metric_names("sum(rate(a[$__rate_interval])) / ignoring(x) group_left(y) b unless c") == {"a", "b", "c"}
