"""Lift a response into the canonical form it is compared in.

Like Diffy's lifters: before two answers are compared each is turned into a
value whose equality means "the same answer" -- parsed JSON (member order and
whitespace no longer matter), text, or a SHA-256 of binary content -- plus the
status and the allow-listed headers.

    >>> lift_body(b'{"b": 1, "a": [true]}', "application/json; charset=utf-8").value
    {'b': 1, 'a': [True]}
    >>> lift_body(b"<p>hi</p>", "text/html").form
    <Form.TEXT: 'text'>
    >>> media_type("Application/JSON ; charset=UTF-8")
    'application/json'
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any, NamedTuple

import orjson

from strangler_proxy.diff.exchange import Exchange


class Form(str, enum.Enum):
    JSON = "json"
    TEXT = "text"
    BINARY = "binary"  # value: "sha256:<hex>"
    EMPTY = "empty"


class Lifted(NamedTuple):
    """One body in canonical form; ``raw`` kept for the byte-equal fast path
    and for samples. (A NamedTuple: immutable and cheap to build, two per
    comparison.)"""

    form: Form
    value: Any
    raw: bytes
    # True when the raw bytes contain no JSON literal true/false: Python's ==
    # then cannot confuse True with 1, so whole subtrees may be compared with
    # one C-level == (see differ).
    boolfree: bool = False


_media_types: dict[str, str | None] = {}  # a service sends few distinct Content-Types
_MEDIA_CACHE_LIMIT = 1024


def media_type(content_type: str | None) -> str | None:
    """``type/subtype`` lower-cased, parameters (charset, boundary) dropped."""
    if not content_type:
        return None
    mt = _media_types.get(content_type)
    if mt is None:
        mt = content_type.split(";", 1)[0].strip().lower() or None
        if len(_media_types) < _MEDIA_CACHE_LIMIT:
            _media_types[content_type] = mt
    return mt


def _is_json_type(mt: str | None) -> bool:
    return mt is not None and (mt == "application/json" or mt.endswith("+json"))


def _is_text_type(mt: str | None) -> bool:
    return mt is not None and (
        mt.startswith("text/") or mt.endswith("+xml") or mt in ("application/xml", "application/javascript")
    )


def lift_body(body: bytes, content_type: str | None = None) -> Lifted:
    """Canonical form of a body. JSON is tried when the media type says JSON,
    when there is none, or when the body looks like an object/array under any
    type but HTML (some monoliths send JSON as text/plain)."""
    if not body:
        return Lifted(Form.EMPTY, None, body)
    mt = media_type(content_type)
    if (
        mt is None  # e.g. a GraphQL subtree handed over as bare JSON: 8.5, "x", null
        or _is_json_type(mt)
        or (mt != "text/html" and body.lstrip()[:1] in (b"{", b"["))
    ):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            return Lifted(Form.JSON, value, body, b"true" not in body and b"false" not in body)
    if not body.strip():
        return Lifted(Form.EMPTY, None, body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        if _is_text_type(mt):
            return Lifted(Form.TEXT, body.decode("utf-8", errors="replace"), body)
        return Lifted(Form.BINARY, f"sha256:{hashlib.sha256(body).hexdigest()}", body)
    return Lifted(Form.TEXT, text, body)


def lift(exchange: Exchange) -> Lifted:
    """Lift the response body of one exchange."""
    return lift_body(exchange.body, exchange.header("content-type"))


def canonical_header(name: str, value: str | None) -> str | None:
    """Headers are compared after this: Content-Type by media type only (a
    charset parameter or its spacing is not a difference); others with runs of
    whitespace collapsed."""
    if value is None:
        return None
    if name == "content-type":
        return media_type(value)
    return " ".join(value.split())


def header_values(headers: tuple[tuple[str, str], ...], names: tuple[str, ...]) -> dict[str, str | None]:
    """Allow-listed headers (lower-case names); repeated headers joined by ", "."""
    if len(names) == 1:  # the default allowlist: just Content-Type
        name = names[0]
        values = [v for k, v in headers if k.lower() == name]
        return {name: canonical_header(name, ", ".join(values)) if values else None}
    found: dict[str, list[str]] = {}
    wanted = set(names)
    for k, v in headers:
        lk = k.lower()
        if lk in wanted:
            found.setdefault(lk, []).append(v)
    return {n: canonical_header(n, ", ".join(found[n])) if n in found else None for n in names}
