"""What a request's method allows: safe methods (RFC 9110 §9.2.1) may be sent
twice -- mirrored, sampled for noise, rechecked, retried -- every other method
is a write, mirrored only as a dry run and never repeated.

    >>> "GET" in SAFE_METHODS, "POST" in SAFE_METHODS
    (True, False)
"""

from __future__ import annotations

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
