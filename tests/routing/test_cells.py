"""Cell placement: spread by weight, stable across processes, minimal movement, pins, bad configs."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from strangler_proxy.config import StranglerConfig, load_config_text
from strangler_proxy.errors import ConfigErrors
from strangler_proxy.routing import cells as cells_module
from strangler_proxy.routing.cells import CellTable

KEYS = [f"tenant-{i}" for i in range(10_000)]


def cells_config(cells: dict[str, float], *, pins: str = "{}", unkeyed: str = "refuse") -> StranglerConfig:
    listed = "".join(
        f'    - {{name: {name}, weight: {w}, upstreams: {{legacy: "http://127.0.0.1:{8001 + i}"}}}}\n'
        for i, (name, w) in enumerate(cells.items())
    )
    return load_config_text(f"""
upstreams: {{legacy: {{timeout_s: 3}}}}
cells:
  partition_key: header:X-Tenant
  unkeyed: {unkeyed}
  pins: {pins}
  cells:
{listed}""")


def table(cells: dict[str, float], **kw: str) -> CellTable:
    config = cells_config(cells, **kw)
    assert config.cells is not None
    return CellTable(config.cells)


@pytest.mark.parametrize("weights", [{"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2, "c": 5}, {"a": 3, "b": 1}])
def test_keys_spread_within_three_points_of_the_weights(weights: dict[str, float]) -> None:
    t = table(weights)
    counts = Counter(t.cell_of(k) for k in KEYS)
    total = sum(weights.values())
    for name, w in weights.items():
        assert abs(counts[name] / len(KEYS) - w / total) <= 0.03, (name, counts)


def test_adding_a_fourth_cell_moves_about_a_quarter_and_only_onto_it() -> None:
    three = table({"a": 1, "b": 1, "c": 1})
    four = table({"a": 1, "b": 1, "c": 1, "d": 1})
    moved = [(three.cell_of(k), four.cell_of(k)) for k in KEYS if three.cell_of(k) != four.cell_of(k)]
    assert all(after == "d" for _, after in moved)
    assert 0.25 - 0.05 <= len(moved) / len(KEYS) <= 0.25 + 0.02


def test_removing_a_cell_moves_only_its_keys() -> None:
    three = table({"a": 1, "b": 1, "c": 1})
    two = table({"a": 1, "c": 1})
    for k in KEYS:
        if three.cell_of(k) != "b":
            assert two.cell_of(k) == three.cell_of(k)


def test_pins_win_and_unkeyed_follows_the_policy() -> None:
    t = table({"a": 1, "b": 1}, pins="{acme: b, globex: a}", unkeyed="a")
    assert t.cell_of("acme") == "b" and t.cell_of("globex") == "a"
    assert t.explain("acme").why == "pinned (cells.pins)"
    assert t.assign(None) == "a"
    refusing = table({"a": 1, "b": 1})
    assert refusing.assign(None) is None
    assert "refused" in refusing.explain(None).why


def test_a_key_maps_identically_in_another_process() -> None:
    here = [table({"a": 1, "b": 2, "c": 1}).cell_of(k) for k in KEYS[:300]]
    code = (
        "from tests.routing.test_cells import table, KEYS\n"
        "print(','.join(table({'a': 1, 'b': 2, 'c': 1}).cell_of(k) for k in KEYS[:300]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=".")
    assert out.stdout.strip().split(",") == here


def test_a_zero_weight_cell_takes_only_its_pins() -> None:
    t = table({"a": 1, "b": 0}, pins="{big: b}")
    assert {t.cell_of(k) for k in KEYS[:2000]} == {"a"}
    assert t.cell_of("big") == "b"


ROUTES = """
upstreams: {legacy: {}, ratings: {}}
routes: [{name: ratings, path: "/api/titles/{id}/ratings", target: ratings, mode: shadow}]
"""


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        pytest.param("""
cells:
  partition_key: header:X-Tenant
  cells:
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}
    - {name: c2, upstreams: {legacy: "http://127.0.0.1:3"}}
""", "s.yaml:9: cells.cells[1].upstreams: cell 'c2' has no URL for ratings", id="missing-upstream"),
        pytest.param("""
cells:
  partition_key: header:X-Tenant
  cells:
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2", nope: "http://x:1"}}
""", "s.yaml:8: cells.cells[0].upstreams.nope: 'nope' is not an upstream", id="unknown-upstream"),
        pytest.param("""
cells:
  partition_key: header:X-Tenant
  pins: {acme: c9}
  cells:
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}
""", "s.yaml:7: cells.pins.acme: 'c9' is not a cell", id="pin-to-unknown"),
        pytest.param("""
cells:
  partition_key: header:X-Tenant
  cells:
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}
""", "s.yaml:9: cells.cells[1].name: 'c1' is used by cells[0]", id="duplicate"),
        pytest.param("""
cells:
  partition_key: header:X-Tenant
  cells:
    - {name: c1, weight: 0, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}
""", "s.yaml:7: cells.cells: the weights add up to 0", id="zero-weight"),
        pytest.param("""
cells:
  partition_key: header:X-Tenant
  unkeyed: c7
  cells:
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}
""", "s.yaml:7: cells.unkeyed: 'c7': 'refuse' or a cell", id="unkeyed-unknown"),
        pytest.param("""
cells:
  partition_key: body:tenant
  cells:
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}
""", "s.yaml:6: cells.partition_key: must be header:NAME", id="bad-key"),
    ],
)
def test_bad_cells_are_refused_with_file_line_and_field(cells: str, expected: str) -> None:
    with pytest.raises(ConfigErrors) as exc:
        load_config_text(ROUTES + cells, file="s.yaml")
    assert expected in str(exc.value), str(exc.value)


def test_without_cells_an_upstream_needs_a_url() -> None:
    with pytest.raises(ConfigErrors) as exc:
        load_config_text(ROUTES, file="s.yaml")
    assert "s.yaml:2: upstreams.legacy: give url" in str(exc.value)


def test_each_cell_gets_its_own_copy_of_every_upstream() -> None:
    config = load_config_text(ROUTES + """
cells:
  partition_key: header:X-Tenant
  cells:
    - {name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: {endpoints: [{url: "http://127.0.0.1:2"}]}}}
    - {name: c2, upstreams: {legacy: "http://127.0.0.1:3", ratings: "http://127.0.0.1:4"}}
""")
    assert sorted(config.upstreams) == ["legacy@c1", "legacy@c2", "ratings@c1", "ratings@c2"]
    assert config.upstreams["ratings@c2"].primary_url == "http://127.0.0.1:4"


def test_assign_remembers_keys_without_changing_an_answer_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cells_module, "SEEN_KEYS", 100)
    t = table({"a": 1, "b": 2, "c": 1}, pins="{acme: a}")
    for _ in range(2):  # the second pass answers from the memo; a flood of 1,000 keys empties it as it goes
        assert [t.assign(k) for k in KEYS[:1000]] == [t.cell_of(k) for k in KEYS[:1000]]
        assert t.assign("acme") == "a"
    assert len(t._seen) <= 100
