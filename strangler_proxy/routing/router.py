"""The route table: compiled once, immutable, swapped whole.

Matching rules (also in docs/proxy.md):

* the *raw* request path (the request-target up to ``?``, exactly as received)
  is split on ``/``; each segment is percent-decoded **for comparison only** --
  what is forwarded is always the raw path;
* a path containing a segment that decodes to something with a ``/`` in it
  (``%2F``) or that is ``.`` / ``..`` (also ``%2E``) matches **no** route: it
  goes to the default upstream untouched, so a request can never match one
  route and be resolved to another resource by the upstream;
* comparison is case-sensitive; ``/a/`` and ``/a`` are different paths (no
  trailing-slash folding); ``//`` yields an empty segment, which matches no
  literal and no ``{var}`` (variables match one non-empty segment);
* ``{*rest}`` (last segment only) matches one or more remaining segments,
  including empty ones: ``/api/{*rest}`` matches ``/api/`` and ``/api/a/b``
  but not ``/api``;
* method must be listed; header matches compare exact values.

Precedence when several routes match: more literal segments first, then
fewer variables (a tail counts as one), then routes with a header match before
those without, then configuration order.

    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text('''
    ... upstreams: {legacy: {url: "http://127.0.0.1:8001"}, ratings: {url: "http://127.0.0.1:8101"}}
    ... routes: [{name: r, path: "/api/titles/{id}/ratings", target: ratings, mode: shadow}]
    ... ''')
    >>> table = RouteTable.build(cfg)
    >>> table.match("GET", "/api/titles/tt1/ratings", {}).name
    'r'
    >>> table.match("GET", "/api/titles/tt1%2Fx/ratings", {}) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from strangler_proxy.config import CompareConfig, Mode, RouteConfig, StranglerConfig, write_canary_problem
from strangler_proxy.errors import ConfigError, FlipError
from strangler_proxy.routing.canary import KeyExtractor, key_extractor


@dataclass(frozen=True, slots=True)
class RouteState:
    """A route's or field's mode/percent (a runtime flip's, or the file's).

        >>> RouteState(Mode.CANARY, 25.0).text(), RouteState(Mode.SHADOW, 0.0).text()
        ('canary 25%', 'shadow')
    """

    mode: Mode
    percent: float

    def text(self) -> str:
        """How every report and command writes it: the percent only where it means something."""
        return f"canary {self.percent:g}%" if self.mode is Mode.CANARY else self.mode.value


_LITERAL, _VAR, _TAIL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Segment:
    kind: int
    text: str  # the literal, or the variable's name


def _compile(path: str, *, route: str) -> tuple[_Segment, ...]:
    segments: list[_Segment] = []
    parts = path.split("/")[1:]
    for i, part in enumerate(parts):
        if part.startswith("{*"):
            if i != len(parts) - 1:
                raise ConfigError(f"{{*...}} must be the last segment of {path!r}", field=f"routes.{route}.path")
            segments.append(_Segment(_TAIL, part[2:-1]))
        elif part.startswith("{"):
            segments.append(_Segment(_VAR, part[1:-1]))
        else:
            segments.append(_Segment(_LITERAL, part))
    return tuple(segments)


def split_path(raw_path: str) -> list[str] | None:
    """Segments of a raw path decoded for comparison, or None if unroutable.

    None for: not origin-form (no leading ``/``), an encoded ``/`` inside a
    segment, a ``.``/``..`` segment (raw or encoded).
    """
    if not raw_path.startswith("/"):
        return None
    parts = raw_path.split("/")
    del parts[0]
    for i, seg in enumerate(parts):
        if "%" in seg:
            seg = unquote(seg, errors="surrogateescape")
            if "/" in seg:
                return None
            parts[i] = seg
        if seg == "." or seg == "..":
            return None
    return parts


class Route:
    """One compiled route: config + effective mode/percent + matcher.

    Immutable by convention (slots, set once in ``__init__``); the table that
    holds it is swapped whole when anything changes.
    """

    __slots__ = (
        "name", "config", "mode", "percent", "legacy", "target", "methods", "headers",
        "segments", "literals", "variables", "has_tail", "partition", "rewrite", "index", "compare",
    )

    def __init__(
        self,
        config: RouteConfig,
        *,
        index: int,
        default_upstream: str,
        state: RouteState | None,
        compare: CompareConfig | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        # Global compare rules merged with the route's, once per table build
        # (merging per request would cost more than the diff itself).
        self.compare: CompareConfig = compare if compare is not None else CompareConfig().merged(config.compare)
        try:
            self.mode: Mode = Mode(state.mode) if state else config.mode
            self.percent: float = float(state.percent) if state else config.percent
        except (ValueError, TypeError) as exc:
            raise FlipError(f"invalid state {state!r}", route=config.name) from exc
        self.legacy: str = config.legacy or default_upstream
        self.target: str | None = config.target
        self.methods = frozenset(config.methods)
        self.headers: tuple[tuple[str, str], ...] = tuple(config.headers.items())
        self.segments = _compile(config.path, route=config.name)
        self.literals = sum(1 for s in self.segments if s.kind == _LITERAL)
        self.variables = len(self.segments) - self.literals
        self.has_tail = bool(self.segments) and self.segments[-1].kind == _TAIL
        self.partition: KeyExtractor | None = key_extractor(config.partition_key)
        self.rewrite = _compile(config.rewrite, route=config.name) if config.rewrite else None
        self.index = index
        if self.mode is not Mode.LEGACY and not self.target:
            raise FlipError(f"mode {self.mode.value!r} needs a target upstream", route=self.name)
        if self.mode is Mode.CANARY and (problem := write_canary_problem(config)):
            raise FlipError(problem, route=self.name)
        if not 0.0 <= self.percent <= 100.0:
            raise FlipError(f"percent {self.percent} is outside 0..100", route=self.name)

    def __repr__(self) -> str:
        return f"Route({self.name!r}, {self.config.path!r}, mode={self.mode.value}, percent={self.percent})"

    @property
    def precedence(self) -> tuple[int, int, int, int]:
        return (-self.literals, self.variables, 0 if self.headers else 1, self.index)

    def _matches_segments(self, parts: list[str]) -> bool:
        segs = self.segments
        n = len(segs)
        if self.has_tail:
            if len(parts) < n:
                return False
            n -= 1
        elif len(parts) != n:
            return False
        for i in range(n):
            seg = segs[i]
            part = parts[i]
            if seg.kind == _LITERAL:
                if part != seg.text:
                    return False
            elif not part:
                return False
        return True

    def bind(self, raw_path: str) -> dict[str, str]:
        """Raw (still percent-encoded) values of the path variables."""
        parts = raw_path.split("/")[1:]
        out: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if seg.kind == _VAR:
                out[seg.text] = parts[i]
            elif seg.kind == _TAIL:
                out[seg.text] = "/".join(parts[i:])
        return out

    def target_path(self, raw_path: str) -> str:
        """The path sent to the target: the rewrite template filled with raw values."""
        if self.rewrite is None:
            return raw_path
        values = self.bind(raw_path)
        return "/" + "/".join(values.get(s.text, "") if s.kind != _LITERAL else s.text for s in self.rewrite)

    def partition_key(self, raw_path: str, headers: Mapping[str, str], raw_query: str) -> str | None:
        if self.partition is None:
            return None
        pvars = self.bind(raw_path) if self.config.partition_key and self.config.partition_key[0] == "p" else {}
        return self.partition(pvars, headers, raw_query)


class RouteTable:
    """All routes, sorted by precedence, indexed by first literal segment."""

    __slots__ = ("routes", "_by_name", "_by_first", "_any_first")

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._by_name = {r.name: r for r in routes}
        ordered = sorted(routes, key=lambda r: r.precedence)
        any_first = [r for r in ordered if not r.segments or r.segments[0].kind != _LITERAL]
        by_first: dict[str, list[Route]] = {}
        for r in ordered:
            if r.segments and r.segments[0].kind == _LITERAL:
                by_first.setdefault(r.segments[0].text, [])
        for first, bucket in by_first.items():
            # Keep global precedence order among literal-first and variable-first routes.
            bucket.extend(r for r in ordered if r in any_first or r.segments[0].text == first)
        self._by_first: dict[str, tuple[Route, ...]] = {k: tuple(v) for k, v in by_first.items()}
        self._any_first = tuple(any_first)

    @classmethod
    def build(cls, config: StranglerConfig, overrides: Mapping[str, RouteState] | None = None) -> RouteTable:
        """Compile every route; raise FlipError for a bad override (nothing is kept)."""
        overrides = overrides or {}
        names = {r.name for r in config.routes}
        for name, state in overrides.items():
            if name not in names:
                raise FlipError("no such route", route=name)
            if not isinstance(state, RouteState):
                raise FlipError(f"not a RouteState: {state!r}", route=name)
        routes = tuple(
            Route(
                rc,
                index=i,
                default_upstream=config.proxy.default_upstream,
                state=overrides.get(rc.name),
                compare=config.compare_for(rc),
            )
            for i, rc in enumerate(config.routes)
        )
        return cls(routes)

    def get(self, name: str) -> Route | None:
        return self._by_name.get(name)

    def match(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Route | None:
        """The most specific route for this request, or None (-> default upstream)."""
        if not self.routes:
            return None
        parts = split_path(raw_path)
        if parts is None:
            return None
        candidates = self._by_first.get(parts[0], self._any_first)
        for route in candidates:
            if method in route.methods and route._matches_segments(parts):
                if route.headers and not all(headers.get(k) == v for k, v in route.headers):
                    continue
                return route
        return None
