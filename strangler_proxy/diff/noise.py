"""Learned noise: what legacy disagrees with itself about.

As in Diffy, some safe requests are sent to legacy twice; every path where the
two legacy answers differ is volatile for that key (route name or
``graphql:Type.field``) -- a timestamp, a request id, an unstable order -- and
a candidate difference on it (or under it) is noise, not a mismatch. Paths are
kept generalised (``$.items[3].ts`` is learned as ``$.items[*].ts``).

    >>> m = NoiseModel()
    >>> m.learn("titles", ["$.generated_at", "$.items[*].ts"])
    >>> m.explains("titles", ["$", "$.items", "$.items[*]", "$.items[*].ts"])
    '$.items[*].ts'
    >>> m.snapshot()
    {'titles': [('$.generated_at', 1), ('$.items[*].ts', 1)]}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from strangler_proxy.config import CompareConfig
from strangler_proxy.errors import NoiseModelError
from strangler_proxy.routing.methods import SAFE_METHODS  # only these are sent to legacy twice

NOISE_FORMAT_VERSION = 1


def wants_noise_sample(rules: CompareConfig, method: str, draw: float) -> bool:
    """For the shadow path: should this request also go to legacy a second
    time (``ShadowPair.legacy_again``)? ``draw`` is uniform in [0, 1).
    Unset ``noise_sample_rate`` means never; unsafe methods never.

        >>> wants_noise_sample(CompareConfig(noise_sample_rate=0.1), "GET", 0.05)
        True
        >>> wants_noise_sample(CompareConfig(noise_sample_rate=1.0), "POST", 0.0)
        False
    """
    rate = rules.noise_sample_rate
    return rate is not None and draw < rate and method.upper() in SAFE_METHODS


class NoiseModel:
    """Per key: generalised path -> how often legacy differed from itself there.

    Thread-safe; ``explains`` reads an immutable per-key set, swapped whole
    when a new path is learned, so the comparison path never takes the lock.
    """

    def __init__(self, min_count: int = 1) -> None:
        # A path becomes noise once learned this many times (1: at once, as a
        # single legacy-vs-legacy difference already proves the path volatile).
        self.min_count = min_count
        self._counts: dict[str, dict[str, list[float]]] = {}  # key -> path -> [count, last_seen]
        self._samples: dict[str, int] = {}
        self._active: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def observe(self, key: str) -> None:
        """Count one legacy-vs-legacy sample for ``key`` (with or without differences)."""
        with self._lock:
            self._samples[key] = self._samples.get(key, 0) + 1

    def learn(self, key: str, paths: Iterable[str], *, at: float | None = None) -> None:
        """Record generalised ``paths`` that differed between two legacy answers."""
        now = time.time() if at is None else at
        with self._lock:
            per_key = self._counts.setdefault(key, {})
            changed = False
            for p in set(paths):
                entry = per_key.get(p)
                if entry is None:
                    per_key[p] = entry = [0, now]
                entry[0] += 1
                entry[1] = now
                if entry[0] == self.min_count:
                    changed = True
            if changed:
                self._active[key] = frozenset(p for p, (c, _) in per_key.items() if c >= self.min_count)

    def explains(self, key: str, prefixes: Sequence[str]) -> str | None:
        """The noise path covering a difference, given its generalised path
        and all its prefixes (noise at ``$.a`` covers ``$.a.b``); else None."""
        active = self._active.get(key)
        if not active:
            return None
        for p in prefixes:
            if p in active:
                return p
        return None

    def paths(self, key: str) -> frozenset[str]:
        return self._active.get(key, frozenset())

    def snapshot(self) -> dict[str, list[tuple[str, int]]]:
        """Every key's learned noise paths with their counts, for reports."""
        with self._lock:
            return {
                key: sorted((p, int(c)) for p, (c, _) in per_key.items() if c >= self.min_count)
                for key, per_key in sorted(self._counts.items())
            }

    def samples(self, key: str) -> int:
        """How many legacy-vs-legacy samples ``key`` has had."""
        return self._samples.get(key, 0)

    def to_json(self) -> bytes:
        """Serialise everything learned (for the store to persist)."""
        with self._lock:
            doc: dict[str, Any] = {
                "version": NOISE_FORMAT_VERSION,
                "min_count": self.min_count,
                "keys": {
                    key: {
                        "samples": self._samples.get(key, 0),
                        "paths": {p: {"count": int(c), "last_seen": t} for p, (c, t) in per_key.items()},
                    }
                    for key, per_key in self._counts.items()
                },
            }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> NoiseModel:
        """Rebuild a model saved with :meth:`to_json`."""
        try:
            doc = orjson.loads(data)
            if doc.get("version") != NOISE_FORMAT_VERSION:
                raise ValueError(f"unknown noise format version {doc.get('version')!r}")
            model = cls(min_count=int(doc.get("min_count", 1)))
            for key, entry in doc["keys"].items():
                model._samples[key] = int(entry.get("samples", 0))
                per_key = model._counts.setdefault(key, {})
                for p, v in entry["paths"].items():
                    per_key[p] = [int(v["count"]), float(v["last_seen"])]
                model._active[key] = frozenset(p for p, (c, _) in per_key.items() if c >= model.min_count)
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NoiseModelError(f"cannot read a saved noise model: {exc}") from exc
        return model
