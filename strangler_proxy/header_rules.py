"""Per-upstream request headers: ``upstreams.<name>.headers`` (``set``/``remove``).

An extracted service often authenticates differently from the monolith: it
wants its own ``Authorization`` and no session ``Cookie``. Each upstream may
remove request headers and set others (values may name ``${ENV_VAR}``s,
resolved from the environment once per upstream client, see
:meth:`~strangler_proxy.config.HeaderRules.resolved`).

The rules of an upstream are applied where a request is sent *to that
upstream* (the forwarder's client, the GraphQL backend client), never to the
headers the proxy keeps: the served request's headers are what a mirror
copies and what a shadow sample records, so the served upstream's rules never
reach another upstream and a resolved secret is never recorded.

A rule cannot touch what the proxy owns: the message framing and hop-by-hop
headers (the forwarder's), ``Host`` (``host_header`` decides it) and the
``X-Strangler-*`` headers (a rule must not be able to cancel a dry run).
The client's ``X-Strangler-*`` headers are gone before the rules run and the
proxy's own pass them untouched.

    >>> rules = HeaderRuleSet.build([("Authorization", "Bearer t0k")], ["Cookie"])
    >>> apply_header_rules([("Host", "a"), ("cookie", "s=1"), ("authorization", "Basic x"), ("Accept", "*/*")], rules)
    [('Host', 'a'), ('Accept', '*/*'), ('Authorization', 'Bearer t0k')]
    >>> HeaderRuleSet.build([], []) is None
    True
    >>> rule_problem("X-Strangler-Dry-Run") is not None, rule_problem("Content-Length") is not None
    (True, True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from strangler_proxy.headers import CONTROL_PREFIX

# What the forwarder and the proxy own; a rule may neither set nor remove them.
PROTECTED = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te",
    "trailer", "upgrade", "expect",
})
_CONTROL = CONTROL_PREFIX.decode()
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110 field-name


def rule_problem(name: str) -> str | None:
    """Why a rule may not name the header ``name``, or None."""
    if not _TOKEN.fullmatch(name):
        return f"{name!r} is not a header name"
    lower = name.lower()
    if lower in PROTECTED or lower.startswith(_CONTROL):
        return (f"{name} is the proxy's to set (framing, hop-by-hop, Host and X-Strangler-* headers "
                "cannot be changed by a rule)")
    return None


@dataclass(frozen=True, slots=True)
class HeaderRuleSet:
    """An upstream's rules, compiled once: the headers to add and the lower-case
    names to drop first (every removed name, and every set one, so a set header
    replaces the client's instead of repeating it)."""

    add: tuple[tuple[str, str], ...]
    drop: frozenset[str]

    @classmethod
    def build(cls, set_headers: Iterable[tuple[str, str]], remove: Iterable[str]) -> HeaderRuleSet | None:
        """The compiled rules, or None when there are none (nothing to do per request)."""
        add = tuple(set_headers)
        drop = frozenset(n.lower() for n in remove) | frozenset(k.lower() for k, _ in add)
        return cls(add, drop) if drop else None


def apply_header_rules(headers: Sequence[tuple[str, str]], rules: HeaderRuleSet) -> list[tuple[str, str]]:
    """``headers`` without the dropped names, plus the set ones placed before
    the proxy's own ``X-Strangler-*`` headers (a mirror's shadow and dry-run
    markers, which come last); a new list, the input is left as it was.

        >>> rules = HeaderRuleSet.build([("Authorization", "Bearer t")], ())
        >>> apply_header_rules([("Accept", "*/*"), ("X-Strangler-Shadow", "1")], rules)
        [('Accept', '*/*'), ('Authorization', 'Bearer t'), ('X-Strangler-Shadow', '1')]
    """
    drop = rules.drop
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    at = len(out)
    while at and out[at - 1][0].lower().startswith(_CONTROL):
        at -= 1
    out[at:at] = rules.add
    return out
