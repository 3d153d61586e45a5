"""The JSON path language of the diff engine: segments, patterns, rendering.

Paths are carried while diffing as tuples of segments -- ``str`` (object
member), ``int`` (list index) or :class:`Keyed` (an element of a list matched
by a key field) -- and rendered to text only when a difference is reported::

    ("cast", 3, "name")                   -> $.cast[3].name
    ("images", Keyed("id", "rm1"), "url") -> $.images[id=rm1].url
    ("weird key",)                        -> $['weird key']

Pattern syntax (ignore, unordered, list_keys, normalise, redact_paths):
``$`` the root, ``.name`` or ``['name']`` a member, ``[3]`` an index,
``[id=rm1]`` a keyed element, ``*`` / ``[*]`` any one segment (member, index
or keyed element), ``..`` any depth (zero or more segments).

    >>> p = parse_path("$..request_id")
    >>> path_matches(p, ("items", 2, "request_id"))
    True
    >>> render_path(("images", Keyed("id", "rm1"), "url"))
    '$.images[id=rm1].url'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from strangler_proxy.errors import ConfigError

# Rendered member names are memoised up to this many distinct names.
_MEMBER_CACHE_LIMIT = 20_000


class Keyed(NamedTuple):
    """Path segment of a list element matched by ``field`` == ``value``.
    (A NamedTuple: hashable, immutable and cheap -- one per keyed element.)"""

    field: str
    value: Any


Segment = str | int | Keyed
Path = tuple[Segment, ...]

# ------------------------------------------------------------ rendering

_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
_BARE_VALUE = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")


def _key_text(value: Any) -> str:
    """Text of a key field value as it appears inside ``[field=...]``."""
    if isinstance(value, str):
        if _BARE_VALUE.match(value) and not _NUMBER.match(value):
            return value
        return orjson.dumps(value).decode()
    return orjson.dumps(value).decode()


_member_text: dict[str, str] = {}  # member name -> ".name" / "['a b']" (names repeat a lot)


def render_segment(seg: Segment) -> str:
    if type(seg) is str:
        text = _member_text.get(seg)
        if text is None:
            text = "." + seg if _BARE_KEY.match(seg) else "[" + _quote(seg) + "]"
            if len(_member_text) < _MEMBER_CACHE_LIMIT:
                _member_text[seg] = text
        return text
    if type(seg) is int:
        return f"[{seg}]"
    if isinstance(seg, Keyed):
        return f"[{seg.field}={_key_text(seg.value)}]"
    return "[*]"


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_path(path: Sequence[Segment]) -> str:
    """``("cast", 3, "name")`` -> ``$.cast[3].name``."""
    return "$" + "".join(render_segment(s) for s in path)


def generalise_path(path: Sequence[Segment]) -> str:
    """Render with every list position replaced by ``[*]``: how learned noise
    is keyed, so ``$.items[3].ts`` and ``$.items[7].ts`` are one noise path."""
    return "$" + "".join("[*]" if type(s) is not str else render_segment(s) for s in path)


def generalised_prefixes(path: Sequence[Segment]) -> list[str]:
    """``$``, ``$.items``, ``$.items[*]``, ``$.items[*].ts`` for ``("items", 3, "ts")``."""
    out = ["$"]
    acc = "$"
    for s in path:
        acc += "[*]" if type(s) is not str else render_segment(s)
        out.append(acc)
    return out


# ------------------------------------------------------------ patterns

_ANY = ("*",)
_DESCEND = ("..",)
DESCEND = _DESCEND  # the ".." pattern segment: zero or more path segments
PatternSeg = tuple[Any, ...]
Pattern = tuple[PatternSeg, ...]


def parse_path(text: str) -> Pattern:
    """Parse a path pattern; raise :class:`ConfigError` saying what is wrong."""
    s = text.strip()
    if not s.startswith("$"):
        raise ConfigError(f"path {text!r} must start with '$' (e.g. $.items[*].id)")
    i, n = 1, len(s)
    out: list[PatternSeg] = []
    while i < n:
        c = s[i]
        if c == ".":
            if s.startswith("..", i):
                out.append(_DESCEND)
                i += 2
                if i < n and s[i] == "[":
                    continue
            else:
                i += 1
            j = i
            while j < n and s[j] not in ".[":
                j += 1
            name = s[i:j]
            if not name:
                raise ConfigError(f"path {text!r}: empty member name at position {i}")
            out.append(_ANY if name == "*" else ("k", name))
            i = j
        elif c == "[":
            seg, i = _parse_bracket(s, i + 1, text)
            out.append(seg)
        else:
            raise ConfigError(f"path {text!r}: unexpected {c!r} at position {i}")
    if out and out[-1] is _DESCEND:
        raise ConfigError(f"path {text!r}: '..' must be followed by a member")
    return tuple(out)


def _parse_bracket(s: str, i: int, text: str) -> tuple[PatternSeg, int]:
    if i < len(s) and s[i] in "'\"":
        value, i = _parse_quoted(s, i, text)
        if not s.startswith("]", i):
            raise ConfigError(f"path {text!r}: expected ']' after a quoted member")
        return ("k", value), i + 1
    end = s.find("]", i)
    if end < 0:
        raise ConfigError(f"path {text!r}: unclosed '['")
    body = s[i:end]
    if body == "*":
        return _ANY, end + 1
    if re.fullmatch(r"-?\d+", body):
        return ("i", int(body)), end + 1
    if "=" in body:
        field, _, raw = s[i:].partition("=")
        j = i + len(field) + 1
        if j < len(s) and s[j] in "'\"":
            value, j = _parse_quoted(s, j, text)
            if not s.startswith("]", j):
                raise ConfigError(f"path {text!r}: expected ']' after a quoted key value")
            return ("kv", field.strip(), _key_text(value)), j + 1
        return ("kv", field.strip(), raw[: end - j].strip()), end + 1
    raise ConfigError(f"path {text!r}: '[{body}]' is not [*], [N], ['name'] or [field=value]")


def _parse_quoted(s: str, i: int, text: str) -> tuple[str, int]:
    quote = s[i]
    out = []
    j = i + 1
    while j < len(s):
        c = s[j]
        if c == "\\" and j + 1 < len(s):
            out.append(s[j + 1])
            j += 2
            continue
        if c == quote:
            return "".join(out), j + 1
        out.append(c)
        j += 1
    raise ConfigError(f"path {text!r}: unterminated quoted name")


def seg_matches(p: PatternSeg, seg: Segment) -> bool:
    """Does one (non-``..``) pattern segment match one path segment?"""
    tag = p[0]
    if tag == "*":
        return True
    if tag == "k":
        return type(seg) is str and seg == p[1]
    if tag == "i":
        return type(seg) is int and seg == p[1]
    # "kv"
    return isinstance(seg, Keyed) and seg.field == p[1] and _key_text(seg.value) == p[2]


def path_matches(pattern: Pattern, path: Sequence[Segment], *, prefix: bool = False) -> bool:
    """Does ``pattern`` match the whole ``path`` (or, with ``prefix``, any
    prefix of it -- the path lies at or under a matching node)?"""
    return _match(pattern, 0, path, 0, prefix)


def _match(pat: Pattern, i: int, path: Sequence[Segment], j: int, prefix: bool) -> bool:
    np, n = len(pat), len(path)
    while i < np:
        p = pat[i]
        if p is _DESCEND:
            return any(_match(pat, i + 1, path, k, prefix) for k in range(j, n))
        if j >= n or not seg_matches(p, path[j]):
            return False
        i += 1
        j += 1
    return prefix or j == n
