"""Secrets never leave the comparator in clear.

Sample bodies, the values carried by differences and the headers kept in
``ShadowResult.extra`` pass through here. JSON members at or under a
``redact_paths`` pattern become ``"[REDACTED]"``; Authorization, Cookie,
Set-Cookie, Proxy-Authorization and every ``redact_headers`` name are blanked.
In a request target kept anywhere (access log, stored samples, reports), the
values of the query parameters ``token``, ``access_token``, ``api_key``,
``password``, ``secret``, ``sig`` and every ``redact_query`` name become
``REDACTED`` (see :class:`QueryRedaction`).

Matching walks the value with the set of live pattern states (a tiny NFA), so
a subtree no pattern can reach is returned untouched without being copied.

    >>> from strangler_proxy.config import CompareConfig
    >>> from strangler_proxy.diff.rules import compile_rules
    >>> r = compile_rules(CompareConfig(redact_paths=("$..token",)))
    >>> redact_value({"a": {"token": "s3cret", "n": 1}}, (), r)
    {'a': {'token': '[REDACTED]', 'n': 1}}

The store's last line of defence is here too: :class:`Redaction` applies the
very same rules again to whatever the results store is about to write --
sample bodies, the values of differences, headers carried in
``result.extra`` and the request target -- so a result that reached the
writer by another way still never puts a secret in the database. It adapts
the functions above to what the store holds (rendered path strings, raw
bytes, nested extras); :func:`redactions_for` picks the rules of a result key.

    >>> s = Redaction(CompareConfig(redact_paths=("$..token",)))
    >>> s.json_bytes(b'{"a": {"token": "s3cret"}, "b": 1}')
    b'{"a":{"token":"[REDACTED]"},"b":1}'
    >>> s.matches_path("$.a.token"), s.matches_path("$.a.tokens")
    (True, False)
    >>> s.target("/api/titles/tt1?api_key=k3y&lang=en")
    '/api/titles/tt1?api_key=REDACTED&lang=en'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

import orjson

from strangler_proxy.config import CompareConfig, StranglerConfig
from strangler_proxy.diff.keys import configured_for_key
from strangler_proxy.diff.lifter import Form, Lifted
from strangler_proxy.diff.rules import (
    DESCEND,
    CompiledRules,
    Keyed,
    Path,
    Pattern,
    Segment,
    compile_rules,
    parse_path,
    seg_matches,
)
from strangler_proxy.errors import ConfigError

REDACTED = "[REDACTED]"
# What a non-JSON sample becomes when redact_paths are configured: its
# secrets cannot be located, so none of it is kept.
OPAQUE_SAMPLE = b"[REDACTED: body is not JSON and compare.redact_paths is set]"

# Query parameters redacted whatever the configuration says (compare.redact_query adds more).
ALWAYS_REDACTED_QUERY = frozenset({"token", "access_token", "api_key", "password", "secret", "sig"})
# What a secret query value becomes: URL-safe, so a redacted target is still a valid target.
QUERY_REDACTED = "REDACTED"

_State = frozenset[tuple[int, int]]


def _advance(pats: tuple[Pattern, ...], states: _State, seg: Segment) -> _State:
    out: set[tuple[int, int]] = set()
    for pi, pos in states:
        p = pats[pi][pos]
        if p is DESCEND:
            out.add((pi, pos))  # ".." swallows this segment...
            if seg_matches(pats[pi][pos + 1], seg):
                out.add((pi, pos + 2))  # ...or the member after it matches now
        elif seg_matches(p, seg):
            out.add((pi, pos + 1))
    return frozenset(out)


def _complete(pats: tuple[Pattern, ...], states: _State) -> bool:
    return any(pos == len(pats[pi]) for pi, pos in states)


def redact_value(value: Any, base: Path, rules: CompiledRules) -> Any:
    """``value`` found at ``base`` with every redacted member replaced.
    Returns the very same object when nothing needed redacting."""
    pats = rules.redact_paths
    if not pats:
        return value
    states: _State = frozenset((i, 0) for i in range(len(pats)))
    for seg in base:
        if _complete(pats, states):
            return REDACTED
        states = _advance(pats, states, seg)
        if not states:
            return value
    return _walk(value, pats, states)


def _walk(value: Any, pats: tuple[Pattern, ...], states: _State) -> Any:
    if _complete(pats, states):
        return REDACTED
    t = type(value)
    if t is dict:
        out: dict[str, Any] | None = None
        for k, v in value.items():
            sub = _advance(pats, states, k)
            if not sub:
                continue
            nv = _walk(v, pats, sub)
            if nv is not v:
                if out is None:
                    out = dict(value)
                out[k] = nv
        return value if out is None else out
    if t is list:
        new: list[Any] | None = None
        for i, v in enumerate(value):
            sub = _advance(pats, states, i)
            if not sub:
                continue
            nv = _walk(v, pats, sub)
            if nv is not v:
                if new is None:
                    new = list(value)
                new[i] = nv
        return value if new is None else new
    return value


def redact_headers(headers: tuple[tuple[str, str], ...], rules: CompiledRules) -> list[list[str]]:
    """Headers as ``[name, value]`` pairs with the secret ones blanked."""
    secret = rules.redact_headers
    return [[k, REDACTED if k.lower() in secret else v] for k, v in headers]


def redact_header_value(name: str, value: Any, rules: CompiledRules) -> Any:
    return REDACTED if value is not None and name.lower() in rules.redact_headers else value


def body_sample(lifted: Lifted, rules: CompiledRules, limit: int) -> tuple[bytes | None, bool]:
    """A redacted sample of a body, cut to ``limit`` bytes, and whether it was cut."""
    raw = lifted.raw
    if not raw:
        return None, False
    if rules.redact_paths:
        if lifted.form is not Form.JSON:
            return OPAQUE_SAMPLE, False
        red = redact_value(lifted.value, (), rules)
        if red is not lifted.value:
            raw = orjson.dumps(red)
    if len(raw) > limit:
        return raw[:limit], True
    return raw, False


# One query parameter: (separator or start)(name)=(value). ';' separates too,
# as some servers read it so; cutting there only ever redacts more.
_QUERY_PARAM = re.compile(r"(^|[&;])([^&;=#]*)=([^&;#]*)")


class QueryRedaction:
    """Blanks the values of secret query parameters in a request target.

    Names match case-insensitively, and percent-decoded; the name and the rest
    of the target are kept byte for byte. A target without ``?``, or whose query
    names no secret, is returned as is after one search -- the access log calls
    this for every request.

        >>> q = QueryRedaction(("session",))
        >>> q.target("/a?x=1&Token=abc&session=s%20t&y")
        '/a?x=1&Token=REDACTED&session=REDACTED&y'
        >>> q.target("/a?q=token") == "/a?q=token", q.target("/titles/tt1") == "/titles/tt1"
        (True, True)
    """

    __slots__ = ("_screen", "names")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = ALWAYS_REDACTED_QUERY | {n.lower() for n in names}
        alternatives = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        # Either a secret name followed by '=', or a name with a '%' (possibly an encoded secret one).
        self._screen = re.compile(rf"[?&;](?:(?:{alternatives})|[^&;=#]*%[^&;=#]*)=", re.IGNORECASE)

    def target(self, target: str) -> str:
        """``target`` (path and query, or a whole URL) with secret query values replaced."""
        mark = target.find("?")
        if mark < 0 or self._screen.search(target, mark) is None:
            return target
        return target[: mark + 1] + _QUERY_PARAM.sub(self._param, target[mark + 1 :])

    def _param(self, m: re.Match[str]) -> str:
        sep, name, value = m.groups()
        if not value or unquote_plus(name).lower() not in self.names:
            return m.group(0)
        return f"{sep}{name}={QUERY_REDACTED}"


def configured_query_names(config: StranglerConfig) -> tuple[str, ...]:
    """Every ``redact_query`` name of the file: global, routes and fields.

    The access log is written before anything asks which rules a key merges,
    so it redacts every name configured anywhere (redacting more is harmless).
    """
    names = list(config.compare.redact_query)
    for owner in (*config.routes, *config.graphql.fields.values()):
        if owner.compare is not None:
            names.extend(owner.compare.redact_query)
    return tuple(dict.fromkeys(names))


# ------------------------------------------------------------ what the store writes


def concrete_path(text: str) -> Path | None:
    """A rendered path (``$.cast[3].name``) back as segments; ``None`` when it
    is not a concrete JSON path (e.g. a header name)."""
    try:
        pattern = parse_path(text)
    except ConfigError:
        return None
    out: list[str | int | Keyed] = []
    for seg in pattern:
        tag = seg[0]
        if tag == "k":
            out.append(seg[1])
        elif tag == "i":
            out.append(seg[1])
        elif tag == "kv":
            out.append(Keyed(seg[1], seg[2]))
        else:
            return None  # wildcards: not a concrete path
    return tuple(out)


class Redaction:
    """The redaction rules of one key (its merged compare config)."""

    def __init__(self, config: CompareConfig | None = None) -> None:
        self.rules = compile_rules(config)
        self.query = QueryRedaction(config.redact_query if config is not None else ())

    def target(self, target: str) -> str:
        """A request target with the values of secret query parameters replaced."""
        return self.query.target(target)

    def is_secret_header(self, name: str) -> bool:
        return name.lower() in self.rules.redact_headers

    def matches_path(self, path: str) -> bool:
        """Is a rendered path at or under a ``redact_paths`` pattern?"""
        if not self.rules.redact_paths:
            return False
        segs = concrete_path(path)
        return segs is not None and self.rules.is_redacted(segs)

    def json_value(self, value: Any, path: str) -> Any:
        """A decoded JSON value found at ``path``, secrets replaced."""
        if not self.rules.redact_paths:
            return value
        segs = concrete_path(path)
        return redact_value(value, segs if segs is not None else (), self.rules)

    def json_bytes(self, body: bytes) -> bytes:
        """A body with its secret JSON members replaced. With ``redact_paths``
        configured, a body that does not parse as JSON (binary, text, or cut
        short) cannot be searched, so none of it is kept -- the comparator's
        rule too."""
        if not self.rules.redact_paths or body == OPAQUE_SAMPLE:
            return body
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return OPAQUE_SAMPLE
        redacted = redact_value(decoded, (), self.rules)
        return body if redacted is decoded else orjson.dumps(redacted)

    def headers_in(self, value: Any) -> Any:
        """Walk anything that may carry headers -- mappings, lists of
        ``(name, value)`` pairs, nested -- and blank the secret ones."""
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if isinstance(k, str) and self.is_secret_header(k) else self.headers_in(v))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            if len(value) == 2 and isinstance(value[0], str) and self.is_secret_header(value[0]):
                return [value[0], REDACTED]
            return [self.headers_in(v) for v in value]
        return value


def redactions_for(config: StranglerConfig | None) -> Callable[[str], Redaction]:
    """Per key, the merged global + route/field redaction rules (cached)."""
    cache: dict[str, Redaction] = {}
    default = Redaction(config.compare if config else None)

    def lookup(key: str) -> Redaction:
        hit = cache.get(key)
        if hit is None:
            target = configured_for_key(config, key)
            hit = default if config is None or target is None else Redaction(config.compare_for(target))
            cache[key] = hit
        return hit

    return lookup
