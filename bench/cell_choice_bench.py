"""What choosing the cell costs, in-process: the steps the data plane takes per
request when the config has a ``cells:`` section (16 cells keyed by a header,
10,000 tenants in turn), each timed alone by ``time.process_time`` over the same
requests and less the loop's own cost, three rounds:

* ``key``: the partition key from the request's headers (aiohttp's own header type);
* ``assign``: the key's cell (pins, then the slot's owner: one hash);
* ``route``: the route in the cell's table (``Tables.for_cell(cell).get``);
* ``upstream``: the cell's copy of the upstream (``CellTable.upstream``).

It also times building the table (which cell owns each of the 16,384 slots),
paid once per set of cells and weights when a config is loaded. The whole-proxy
comparison is ``bench/proxy_bench.py --only cells`` (docs/proxy.md "Choosing
the cell"): it also counts what spreading requests over the cells' upstream
pools costs, which is not the choice.

    .venv/bin/python bench/cell_choice_bench.py [--requests N] [--cells N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strangler_proxy.config import load_config_text  # noqa: E402
from strangler_proxy.routing.cells import CellTable, _slot_owners, build_tables, cell_upstream  # noqa: E402

TENANTS = 10_000


def config_text(cells: int) -> str:
    listed = "".join(f'    - {{name: c{i}, upstreams: {{legacy: "http://127.0.0.1:{9000 + i}"}}}}\n'
                     for i in range(cells))
    return f"""
upstreams: {{legacy: {{url: "http://127.0.0.1:8999"}}}}
routes: [{{name: bench, path: "/bench/{{*rest}}", target: legacy, mode: legacy}}]
cells:
  partition_key: header:X-Tenant
  cells:
{listed}"""


def per_request_us(step: Callable[[int], object], n: int) -> float:
    start = time.process_time()
    for i in range(n):
        step(i)
    return (time.process_time() - start) / n * 1e6


def main(requests: int, cells: int) -> None:
    config = load_config_text(config_text(cells))
    assert config.cells is not None
    weights = tuple((c.name, c.weight) for c in config.cells.cells)
    _slot_owners.cache_clear()
    start = time.process_time()
    _slot_owners(weights)
    print(f"building the slot table of {cells} cells: {(time.process_time() - start) * 1000:.0f} ms (once per config)")

    table = CellTable(config.cells)
    tables = build_tables(config, {})
    route = tables.table.get("bench")
    assert route is not None
    heads = [CIMultiDictProxy(CIMultiDict({"Host": "127.0.0.1", "User-Agent": "wrk", "X-Tenant": f"tenant-{t}"}))
             for t in range(TENANTS)]
    keys = [f"tenant-{t}" for t in range(TENANTS)]
    placed = [table.cell_of(k) for k in keys]
    nothing: dict[str, str] = {}
    upstreams = config.upstreams

    steps: dict[str, Callable[[int], object]] = {
        "key": lambda i: table.key(nothing, heads[i % TENANTS], "id=1"),
        "assign": lambda i: table.assign(keys[i % TENANTS]),
        "route": lambda i: tables.for_cell(placed[i % TENANTS]).get(route.name) or route,
        "upstream": lambda i: cell_upstream(upstreams, "legacy", placed[i % TENANTS]),
    }

    def all_of_them(i: int) -> object:
        cell = table.assign(table.key(nothing, heads[i % TENANTS], "id=1"))
        return tables.for_cell(cell).get(route.name) or route, cell_upstream(upstreams, "legacy", cell)

    def loop_only(i: int) -> object:
        return heads[i % TENANTS]

    for round_ in range(3):
        base = per_request_us(loop_only, requests)
        parts = {name: per_request_us(step, requests) - base for name, step in steps.items()}
        whole = per_request_us(all_of_them, requests) - base
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {us:.2f}" for name, us in parts.items())
              + f"; all together {whole:.2f} us a request")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300_000)
    ap.add_argument("--cells", type=int, default=16)
    args = ap.parse_args()
    main(args.requests, args.cells)
