"""Compiled compare rules.

A :class:`~strangler_proxy.config.CompareConfig` is compiled ONCE into a
:class:`CompiledRules` (cached per config object, see :func:`compile_rules`)
so the differ never parses a pattern on the comparison path; answers about
each concrete path (ignored? list mode? normaliser? redacted?) are memoised.
The path language itself lives in :mod:`strangler_proxy.jsonpath`.

    >>> r = compile_rules(CompareConfig(ignore=("$..request_id",), list_keys={"$.images": "id"}))
    >>> r.is_ignored(("items", 0, "request_id")), r.list_mode(("images",))
    (True, 'id')
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from strangler_proxy.config import CompareConfig
from strangler_proxy.errors import ConfigError
from strangler_proxy.jsonpath import (
    DESCEND,
    Keyed,
    Path,
    Pattern,
    Segment,
    generalise_path,
    generalised_prefixes,
    parse_path,
    path_matches,
    render_path,
    seg_matches,
)

# Relative slack under a numeric tolerance (see CompiledRules.within_tolerance).
_FLOAT_SLACK = 1e-12

__all__ = [
    "DESCEND",
    "CompiledRules",
    "Keyed",
    "Path",
    "Pattern",
    "Segment",
    "compile_rules",
    "generalise_path",
    "generalised_prefixes",
    "parse_path",
    "path_matches",
    "render_path",
    "seg_matches",
]

DEFAULT_HEADER_ALLOWLIST: tuple[str, ...] = ("content-type",)
# Redacted whatever the configuration says.
ALWAYS_REDACTED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
# Per-rules memo of path -> rule answers; cleared when it grows past this.
_PATH_CACHE_LIMIT = 20_000
# Compiled rules kept per config object (id-keyed, the object kept alive).
_COMPILED_CACHE_LIMIT = 512


# ------------------------------------------------------------ normalisers

_NORMALISERS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": str.lower,
    "collapse-space": lambda s: " ".join(s.split()),
}


def _chain(ops: Sequence[str]) -> Callable[[str], str]:
    fns = [_NORMALISERS[o] for o in ops]

    def normalise(s: str) -> str:
        for f in fns:
            s = f(s)
        return s

    return normalise


# ------------------------------------------------------------ compiled rules


def _compile_all(field: str, texts: Sequence[str]) -> tuple[Pattern, ...]:
    out = []
    for idx, t in enumerate(texts):
        try:
            out.append(parse_path(t))
        except ConfigError as exc:
            raise ConfigError(exc.message, field=f"compare.{field}[{idx}]") from exc
    return tuple(out)


_T = TypeVar("_T")


class CompiledRules:
    """A :class:`CompareConfig` ready for the differ: patterns parsed, answers
    about each concrete path memoised (diffs of the same route walk the same
    paths again and again).

        >>> r = CompiledRules(CompareConfig(ignore=("$..request_id",)))
        >>> r.is_ignored(("request_id",)), r.is_ignored(("id",))
        (True, False)
    """

    def __init__(self, config: CompareConfig) -> None:
        self.config = config
        self.ignore = _compile_all("ignore", config.ignore)
        self.unordered = _compile_all("unordered", config.unordered)
        keys = _compile_all("list_keys", list(config.list_keys))
        self.list_keys = tuple(zip(keys, config.list_keys.values(), strict=False))
        norm = _compile_all("normalise", list(config.normalise))
        self.normalise = tuple((p, _chain(ops)) for p, ops in zip(norm, config.normalise.values(), strict=False))
        self.redact_paths = _compile_all("redact_paths", config.redact_paths)
        self.abs_tolerance = config.abs_tolerance
        self.rel_tolerance = config.rel_tolerance
        self.has_tolerance = bool(config.abs_tolerance) or bool(config.rel_tolerance)
        self.has_ignore = bool(self.ignore)
        self.has_list_rules = bool(self.unordered or self.list_keys)
        self.has_normalise = bool(self.normalise)
        self.headers = tuple(h.lower() for h in (config.headers if config.headers is not None else DEFAULT_HEADER_ALLOWLIST))
        self.redact_headers = ALWAYS_REDACTED_HEADERS | {h.lower() for h in config.redact_headers}
        # List rules only ever apply to lists whose last segment is one of these
        # member names -- a cheap filter before any matching.
        self._list_tail: frozenset[str] | None = _literal_tails(self.unordered + keys)
        self._ignored: dict[Path, bool] = {}
        self._list_mode: dict[Path, str | None] = {}
        self._norm: dict[Path, Callable[[str], str] | None] = {}
        self._redacted: dict[Path, bool] = {}
        self._lock = threading.Lock()

    # Memo writes are single dict stores (atomic under the GIL); the lock only
    # guards clearing a full memo.
    def _remember(self, memo: dict[Path, _T], path: Path, value: _T) -> _T:
        if len(memo) >= _PATH_CACHE_LIMIT:
            with self._lock:
                memo.clear()
        memo[path] = value
        return value

    def is_ignored(self, path: Path) -> bool:
        """The path lies at or under an ``ignore`` pattern."""
        hit = self._ignored.get(path)
        if hit is None:
            hit = any(path_matches(p, path, prefix=True) for p in self.ignore)
            self._remember(self._ignored, path, hit)
        return hit

    def is_redacted(self, path: Path) -> bool:
        """The path lies at or under a ``redact_paths`` pattern."""
        hit = self._redacted.get(path)
        if hit is None:
            hit = any(path_matches(p, path, prefix=True) for p in self.redact_paths)
            self._remember(self._redacted, path, hit)
        return hit

    def list_mode(self, path: Path) -> str | None:
        """None: ordered; "": unordered (multiset); "field": matched by key field."""
        if self._list_tail is not None and (not path or path[-1] not in self._list_tail):
            return None
        try:
            return self._list_mode[path]
        except KeyError:
            pass
        mode: str | None = None
        for p, field in self.list_keys:
            if path_matches(p, path):
                mode = field
                break
        else:
            if any(path_matches(p, path) for p in self.unordered):
                mode = ""
        return self._remember(self._list_mode, path, mode)

    def normaliser(self, path: Path) -> Callable[[str], str] | None:
        """String normalisation for a value at ``path`` (patterns apply to
        everything at or under them; several matching ones run in order)."""
        try:
            return self._norm[path]
        except KeyError:
            pass
        fns = [f for p, f in self.normalise if path_matches(p, path, prefix=True)]
        fn: Callable[[str], str] | None
        if not fns:
            fn = None
        elif len(fns) == 1:
            fn = fns[0]
        else:

            def fn(s: str, _fns: list[Callable[[str], str]] = fns) -> str:
                for f in _fns:
                    s = f(s)
                return s

        return self._remember(self._norm, path, fn)

    def within_tolerance(self, a: float, b: float) -> bool:
        """``|a-b| <= abs_tolerance`` OR ``|a-b| <= rel_tolerance * max(|a|,|b|)``."""
        # The slack of a few ulps keeps a difference of exactly the tolerance
        # inside it: 8.8 - 8.75 is 0.05000000000000071 in binary floating point.
        d = abs(a - b) - _FLOAT_SLACK * max(abs(a), abs(b), 1.0)
        if self.abs_tolerance is not None and d <= self.abs_tolerance:
            return True
        if self.rel_tolerance is not None and d <= self.rel_tolerance * max(abs(a), abs(b)):
            return True
        return False


def _literal_tails(patterns: Sequence[Pattern]) -> frozenset[str] | None:
    tails: set[str] = set()
    for p in patterns:
        if not p or p[-1][0] != "k":
            return None  # ends in a wildcard/index: no cheap filter
        tails.add(p[-1][1])
    return frozenset(tails)


_compiled: dict[int, tuple[CompareConfig, CompiledRules]] = {}
_by_content: dict[tuple[Any, ...], CompiledRules] = {}
_compiled_lock = threading.Lock()


def _content_key(c: CompareConfig) -> tuple[Any, ...]:
    return (
        c.ignore,
        c.abs_tolerance,
        c.rel_tolerance,
        c.unordered,
        tuple(c.list_keys.items()),
        tuple(c.normalise.items()),
        c.headers,
        c.redact_headers,
        c.redact_paths,
    )


def compile_rules(config: CompareConfig | CompiledRules | None) -> CompiledRules:
    """Compiled rules for ``config``, built once per config object.

    Keyed by ``id()`` with the config kept alive in the cache, so the id cannot
    be reused by another object while its entry exists. Behind that, a cache by
    content: ``CompareConfig.merged`` builds a fresh (equal) object per call,
    and those must not recompile or lose the per-path memo either.
    """
    if isinstance(config, CompiledRules):
        return config
    if config is None:
        config = _EMPTY
    hit = _compiled.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    key = _content_key(config)
    compiled = _by_content.get(key)
    if compiled is None:
        compiled = CompiledRules(config)
    with _compiled_lock:
        if len(_compiled) >= _COMPILED_CACHE_LIMIT:
            _compiled.clear()
        if len(_by_content) >= _COMPILED_CACHE_LIMIT:
            _by_content.clear()
        _compiled[id(config)] = (config, compiled)
        _by_content[key] = compiled
    return compiled


_EMPTY = CompareConfig()
