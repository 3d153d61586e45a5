"""Partition keys for ``strangler traffic`` when the config has cells.

A plan knows nothing of cells (the demo's is the same with or without them);
this module keys it from the config alone:

- :func:`cell_keys` -- a key set in which every cell has keys of its own:
  ``tenant-1``, ``tenant-2``, ... taken in order until each cell that hashed
  keys can reach owns at least :data:`MIN_KEYS_PER_CELL` of them and there are
  at least :data:`MIN_KEYS` in all, plus every pinned key. Drawn uniformly,
  they give each cell about its weight's share of the requests.
- :class:`KeyedPlan` -- a plan whose every request carries one of those keys
  where ``cells.partition_key`` says (a header, a query parameter or a cookie),
  drawn by a seeded generator: the same seed, the same keys. A request the
  plan already keyed itself is sent as planned.

A key taken from the path (``path:NAME``) or from a GraphQL argument
(``arg:NAME``) is the request's own: it cannot be added to a request, so such a
config's traffic is sent as planned (:func:`key_placement` says why).

    >>> from strangler_proxy.config import load_config_text
    >>> from strangler_proxy.routing.cells import CellTable
    >>> from strangler_proxy.stack.traffic import PlannedRequest
    >>> cfg = load_config_text('''
    ... upstreams: {legacy: {}}
    ... cells: {partition_key: "header:X-Tenant", cells: [
    ...   {name: c1, upstreams: {legacy: "http://127.0.0.1:1"}}, {name: c2, upstreams: {legacy: "http://127.0.0.1:2"}}]}
    ... ''')
    >>> table = CellTable(cfg.cells)
    >>> keys = cell_keys(table)
    >>> len(keys) >= MIN_KEYS and {table.cell_of(k) for k in keys} == {"c1", "c2"}
    True
    >>> keyed(PlannedRequest("title", "GET", "/api/titles"), "header:X-Tenant", "tenant-3").headers
    (('X-Tenant', 'tenant-3'),)
    >>> keyed(PlannedRequest("title", "GET", "/api/search?q=x"), "query:tenant", "a b").path
    '/api/search?q=x&tenant=a%20b'
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from urllib.parse import quote

import httpx

from strangler_proxy.routing.canary import cookie_value, query_value
from strangler_proxy.routing.cells import SLOTS, CellTable
from strangler_proxy.stack.traffic import PlannedRequest, TrafficPlan

KEY_PREFIX = "tenant-"
MIN_KEYS = 64
MIN_KEYS_PER_CELL = 4
# A cell that owns one slot of 16,384 needs ~16,384 candidates a key; a bound, never reached by sane weights.
MAX_CANDIDATES = SLOTS * MIN_KEYS_PER_CELL * 16
ADDABLE = ("header", "query", "cookie")


def key_placement(spec: str) -> str | None:
    """None when a key can be added to any request by ``spec``; else why not.

    >>> key_placement("header:X-Tenant") is None
    True
    >>> key_placement("path:id")
    "path:id is part of each request's own path: requests are sent as planned"
    """
    kind = spec.partition(":")[0]
    if kind in ADDABLE:
        return None
    where = "path" if kind == "path" else "GraphQL arguments"
    return f"{spec} is part of each request's own {where}: requests are sent as planned"


def cell_keys(table: CellTable, *, minimum: int = MIN_KEYS, per_cell: int = MIN_KEYS_PER_CELL) -> tuple[str, ...]:
    """Keys such that every cell gets traffic: the pinned keys, then ``tenant-1``, ... (see the module)."""
    reachable = {cell for cell, share in table.shares().items() if share > 0}
    keys = list(table.pins)
    counts = Counter(table.cell_of(k) for k in keys)
    n = 0
    while len(keys) < minimum or any(counts[cell] < per_cell for cell in reachable):
        n += 1
        if n > MAX_CANDIDATES:
            short = sorted(cell for cell in reachable if counts[cell] < per_cell)
            raise ValueError(f"cells {', '.join(short)} own too few slots to find {per_cell} keys each "
                             f"among {MAX_CANDIDATES} (check cells[].weight)")
        key = f"{KEY_PREFIX}{n}"
        if key in table.pins:
            continue
        cell = table.cell_of(key)
        if counts[cell] < per_cell or len(keys) < minimum:
            keys.append(key)
            counts[cell] += 1
    return tuple(keys)


def has_key(request: PlannedRequest, spec: str) -> bool:
    """Whether the plan keyed ``request`` itself (by ``spec``: a header, query parameter or cookie)."""
    kind, _, name = spec.partition(":")
    if kind == "query":
        return query_value(request.path.partition("?")[2], name) is not None
    headers = [(k.lower(), v) for k, v in request.headers]
    if kind == "header":
        return any(k == name.lower() for k, _v in headers)
    return any(cookie_value(v, name) is not None for k, v in headers if k == "cookie")


def keyed(request: PlannedRequest, spec: str, key: str) -> PlannedRequest:
    """``request`` carrying ``key`` where ``spec`` (header:, query:, cookie:) says; as is when it has one."""
    if has_key(request, spec):
        return request
    kind, _, name = spec.partition(":")
    if kind == "header":
        return replace(request, headers=(*request.headers, (name, key)))
    if kind == "query":
        sep = "&" if "?" in request.path else "?"
        return replace(request, path=f"{request.path}{sep}{quote(name, safe='')}={quote(key, safe='')}")
    if kind == "cookie":
        cookie = f"{name}={key}"
        for i, (k, v) in enumerate(request.headers):
            if k.lower() == "cookie":
                headers = (*request.headers[:i], (k, f"{v}; {cookie}"), *request.headers[i + 1:])
                return replace(request, headers=headers)
        return replace(request, headers=(*request.headers, ("Cookie", cookie)))
    raise ValueError(key_placement(spec))


@dataclass(frozen=True, slots=True)
class KeyedPlan:
    """``plan``'s requests, each with a key of ``keys`` drawn by ``seed`` (see the module)."""

    plan: TrafficPlan
    spec: str  # cells.partition_key: header:NAME, query:NAME or cookie:NAME
    keys: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        problem = key_placement(self.spec)
        if problem is not None or not self.keys:
            raise ValueError(problem or "no keys to send")

    def requests(self) -> Iterator[PlannedRequest]:
        rng = random.Random(f"keys:{self.seed}")  # apart from the plan's own draws
        for request in self.plan.requests():
            yield keyed(request, self.spec, rng.choice(self.keys))

    def spread(self, table: CellTable) -> Mapping[str, int]:
        """How many of the keys each cell owns, in the cells' order."""
        counts = Counter(table.cell_of(k) for k in self.keys)
        return {cell: counts[cell] for cell in table.names}


@contextmanager
def carrying(client: httpx.AsyncClient, spec: str, key: str) -> Iterator[None]:
    """``client`` sends ``key`` (header:, query:, cookie:) with every request inside the block:
    what a plan factory asks the app before the run reaches a cell, even one that refuses
    requests without a key (``cells.unkeyed: refuse``)."""
    kind, _, name = spec.partition(":")
    if kind not in ADDABLE:
        yield
        return
    headers, params, cookies = client.headers.copy(), client.params, httpx.Cookies(client.cookies)
    if kind == "header":
        client.headers[name] = key
    elif kind == "query":
        client.params = client.params.set(name, key)
    else:
        client.cookies.set(name, key)
    try:
        yield
    finally:
        client.headers, client.params, client.cookies = headers, params, cookies
