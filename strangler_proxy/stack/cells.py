"""``strangler up --cells N``: the file's stack copied into N cells, as a config the proxy runs.

:func:`cells_config_text` reads a ``strangler.yaml`` without a ``cells:``
section and writes the same file with one: cells ``c1`` ... ``cN`` (weight 1
each), every upstream an app of the stack listens on given once per cell, on
ports of its own; the upstreams no app of the stack serves (an external
service) are given to every cell as they are, shared.

**Ports.** Cell ``k`` (1, 2, ...) runs every app where the file runs it, plus
``k`` blocks: ``port + k * block``. The block is the span of the stack's own
ports -- every app copy and every sync worker's ``/metrics`` -- rounded up to
a thousand, so no two cells' ports can meet. The demo's stack spans
8001-9111 (monolith 8001, services 8101-8103, their sync workers' metrics
9101-9111), so its block is 2000: c1's monolith listens on 10001, its ratings
service on 10101 (metrics 11101, reverse 11111); c2's on 12001 and 12101; and
so on. The proxy and its admin API keep the file's ports.
:func:`cell_ports` lists them all; ``strangler up`` checks they are free.

**Keys.** ``cells.partition_key`` is ``header:X-Tenant``: the demo has no
tenant in its paths, and a header reaches REST and GraphQL alike.
``cells.unkeyed`` is the first cell: a request without the header (a curl
line from the README, a GraphQL IDE in a browser, a recording) is served by
c1 instead of refused, so the single-stack walkthrough's commands keep
working; ``strangler traffic`` gives every request a key
(:mod:`strangler_proxy.stack.keys`), so every cell gets its share.

**Databases.** Each cell's apps own databases of their own
(:func:`~strangler_proxy.stack.registry.cell_database_url`: SQLite files in
``<data dir>/cells/<cell>/``), migrated, seeded and backfilled by
``strangler up`` as a single stack's are.

    >>> text = cells_config_text('''
    ... upstreams: {legacy: {url: "http://127.0.0.1:8001", timeout_s: 2}}
    ... stack: {apps: [{name: monolith, command: [./run, "{port}"], upstream: legacy}]}
    ... ''', 2)
    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text(text)
    >>> sorted(cfg.upstreams), cfg.upstreams["legacy@c2"].url, cfg.upstreams["legacy@c2"].timeout_s
    (['legacy@c1', 'legacy@c2'], 'http://127.0.0.1:10001', 2.0)
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import yaml
from yarl import URL

from strangler_proxy.config import StranglerConfig, UpstreamConfig, load_config_text
from strangler_proxy.errors import ConfigError
from strangler_proxy.stack.components import stack_ports
from strangler_proxy.stack.registry import Stack, load_stack
from strangler_proxy.yaml_lines import read_yaml

CELL_PREFIX = "c"  # cells c1, c2, ...
PARTITION_KEY = "header:X-Tenant"
PORT_BLOCK_UNIT = 1000
MAX_PORT = 65535
MAX_CELLS = 64  # more copies of a stack than one machine should run


def cell_names(count: int) -> tuple[str, ...]:
    """``c1`` ... ``c<count>``.

    >>> cell_names(3)
    ('c1', 'c2', 'c3')
    """
    return tuple(f"{CELL_PREFIX}{k}" for k in range(1, count + 1))


def port_block(ports: Iterable[int]) -> int:
    """How far apart two cells' copies of one app listen: the ports' span, rounded up to a thousand.

    >>> port_block([8001, 8101, 8103, 9101, 9111]), port_block([8001])
    (2000, 1000)
    """
    listed = list(ports)
    span = max(listed) - min(listed) + 1
    return max(1, math.ceil(span / PORT_BLOCK_UNIT)) * PORT_BLOCK_UNIT


def _moved(url: str, offset: int) -> str:
    return str(URL(url).with_port(URL(url).port + offset))  # type: ignore[operator]


def _cell_upstream(upstream: UpstreamConfig, offset: int) -> str | dict[str, Any]:
    """One cell's copy of an upstream: its URL (or endpoints) ``offset`` ports on."""
    if not upstream.endpoints:
        return _moved(upstream.primary_url, offset)
    return {"endpoints": [{**e.model_dump(exclude_defaults=True), "url": _moved(e.url, offset)}
                          for e in upstream.endpoints]}


def _stack_upstreams(config: StranglerConfig, stack: Stack) -> list[str]:
    """The upstreams the stack's apps listen on: each cell runs its own copy of them."""
    names = []
    for i, app in enumerate(stack.apps):
        name = app.entry.upstream or app.name
        if name not in config.upstreams:
            raise ConfigError(f"app {app.name!r} has no upstream (none named {name!r}); each cell's copy of "
                              "an app listens where the cell's copy of its upstream points",
                              field=f"stack.apps[{i}].upstream")
        names.append(name)
    return names


def cells_config_text(text: str, count: int, *, file: str = "strangler.yaml") -> str:
    """``text`` (a strangler.yaml without cells) with ``count`` cells of its stack; validated."""
    if not 1 <= count <= MAX_CELLS:
        raise ConfigError(f"--cells {count}: between 1 and {MAX_CELLS}", field="cells")
    data, _lines = read_yaml(text, file)
    config = load_config_text(text, file=file)
    if config.cells is not None:
        raise ConfigError("already has a cells: section: run strangler up without --cells to start its cells",
                          file=file, field="cells")
    stack = load_stack(config)
    own = _stack_upstreams(config, stack)
    shared = sorted(config.cell_upstreams_needed() - set(own))  # not run by the stack: every cell uses the same
    ports = [port for port, _what in stack_ports(stack)]
    block = port_block(ports)
    fits = (MAX_PORT - max(ports)) // block
    if count > fits:
        raise ConfigError(f"--cells {count}: cell k listens on the file's ports + k * {block}, and this stack's "
                          f"reach {max(ports)}: at most {fits} cells fit under port {MAX_PORT}", file=file, field="cells")
    names = cell_names(count)
    cells = []
    for k, name in enumerate(names, start=1):
        upstreams: dict[str, Any] = {u: _cell_upstream(config.upstreams[u], k * block) for u in own}
        upstreams.update({u: _cell_upstream(config.upstreams[u], 0) for u in shared})
        cells.append({"name": name, "weight": 1, "upstreams": upstreams})
    out = copy.deepcopy(data)
    for u in (*own, *shared):
        entry = out["upstreams"][u]
        for key in ("url", "endpoints"):
            entry.pop(key, None)  # each cell gives its own
    out["cells"] = {"partition_key": PARTITION_KEY, "unkeyed": names[0], "cells": cells}
    header = (
        f"# Generated by `strangler up --cells {count}` from {file}, and written afresh by\n"
        "# every such start: edit that file, not this one. Cell k runs every app of the\n"
        f"# stack on the file's port + k * {block}; the proxy and admin API keep the file's.\n"
    )
    generated = header + yaml.safe_dump(out, sort_keys=False, width=120)
    cell_ports(load_config_text(generated, file=file))  # refuses ports that meet or fall out of range
    return generated


def cell_ports(config: StranglerConfig) -> list[tuple[int, str]]:
    """``(port, what)`` for every cell's apps and sync workers, in start order.

    Raises :class:`ConfigError` when two of them, or one and the proxy, share a
    port, or one is out of range."""
    if config.cells is None:
        raise ConfigError("the file has no cells: section", field="cells")
    ports = [pair for cell in config.cells.names for pair in stack_ports(load_stack(config, cell))]
    listen = config.proxy.listen.port
    admin = config.proxy.admin.port
    counts = Counter(port for port, _what in ports)
    clashes = [f"{port} ({what})" for port, what in ports
               if counts[port] > 1 or port in (listen, admin) or not 0 < port <= MAX_PORT]
    if clashes:
        raise ConfigError(f"cell ports out of range or used twice (or by the proxy): {', '.join(clashes)}",
                          field="cells")
    return ports
