"""Structural JSON diff with the compare rules applied while walking.

Both trees are walked together; the path is carried as a tuple of segments
and rendered to ``$.cast[3].name`` only when a difference survives the rules.
The differences are typed like Diffy's: a member only in legacy (MISSING),
only in the candidate (EXTRA), a JSON type change (TYPE), a scalar change
(VALUE) and an ordered list of another length (LENGTH).

    >>> from strangler_proxy.config import CompareConfig
    >>> [(d.kind.value, d.path) for d in diff_json({"a": [1, 2], "t": 1.0}, {"a": [1], "t": 1, "x": 0}, CompareConfig())]
    [('length', '$.a'), ('extra', '$.x')]

Rules (see :mod:`.rules`): ignored paths are pruned; numbers within the
absolute OR relative tolerance are equal (int 1 and float 1.0 are always
equal: JSON has one number type); normalised strings are compared after
normalising; lists under ``unordered`` are compared as multisets and lists
under ``list_keys`` by their key field, with differences inside matched
elements at ``$.images[id=rm1].url``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.result import Difference, DiffKind
from strangler_proxy.diff.rules import CompiledRules, Keyed, Path, compile_rules, render_path

# At most this many differences are kept per comparison; a completely
# different body must not produce a result bigger than the body.
MAX_DIFFERENCES = 100
# Unordered lists without a key try rule-aware pairing of their left-over
# elements up to this many element comparisons, then give up pairing.
MAX_PAIRING_ATTEMPTS = 20_000
# Values carried in a Difference are clipped to about this many characters.
MAX_VALUE_CHARS = 1024

RawDiff = tuple[DiffKind, Path, Any, Any]

_MISSING = object()
_NUMS = (int, float)
_CONTAINERS = (dict, list)
_KEYABLE = frozenset({str, int, float, bool, type(None)})


class _Enough(Exception):
    """Stop walking: the difference budget is used up."""


def json_type(v: Any) -> str:
    t = type(v)
    if t is dict:
        return "object"
    if t is list:
        return "array"
    if t is str:
        return "string"
    if t is bool:
        return "boolean"
    if t is int or t is float:
        return "number"
    return "null"


class _Walker:
    __slots__ = ("rules", "out", "ignored", "fast", "limit", "truncated")

    def __init__(self, rules: CompiledRules, fast: bool, limit: int) -> None:
        self.rules = rules
        self.out: list[RawDiff] = []
        # Differences explained by an ignore rule: kept (bounded) so reports
        # can show declared noise next to learned noise.
        self.ignored: list[RawDiff] = []
        self.fast = fast  # whole-subtree == is exact (no booleans around)
        self.limit = limit
        self.truncated = False

    def emit(self, kind: DiffKind, path: Path, a: Any, b: Any) -> None:
        rules = self.rules
        if rules.has_ignore and rules.is_ignored(path):
            if len(self.ignored) < self.limit:
                self.ignored.append((kind, path, a, b))
            return
        if len(self.out) >= self.limit:
            self.truncated = True
            raise _Enough
        self.out.append((kind, path, a, b))

    def node(self, a: Any, b: Any, path: Path) -> None:
        ta, tb = type(a), type(b)
        if ta is dict and tb is dict:
            self.obj(a, b, path)
        elif ta is list and tb is list:
            self.arr(a, b, path)
        elif ta is tb or (ta in _NUMS and tb in _NUMS):
            if a == b:
                return
            self.scalar(a, b, path)
        else:
            self.emit(DiffKind.TYPE, path, a, b)

    def child(self, a: Any, b: Any, path: Path) -> None:
        """A child pair that is not trivially equal."""
        ta = type(a)
        if ta is type(b) and (ta is dict or ta is list):
            rules = self.rules
            if rules.has_ignore and rules.is_ignored(path):
                # Prune the whole subtree; it differs somewhere inside.
                if len(self.ignored) < self.limit:
                    self.ignored.append((DiffKind.VALUE, path, a, b))
                return
            if ta is dict:
                self.obj(a, b, path)
            else:
                self.arr(a, b, path)
        else:
            self.node(a, b, path)

    def obj(self, a: dict[str, Any], b: dict[str, Any], path: Path) -> None:
        fast = self.fast
        shared = 0
        for k, va in a.items():
            vb = b.get(k, _MISSING)
            if vb is _MISSING:
                self.emit(DiffKind.MISSING, path + (k,), va, None)
                continue
            shared += 1
            tva = type(va)
            if tva is type(vb) and (fast or (tva is not dict and tva is not list)) and va == vb:
                continue
            self.child(va, vb, path + (k,))
        if len(b) > shared:
            for k, vb in b.items():
                if k not in a:
                    self.emit(DiffKind.EXTRA, path + (k,), None, vb)

    def arr(self, a: list[Any], b: list[Any], path: Path) -> None:
        rules = self.rules
        mode = rules.list_mode(path) if rules.has_list_rules else None
        if mode is not None:
            if mode:
                self.keyed(a, b, path, mode)
            else:
                self.multiset(list(enumerate(a)), list(enumerate(b)), path)
            return
        if len(a) != len(b):
            # Like Diffy: an ordered list of another length is one LENGTH
            # difference, not a cascade of shifted elements.
            self.emit(DiffKind.LENGTH, path, len(a), len(b))
            return
        fast = self.fast
        for i, va in enumerate(a):
            vb = b[i]
            tva = type(va)
            if tva is type(vb) and (fast or (tva is not dict and tva is not list)) and va == vb:
                continue
            self.child(va, vb, path + (i,))

    def scalar(self, a: Any, b: Any, path: Path) -> None:
        """Same JSON type, different values."""
        rules = self.rules
        ta = type(a)
        if ta is str:
            if rules.has_normalise:
                norm = rules.normaliser(path)
                if norm is not None and norm(a) == norm(b):
                    return
        elif ta is not bool and rules.has_tolerance and rules.within_tolerance(a, b):
            return
        self.emit(DiffKind.VALUE, path, a, b)

    def keyed(self, a: list[Any], b: list[Any], path: Path, field: str) -> None:
        index: dict[Any, Any] = {}
        dups: dict[Any, list[Any]] = {}  # further elements sharing a key value
        loose_b: list[tuple[int, Any]] = []
        for j, eb in enumerate(b):
            kv = _key_of(eb, field)
            if kv is _MISSING:
                loose_b.append((j, eb))
            elif kv in index:
                dups.setdefault(kv, []).append(eb)
            else:
                index[kv] = eb
        loose_a: list[tuple[int, Any]] = []
        fast = self.fast
        for i, ea in enumerate(a):
            kv = _key_of(ea, field)
            if kv is _MISSING:
                loose_a.append((i, ea))
                continue
            eb = index.pop(kv, _MISSING)
            if eb is _MISSING:
                more = dups.get(kv)
                if not more:
                    self.emit(DiffKind.MISSING, path + (Keyed(field, kv),), ea, None)
                    continue
                eb = more.pop(0)  # duplicates of a key pair up in order
            if fast and ea == eb:
                continue
            self.child(ea, eb, path + (Keyed(field, kv),))
        for kv, eb in index.items():
            self.emit(DiffKind.EXTRA, path + (Keyed(field, kv),), None, eb)
        for kv, rest in dups.items():
            for eb in rest:
                self.emit(DiffKind.EXTRA, path + (Keyed(field, kv),), None, eb)
        if loose_a or loose_b:
            self.multiset(loose_a, loose_b, path)

    def multiset(self, a: list[tuple[int, Any]], b: list[tuple[int, Any]], path: Path) -> None:
        """Unordered comparison: exact matches by canonical bytes first, then
        rule-aware pairing (ignore/tolerance/normalise) of what is left."""
        if not a and not b:
            return
        buckets: dict[bytes, list[int]] = {}
        canon_b = []
        for pos, (_, eb) in enumerate(b):
            c = _canonical(eb)
            canon_b.append(c)
            buckets.setdefault(c, []).append(pos)
        used = [False] * len(b)
        left_a: list[tuple[int, Any]] = []
        for i, ea in a:
            hit = buckets.get(_canonical(ea))
            if hit:
                used[hit.pop(0)] = True
            else:
                left_a.append((i, ea))
        left_b = [b[pos] for pos in range(len(b)) if not used[pos]]
        if left_a and left_b:
            left_a, left_b = self._pair_by_rules(left_a, left_b, path)
        for i, ea in left_a:
            self.emit(DiffKind.MISSING, path + (i,), ea, None)
        for j, eb in left_b:
            self.emit(DiffKind.EXTRA, path + (j,), None, eb)

    def _pair_by_rules(
        self, left_a: list[tuple[int, Any]], left_b: list[tuple[int, Any]], path: Path
    ) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
        rules = self.rules
        budget = MAX_PAIRING_ATTEMPTS
        remaining_b = list(left_b)
        unmatched_a = []
        for i, ea in left_a:
            found = -1
            for pos, (_, eb) in enumerate(remaining_b):
                if budget <= 0:
                    break
                budget -= 1
                probe = _Walker(rules, False, 0)
                try:
                    probe.node(ea, eb, path + (i,))
                except _Enough:
                    continue
                found = pos
                break
            if found < 0:
                unmatched_a.append((i, ea))
            else:
                remaining_b.pop(found)
        return unmatched_a, remaining_b


def _key_of(element: Any, field: str) -> Any:
    if type(element) is dict:
        kv = element.get(field, _MISSING)
        if type(kv) in _KEYABLE:
            return kv
    return _MISSING


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def diff_raw(
    a: Any,
    b: Any,
    rules: CompareConfig | CompiledRules | None,
    *,
    boolfree: bool = False,
    limit: int = MAX_DIFFERENCES,
    base: Path = (),
) -> tuple[list[RawDiff], list[RawDiff], bool]:
    """Differences with unrendered paths, the differences an ignore rule
    explained, and whether the list was cut at ``limit``.

    ``boolfree`` promises neither tree contains a boolean, which lets whole
    equal subtrees be skipped with one ``==`` (Python's ``True == 1`` is the
    only way that == could disagree with JSON equality).
    """
    w = _Walker(compile_rules(rules), boolfree, limit)
    try:
        w.node(a, b, base)
    except _Enough:
        pass
    return w.out, w.ignored, w.truncated


def clip(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    """Bound a value carried in a Difference: long strings are cut, large
    containers replaced by a short description."""
    t = type(value)
    if t is str:
        return value if len(value) <= limit else value[:limit] + "…"
    if t is dict or t is list:
        size = len(orjson.dumps(value))
        if size > limit:
            what = f"object with {len(value)} members" if t is dict else f"array of {len(value)} items"
            return f"<{what}, {size} bytes>"
    return value


def to_difference(raw: RawDiff, transform: Callable[[Path, Any], Any] | None = None) -> Difference:
    kind, path, a, b = raw
    if transform is not None:
        a, b = transform(path, a), transform(path, b)
    return Difference(kind, render_path(path), clip(a), clip(b))


def diff_json(a: Any, b: Any, rules: CompareConfig | CompiledRules | None = None) -> list[Difference]:
    """Typed differences between two parsed JSON values under ``rules``.

    This is the engine the GraphQL comparison uses per entity subtree. It
    does NOT redact values and knows nothing of learned noise; a
    :class:`~strangler_proxy.diff.comparator.DiffComparator` does both.
    """
    raw, _, _ = diff_raw(a, b, rules)
    return [to_difference(r) for r in raw]
