"""Cells: which isolated copy of the stack serves a partition key. Pure; no I/O.

A request's key (``cells.partition_key``: a header, a path variable, a query
parameter, a cookie; for GraphQL a root field's argument) picks one cell:

1. a pinned key (``cells.pins``) goes to its cell;
2. any other key is hashed into one of :data:`SLOTS` slots, and each slot
   belongs to the cell that wins weighted rendezvous hashing (highest random
   weight: ``weight / -ln(u)`` with ``u`` a hash of the cell's name and the
   slot) -- computed once per table, so a request costs one hash and an index.

Rendezvous hashing gives the properties cells need: the same key lands in the
same cell in every process and after every restart (the hashes are
blake2b's, not Python's salted ``hash``); adding a cell moves only the slots
it now wins (about 1/N of the keys, all onto the new cell); removing one moves
only its own slots; weights are respected to within the slots' granularity
(1/16,384 of the keys).

A request without a key goes to ``cells.unkeyed`` (a cell), or is refused.

Per-cell names join a route's (or field's) name and a cell's with ``@``:
``ratings@eu-1`` is the flip, audit rows and results of route ``ratings`` in
cell ``eu-1``, and ``ratings@eu-1`` the upstream ``ratings`` of that cell.

    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text('''
    ... upstreams: {legacy: {}}
    ... cells:
    ...   partition_key: header:X-Tenant
    ...   pins: {acme: c2}
    ...   cells:
    ...     - {name: c1, upstreams: {legacy: "http://127.0.0.1:8001"}}
    ...     - {name: c2, upstreams: {legacy: "http://127.0.0.1:8002"}}
    ... ''')
    >>> table = CellTable.build(cfg.cells)
    >>> table.explain("acme").why
    'pinned (cells.pins)'
    >>> table.cell_of("tenant-7") == table.cell_of("tenant-7") and table.cell_of("tenant-7") in ("c1", "c2")
    True
    >>> cell_upstream(cfg.upstreams, "legacy", "c2")
    'legacy@c2'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from types import MappingProxyType

from strangler_proxy.config import CELL_SEP, CellsConfig, StranglerConfig
from strangler_proxy.errors import FlipError
from strangler_proxy.routing.canary import KeyExtractor, key_extractor
from strangler_proxy.routing.router import RouteState, RouteTable

SLOTS = 16384
REFUSE = "refuse"
SEEN_KEYS = 65536  # keys whose cell a table remembers (tenants, mostly; a flood of new ones empties it)
_TWO_64 = float(1 << 64)
# The keys' hash, personalised once: a copy of it costs less than a new personalised one.
_KEY_HASH = blake2b(digest_size=8, person=b"strangler-cell")


def scoped(name: str, cell: str | None) -> str:
    """The per-cell name of a route, field or upstream (``name`` itself without a cell).

    >>> scoped("ratings", "eu-1"), scoped("ratings", None)
    ('ratings@eu-1', 'ratings')
    """
    return name if cell is None else f"{name}{CELL_SEP}{cell}"


def split_scoped(name: str) -> tuple[str, str | None]:
    """``ratings@eu-1`` -> ``("ratings", "eu-1")``; a name without a cell -> ``(name, None)``.

    >>> split_scoped("Title.rating@c2"), split_scoped("ratings")
    (('Title.rating', 'c2'), ('ratings', None))
    """
    base, sep, cell = name.rpartition(CELL_SEP)
    return (base, cell) if sep and base else (name, None)


def slot_of(key: str) -> int:
    """The slot of a key: the same in every process (blake2b, 8 bytes, personalised).

    >>> slot_of("tenant-7") == slot_of("tenant-7") and 0 <= slot_of("tenant-7") < SLOTS
    True
    """
    h = _KEY_HASH.copy()
    h.update(key.encode("utf-8", "surrogateescape"))
    return int.from_bytes(h.digest(), "big") % SLOTS


@lru_cache(maxsize=64)
def _slot_owners(cells: tuple[tuple[str, float], ...]) -> tuple[str, ...]:
    """Which cell owns each slot: weighted rendezvous over (name, weight) pairs."""
    seeds = [(name, weight, blake2b(name.encode(), digest_size=16, person=b"strangler-slot"))
             for name, weight in cells if weight > 0]
    owners: list[str] = []
    for slot in range(SLOTS):
        data = slot.to_bytes(4, "big")
        best, best_score = "", -1.0
        for name, weight, seed in seeds:
            h = seed.copy()
            h.update(data)
            u = (int.from_bytes(h.digest()[:8], "big") + 0.5) / _TWO_64  # in (0, 1)
            score = weight / -math.log(u)
            if score > best_score:
                best, best_score = name, score
        owners.append(best)
    return tuple(owners)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a key goes and why (``strangler cells which KEY``)."""

    key: str | None
    cell: str | None  # None: refused
    why: str
    slot: int | None = None


class CellTable:
    """The cells of a config, compiled once; immutable (its only state is a memo of
    :meth:`assign`'s answers: the same key always gets the same cell from one table)."""

    __slots__ = ("config", "names", "weights", "pins", "unkeyed", "spec", "kind", "key_name", "_owners",
                 "_extract", "_pins", "_seen")

    def __init__(self, config: CellsConfig) -> None:
        self.config = config
        self.names: tuple[str, ...] = config.names
        self.weights: Mapping[str, float] = MappingProxyType({c.name: c.weight for c in config.cells})
        self._pins: dict[str, str] = dict(config.pins)  # read per request: a plain dict is the fastest lookup
        self.pins: Mapping[str, str] = MappingProxyType(self._pins)
        self.unkeyed: str | None = None if config.unkeyed == REFUSE else config.unkeyed
        self.spec = config.partition_key
        self.kind, _, self.key_name = config.partition_key.partition(":")
        self._owners = _slot_owners(tuple((c.name, c.weight) for c in config.cells))
        # None for arg:NAME -- a GraphQL argument, which only the gateway has (key(args=...)).
        self._extract: KeyExtractor | None = key_extractor(config.partition_key)
        self._seen: dict[str, str] = {}  # key -> cell, at most SEEN_KEYS, emptied when full

    @classmethod
    def build(cls, config: CellsConfig | None) -> CellTable | None:
        return None if config is None else cls(config)

    # ------------------------------------------------------------ placement
    def key(self, pvars: Mapping[str, str], headers: Mapping[str, str], raw_query: str,
            args: Mapping[str, object] | None = None) -> str | None:
        """The request's partition key (None when it has none, or an empty one); ``args``:
        a GraphQL request's root-field arguments, for ``arg:NAME``."""
        if self._extract is not None:
            return self._extract(pvars, headers, raw_query) or None
        value = (args or {}).get(self.key_name)
        return None if value is None or value == "" else str(value)

    def cell_of(self, key: str) -> str:
        """The cell of a key: its pin, else the owner of its slot."""
        return self._pins.get(key) or self._owners[slot_of(key)]

    def assign(self, key: str | None) -> str | None:
        """The cell of a request with this key (None: refuse it). On every request:
        :meth:`cell_of` written out, one call less."""
        if key is None:
            return self.unkeyed
        cell = self._seen.get(key)
        if cell is None:  # a key not seen lately: hash it (a dict lookup is cheaper than blake2b)
            cell = self._pins.get(key) or self._owners[slot_of(key)]
            seen = self._seen
            if len(seen) >= SEEN_KEYS:  # bounded whatever keys clients send
                seen.clear()
            seen[key] = cell
        return cell

    def explain(self, key: str | None) -> Placement:
        if key is None or key == "":
            if self.unkeyed is None:
                return Placement(None, None, f"no key ({self.spec}): refused (cells.unkeyed: refuse)")
            return Placement(None, self.unkeyed, f"no key ({self.spec}): cells.unkeyed")
        if key in self.pins:
            return Placement(key, self.pins[key], "pinned (cells.pins)")
        slot = slot_of(key)
        return Placement(key, self._owners[slot], f"hashed: slot {slot} of {SLOTS}, owned by weighted rendezvous "
                                                  "over the cells' weights", slot)

    def shares(self) -> dict[str, float]:
        """Each cell's share of the hashed keys (its slots over all)."""
        counts = dict.fromkeys(self.names, 0)
        for owner in self._owners:
            counts[owner] += 1
        return {name: n / SLOTS for name, n in counts.items()}


def cell_upstream(upstreams: Mapping[str, object], name: str, cell: str | None) -> str:
    """The upstream that serves ``name`` in ``cell``: the cell's own copy (``name@cell``, as
    ``expand_cells`` names it in the config's upstreams), or the shared one.

    >>> cell_upstream({"legacy@c2": 1, "auth": 2}, "legacy", "c2"), cell_upstream({"auth": 2}, "auth", "c2")
    ('legacy@c2', 'auth')
    """
    if cell is None:
        return name
    own = scoped(name, cell)
    return own if own in upstreams else name



@dataclass(frozen=True, slots=True)
class Tables:
    """The route table every cell follows, and the tables of cells with overrides of their own."""

    table: RouteTable
    by_cell: Mapping[str, RouteTable]

    def for_cell(self, cell: str | None) -> RouteTable:
        return self.table if cell is None else self.by_cell.get(cell, self.table)


def build_tables(config: StranglerConfig, overrides: Mapping[str, RouteState]) -> Tables:
    """Compile the route tables: ``overrides`` by route name, and by ``route@cell`` for one
    cell. Raises :class:`FlipError` (naming the override, per-cell name included) when one
    cannot be applied; nothing is kept then."""
    plain: dict[str, RouteState] = {}
    per_cell: dict[str, dict[str, RouteState]] = {}
    cells = config.cells.names if config.cells is not None else ()
    for name, state in overrides.items():
        base, cell = split_scoped(name)
        if cell is None:
            plain[name] = state
        elif cell not in cells:
            raise FlipError(f"no such cell {cell!r} (known: {', '.join(cells) or 'none'})", route=name)
        else:
            per_cell.setdefault(cell, {})[base] = state
    table = RouteTable.build(config, plain)
    by_cell: dict[str, RouteTable] = {}
    for cell, own in per_cell.items():
        try:
            by_cell[cell] = RouteTable.build(config, {**plain, **own})
        except FlipError as exc:
            message = str(exc).removeprefix(f"{exc.route}: ")
            raise FlipError(message, route=scoped(exc.route, cell) if exc.route else None) from exc
    return Tables(table, MappingProxyType(by_cell))
