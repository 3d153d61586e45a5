"""The store's last line of defence against secrets.

The comparator already redacts (``strangler_proxy.redact``) before a result is
emitted; the store applies the very same rules again to whatever it is about
to write -- sample bodies, the values of differences, any headers carried
in ``result.extra`` and the secret query values of the request target -- so a
result that reached the writer by another way still never puts a secret in
the database. Path matching and value redaction
are the comparator's own (``rules`` / ``redact``); this module only adapts them
to what the store holds (rendered path strings, raw bytes, nested extras).

    >>> from strangler_proxy.config import CompareConfig
    >>> r = Redaction(CompareConfig(redact_paths=("$..token",)))
    >>> r.json_bytes(b'{"a": {"token": "s3cret"}, "b": 1}')
    b'{"a":{"token":"[REDACTED]"},"b":1}'
    >>> r.matches_path("$.a.token"), r.matches_path("$.a.tokens")
    (True, False)
    >>> r.target("/api/titles/tt1?api_key=k3y&lang=en")
    '/api/titles/tt1?api_key=REDACTED&lang=en'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from strangler_proxy.config import CompareConfig, StranglerConfig
from strangler_proxy.errors import ConfigError
from strangler_proxy.redact import OPAQUE_SAMPLE, REDACTED, QueryRedaction, redact_value
from strangler_proxy.rules import Keyed, Path, compile_rules, parse_path
from strangler_proxy.store.keys import configured_for_key

__all__ = ["REDACTED", "Redaction", "redactions_for"]


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
