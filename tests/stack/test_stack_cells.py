"""`strangler up --cells N`: N copies of the demo stack behind one proxy.

The repo's strangler.yaml (its ports moved to a free loopback range, data in
tmp_path, a 20-title catalogue) is turned into a two-cell config by the
function behind ``strangler up --cells 2`` and run whole with ``run_stack``:
two monoliths, two sets of services and sync workers, each with SQLite files
of its own, and one proxy that sends each X-Tenant key to its cell.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import random
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from extracted_services.common import monolith_tables as mono
from extracted_services.ratings import models as ratings_models
from extracted_services.ratings import settings as ratings_settings
from strangler_proxy.cli.main import _register_all, app
from strangler_proxy.cli.stack_commands import taken_ports, up_components, write_cells_config
from strangler_proxy.config import load_config, load_config_text
from strangler_proxy.databases import make_engine
from strangler_proxy.errors import ConfigError
from strangler_proxy.routing.cells import CellTable
from strangler_proxy.stack import cells as stack_cells
from strangler_proxy.stack import keys as stack_keys
from strangler_proxy.stack import registry as stack_registry
from strangler_proxy.stack.cells import cell_ports, cells_config_text, port_block
from strangler_proxy.stack.components import StackOptions, run_stack
from strangler_proxy.stack.keys import KeyedPlan, carrying, cell_keys, key_placement, keyed
from strangler_proxy.stack.registry import cell_database_url, load_stack, one_stack
from strangler_proxy.stack.traffic import PlannedRequest

_register_all()
REPO = Path(__file__).resolve().parents[2]
TITLES = 20
ADMIN_TOKEN = "dev-admin-token"  # strangler.yaml's local development token
ENV_OVERRIDES = (
    "STRANGLER_DATABASE_URL", "STRANGLER_MONOLITH_DATABASE_URL", "STRANGLER_CONTROL_DATABASE_URL",
    "STRANGLER_RATINGS_DATABASE_URL", "STRANGLER_CREDITS_DATABASE_URL", "STRANGLER_IMAGES_DATABASE_URL",
    "STRANGLER_ADMIN_TOKEN", "STRANGLER_ADMIN_URL", "RATINGS_ROUNDING",
)
# The shipped file's ports: the apps' (moved together so the stack keeps its shape), then the proxy's.
APP_PORTS = (8001, 8101, 8102, 8103)
VOTER = "cells-test-user"


# ------------------------------------------------------------------ the config
@pytest.mark.parametrize("module", [stack_cells, stack_keys, stack_registry, ratings_settings])
def test_the_examples_in_the_docstrings_hold(module: ModuleType) -> None:
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


def test_the_shipped_file_becomes_three_cells_on_the_documented_ports() -> None:
    text = cells_config_text((REPO / "strangler.yaml").read_text(), 3)
    config = load_config_text(text)
    assert config.cells is not None
    assert (config.cells.names, config.cells.partition_key, config.cells.unkeyed) == (
        ("c1", "c2", "c3"), "header:X-Tenant", "c1")
    # cell k: the file's ports + k * 2000 (the stack spans 8001-9111: apps and sync metrics)
    assert {name: up.url for name, up in config.upstreams.items()} == {
        f"{name}@c{k}": f"http://127.0.0.1:{port + 2000 * k}"
        for k in (1, 2, 3) for name, port in zip(("legacy", "ratings", "credits", "images"), APP_PORTS, strict=True)
    }
    ports = cell_ports(config)
    assert ports[:7] == [(10001, "monolith@c1"), (10101, "ratings@c1"), (10102, "credits@c1"), (10103, "images@c1"),
                         (11101, "sync ratings@c1 /metrics"), (11111, "sync ratings@c1 (reverse) /metrics"),
                         (11102, "sync credits@c1 /metrics")]
    assert len({p for p, _ in ports}) == len(ports) == 21
    # The rest of the file is as written: routes, GraphQL, the proxy's ports, the stack.
    base = load_config(REPO / "strangler.yaml")
    assert config.routes == base.routes and config.graphql == base.graphql and config.proxy == base.proxy
    assert config.stack == base.stack
    assert load_stack(config, "c2").app("ratings").port == 12101


def test_refused_cells_requests_say_why(tmp_path: Path) -> None:
    shipped = (REPO / "strangler.yaml").read_text()
    with pytest.raises(ConfigError, match="already has a cells: section"):
        cells_config_text(cells_config_text(shipped, 2), 2)
    with pytest.raises(ConfigError, match="between 1 and"):
        cells_config_text(shipped, 0)
    with pytest.raises(ConfigError, match="at most 28 cells fit"):
        cells_config_text(shipped, 29)  # 9111 + 29 * 2000 is no port
    assert len(cell_ports(load_config_text(cells_config_text(shipped, 28)))) == 28 * 7
    assert port_block([20001, 20101, 21111]) == 2000
    config = load_config_text(cells_config_text(shipped, 2))
    with pytest.raises(ConfigError, match=r"has cells \(c1, c2\): say which with --cell"):
        one_stack(config, None)
    with pytest.raises(ConfigError, match="no such cell 'c9'"):
        one_stack(config, "c9")
    with pytest.raises(ConfigError, match="runs once per cell"):
        _ = load_stack(config).app("ratings").port
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        assert taken_ports([(port, "monolith@c1")], "127.0.0.1") == [f"{port} (monolith@c1)"]


def test_each_cell_owns_databases_of_its_own(tmp_path: Path) -> None:
    config = load_config_text(cells_config_text((REPO / "strangler.yaml").read_text(), 2)
                              + f"databases: {{ratings@c2: 'sqlite+aiosqlite:///{tmp_path}/r2.db'}}\n")
    data = f"sqlite+aiosqlite:///{tmp_path}/data"
    urls = {(name, cell): cell_database_url(config, name, cell) for name in ("monolith", "ratings") for cell in ("c1", "c2")}
    assert urls[("monolith", "c1")] == f"{data}/cells/c1/monolith.sqlite3"
    assert urls[("monolith", "c2")] == f"{data}/cells/c2/monolith.sqlite3"
    assert urls[("ratings", "c2")] == f"sqlite+aiosqlite:///{tmp_path}/r2.db"  # the file names one: it wins
    assert load_stack(config, "c1").database_url(config, "ratings") == f"{data}/cells/c1/ratings.sqlite3"


@pytest.fixture(autouse=True)
def _data_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "data").mkdir(exist_ok=True)
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(tmp_path / "data"))


# ------------------------------------------------------------------ traffic keys
def test_traffic_keys_reach_every_cell_by_weight_and_pins_win() -> None:
    config = load_config_text("""
upstreams: {legacy: {}}
cells:
  partition_key: header:X-Tenant
  pins: {acme: c1}
  cells:
    - {name: c1, weight: 1, upstreams: {legacy: "http://127.0.0.1:1"}}
    - {name: c2, weight: 1, upstreams: {legacy: "http://127.0.0.1:2"}}
    - {name: c3, weight: 2, upstreams: {legacy: "http://127.0.0.1:3"}}
    - {name: c4, weight: 0.01, upstreams: {legacy: "http://127.0.0.1:4"}}
""")
    assert config.cells is not None
    table = CellTable(config.cells)
    keys = cell_keys(table)
    assert keys[0] == "acme" and len(keys) == len(set(keys))
    owners = [table.cell_of(k) for k in keys]
    assert all(owners.count(cell) >= 4 for cell in table.names)  # even a tiny cell gets keys
    assert owners.count("c3") > owners.count("c1") and owners.count("c3") > owners.count("c2")

    class Same:
        def requests(self):  # type: ignore[no-untyped-def]
            while True:
                yield PlannedRequest("title", "GET", "/api/titles/tt0000001")

    def sent(seed: int) -> list[str]:
        plan = KeyedPlan(Same(), "header:X-Tenant", keys, seed)
        it = plan.requests()
        return [dict(next(it).headers)["X-Tenant"] for _ in range(2000)]

    first = sent(1)
    assert first == sent(1) and first != sent(2)  # the same seed, the same keys
    shares = {cell: sum(table.cell_of(k) == cell for k in first) / len(first) for cell in table.names}
    assert all(share > 0.02 for share in shares.values()), shares


def test_a_key_goes_where_the_partition_key_says_and_a_planned_one_stays() -> None:
    plain = PlannedRequest("title", "GET", "/api/titles?limit=1", headers=(("Cookie", "a=1"),))
    assert keyed(plain, "header:X-Tenant", "t1").headers == (("Cookie", "a=1"), ("X-Tenant", "t1"))
    assert keyed(plain, "query:tenant", "t 1").path == "/api/titles?limit=1&tenant=t%201"
    assert keyed(plain, "cookie:tenant", "t1").headers == (("Cookie", "a=1; tenant=t1"),)
    own = PlannedRequest("title", "GET", "/x?tenant=mine", headers=(("x-tenant", "mine"),))
    assert keyed(own, "header:X-Tenant", "t1") is own and keyed(own, "query:tenant", "t1") is own
    assert key_placement("path:id") is not None and key_placement("arg:id") is not None
    with pytest.raises(ValueError, match="path:id"):
        keyed(plain, "path:id", "t1")


async def test_a_plan_factory_asks_the_app_with_a_key() -> None:
    async with httpx.AsyncClient(base_url="http://127.0.0.1:1") as client:
        for spec in ("header:X-Tenant", "query:tenant", "cookie:tenant"):
            with carrying(client, spec, "t1"):
                request = client.build_request("GET", "/api/titles")
                assert "t1" in (request.headers.get("X-Tenant", "") + str(request.url)
                                + request.headers.get("Cookie", ""))
            request = client.build_request("GET", "/api/titles")
            assert "t1" not in str(request.url) and "X-Tenant" not in request.headers and "Cookie" not in request.headers


# ------------------------------------------------------------------ the running cells
def _free_base() -> int:
    """A base port P such that every port two cells of the demo stack use (P-based + 2000k) is free."""
    rng = random.Random()
    for _ in range(40):
        base = rng.randrange(15000, 24000, 10)
        wanted = [base + (p - 8001) + 2000 * k + extra for k in (1, 2) for p in APP_PORTS for extra in (0, 1000, 1010)]
        if not taken_ports([(p, "") for p in wanted], "127.0.0.1"):
            return base
    raise RuntimeError("no free port range for two cells")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_config(tmp_path: Path) -> Path:
    text = (REPO / "strangler.yaml").read_text()
    base = _free_base()
    for default in APP_PORTS:
        text, n = re.subn(rf"127\.0\.0\.1:{default}\b", f"127.0.0.1:{base + default - 8001}", text)
        assert n == 1, default
    for default in (8080, 9901):
        text, n = re.subn(rf"port: {default}\b", f"port: {_free_port()}", text)
        assert n == 1, default
    path = tmp_path / "strangler.yaml"
    path.write_text(text)
    return path


@dataclass
class Cells:
    config: Path  # the generated file
    proxy: str
    admin: str
    started: dict[str, str]  # component -> URL
    table: CellTable

    def url(self, app: str, cell: str) -> str:
        return self.started[f"{app}@{cell}"]

    def key_of(self, cell: str) -> str:
        return next(k for k in (f"tenant-{i}" for i in range(1, 1000)) if self.table.cell_of(k) == cell)


@pytest.fixture
async def cells(tmp_path: Path) -> AsyncIterator[Cells]:
    path = write_cells_config(str(_base_config(tmp_path)), 2)
    assert Path(path) == tmp_path / "data" / "cells" / "strangler.yaml"
    config = load_config(path)
    assert config.cells is not None
    assert not taken_ports(cell_ports(config), "127.0.0.1")
    stop = asyncio.Event()
    ready: list[list[tuple[str, str]]] = []
    task = asyncio.create_task(run_stack(up_components(path, StackOptions(size=TITLES, seed=42)), stop, ready.append))
    try:
        for _ in range(600):
            if ready or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # raise what failed
        assert ready, "the cells did not start within 30 s"
        yield Cells(Path(path), f"http://127.0.0.1:{config.proxy.listen.port}",
                    f"http://127.0.0.1:{config.proxy.admin.port}", dict(ready[0]), CellTable(config.cells))
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def _count(url: str, table: object, **where: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).select_from(table)  # type: ignore[arg-type]
            for column, value in where.items():
                stmt = stmt.where(getattr(table.c, column) == value)  # type: ignore[attr-defined]
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


async def test_two_cells_run_apart_behind_one_proxy(cells: Cells, tmp_path: Path) -> None:
    data = tmp_path / "data" / "cells"
    config = load_config(cells.config)
    names = [f"{app}@{cell}" for cell in ("c1", "c2") for app in ("monolith", "ratings", "credits", "images")]
    assert set(names) <= set(cells.started) and "proxy" in cells.started
    assert "sync ratings@c2 (reverse)" in cells.started
    # Each cell's apps listen where the config's cell upstreams point: distinct ports.
    for cell in ("c1", "c2"):
        assert cells.url("monolith", cell) == config.upstreams[f"legacy@{cell}"].url
        assert cells.url("ratings", cell) == config.upstreams[f"ratings@{cell}"].url
    assert len({cells.url(app, cell) for app in ("monolith", "ratings") for cell in ("c1", "c2")}) == 4
    # Distinct SQLite files, migrated and seeded (and backfilled) in each cell.
    monolith_db = {cell: f"sqlite+aiosqlite:///{data / cell / 'monolith.sqlite3'}" for cell in ("c1", "c2")}
    ratings_db = {cell: f"sqlite+aiosqlite:///{data / cell / 'ratings.sqlite3'}" for cell in ("c1", "c2")}
    async with httpx.AsyncClient(timeout=5) as http:
        for cell in ("c1", "c2"):
            assert (data / cell / "monolith.sqlite3").is_file() and (data / cell / "ratings.sqlite3").is_file()
            listed = (await http.get(f"{cells.url('monolith', cell)}/api/titles", params={"limit": 1})).json()
            assert listed["total"] == TITLES
            assert await _count(ratings_db[cell], ratings_models.titles) == TITLES  # backfilled

        # A vote with c1's key goes to c1's monolith, reads back through c1's keys, reaches
        # c1's ratings database by c1's sync worker -- and nothing of it is in c2.
        c1_key, c2_key = cells.key_of("c1"), cells.key_of("c2")
        title = "tt0000003"
        before = {cell: (await http.get(f"{cells.proxy}/api/titles/{title}/ratings",
                                        headers={"X-Tenant": key})).json()["num_votes"]
                  for cell, key in (("c1", c1_key), ("c2", c2_key))}
        voted = await http.post(f"{cells.proxy}/api/titles/{title}/ratings", headers={"X-Tenant": c1_key},
                                json={"user_id": VOTER, "value": 10})
        assert voted.status_code == 201, voted.text
        other_c1_key = next(k for k in (f"tenant-{i}" for i in range(1, 1000))
                            if cells.table.cell_of(k) == "c1" and k != c1_key)
        after = (await http.get(f"{cells.proxy}/api/titles/{title}/ratings", headers={"X-Tenant": other_c1_key}))
        assert after.json()["num_votes"] == before["c1"] + 1
        unkeyed = (await http.get(f"{cells.proxy}/api/titles/{title}/ratings")).json()  # cells.unkeyed: c1
        assert unkeyed["num_votes"] == before["c1"] + 1
        in_c2 = (await http.get(f"{cells.proxy}/api/titles/{title}/ratings", headers={"X-Tenant": c2_key})).json()
        assert in_c2["num_votes"] == before["c2"]
        assert await _count(monolith_db["c1"], mono.votes, user_id=VOTER) == 1
        assert await _count(monolith_db["c2"], mono.votes, user_id=VOTER) == 0
        for _ in range(100):
            if await _count(ratings_db["c1"], ratings_models.votes, user_id=VOTER):
                break
            await asyncio.sleep(0.05)
        assert await _count(ratings_db["c1"], ratings_models.votes, user_id=VOTER) == 1
        assert await _count(ratings_db["c2"], ratings_models.votes, user_id=VOTER) == 0

        # The demo's divergence, switched off in c2's ratings service alone.
        switched = await http.put(f"{cells.url('ratings', 'c2')}/admin/rounding", json={"rounding": "legacy"})
        assert switched.json() == {"rounding": "legacy"}
        for cell, rounding in (("c1", "one-decimal"), ("c2", "legacy")):
            assert (await http.get(f"{cells.url('ratings', cell)}/admin/rounding")).json() == {"rounding": rounding}
        refused = await http.put(f"{cells.url('ratings', 'c2')}/admin/rounding", json={"rounding": "half-up"})
        assert refused.status_code == 400 and "legacy, one-decimal" in refused.text

    # `strangler traffic` with strangler.yaml (no cells: section) keys its requests by the running
    # proxy's cells (its admin API): both cells get requests through the proxy.
    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "traffic", "--url", cells.proxy, "--rate", "100", "--duration", "1.5", "--json",
        "--config", str(tmp_path / "strangler.yaml")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["errors"] == 0 and summary["cells"]["partition_key"] == "header:X-Tenant"
    assert summary["cells"]["from"].startswith("the proxy's admin API")
    assert min(summary["cells"]["keys_per_cell"].values()) >= 4
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        metrics = (await admin.get(f"{cells.admin}/metrics")).text
    served = {cell: 0.0 for cell in ("c1", "c2")}
    for line in metrics.splitlines():
        found = re.match(r'strangler_proxy_requests_total\{.*cell="(c\d)".*\} ([0-9.e+]+)$', line)
        if found:
            served[found[1]] += float(found[2])
    assert all(n >= 0.2 * summary["sent"] for n in served.values()), (served, summary["sent"])


async def test_backfill_and_sync_address_one_cell(cells: Cells) -> None:
    """The CLI's --cell: c1's verify compares c1's monolith with c1's ratings database, and a
    command without --cell on a file with cells says to name one."""
    async with httpx.AsyncClient(timeout=5) as http:
        voted = await http.post(f"{cells.proxy}/api/titles/tt0000005/ratings", headers={"X-Tenant": cells.key_of("c2")},
                                json={"user_id": VOTER, "value": 3})
        assert voted.status_code == 201
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--config", str(cells.config)])
        return result.exit_code, result.output

    # The running sync workers carry the vote; then each cell's copy verifies against its own monolith.
    for _ in range(100):
        code, out = await asyncio.to_thread(cli, "backfill", "ratings", "--cell", "c2", "--verify-only", "--json")
        if code == 0:
            break
        await asyncio.sleep(0.05)
    assert code == 0 and json.loads(out)["service"] == "ratings@c2", out
    code, out = await asyncio.to_thread(cli, "backfill", "ratings", "--cell", "c1", "--verify-only", "--json")
    assert code == 0 and json.loads(out)["ok"], out
    code, out = await asyncio.to_thread(cli, "backfill", "ratings", "--verify-only")
    assert code == 1 and "say which with --cell" in out
    code, out = await asyncio.to_thread(cli, "sync", "ratings", "--cell", "c3", "--once")
    assert code == 1 and "no such cell 'c3'" in out
    # The generated file's own cells key the traffic too.
    code, out = await asyncio.to_thread(cli, "traffic", "--url", cells.proxy, "--duration", "0.5", "--json")
    assert code == 0 and json.loads(out)["cells"]["from"] == str(cells.config), out
