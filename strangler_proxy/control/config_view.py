"""The running config as the admin API shows it: every setting, no secret.

:func:`config_view` turns a :class:`~strangler_proxy.config.StranglerConfig`
into plain JSON data (what ``GET /config`` answers and what ``strangler plan``
compares a file with). Both sides of a comparison go through this one
function, so a redacted value compares equal to itself and the plan never
needs the secret to say what changed around it.

What is hidden, and why:

- ``proxy.admin_tokens``: the names stay (they are who the audit log records),
  every value becomes :data:`REDACTED`;
- passwords in database URLs (``databases.*``, ``store.url``) and in upstream
  and endpoint URLs (``http://user:secret@host``) become ``***``;
- the values of an upstream's ``headers.set``: one that only names environment
  variables (``Bearer ${RATINGS_TOKEN}``) is shown as written -- the secret is
  in the environment, never read here --, any other value is :data:`REDACTED`;
- the ``stack:`` section is left out: the proxy never reads it (``strangler up``
  does, at start) and its command lines may carry anything.

    >>> from strangler_proxy.config import load_config_text
    >>> cfg = load_config_text('''
    ... proxy: {admin_tokens: {ops: s3cret}}
    ... upstreams:
    ...   legacy: {url: "http://app:pw@127.0.0.1:8001"}
    ...   ratings: {url: "http://127.0.0.1:8101", headers: {set: {X-Key: "k3y", Authorization: "Bearer ${HOME}"}}}
    ... databases: {control: "postgresql+asyncpg://strangler:pw@db/control"}
    ... ''')
    >>> view = config_view(cfg)
    >>> view["proxy"]["admin_tokens"], view["upstreams"]["legacy"]["url"], view["databases"]["control"]
    ({'ops': '[REDACTED]'}, 'http://app:***@127.0.0.1:8001', 'postgresql+asyncpg://strangler:***@db/control')
    >>> view["upstreams"]["ratings"]["headers"]["set"]
    {'X-Key': '[REDACTED]', 'Authorization': 'Bearer ${HOME}'}
    >>> "stack" in view
    False
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from strangler_proxy.config import StranglerConfig

REDACTED = "[REDACTED]"
HIDDEN_PASSWORD = "***"
LEFT_OUT = ("stack",)  # sections the proxy does not read
# An upstream's headers.set value that only names environment variables, after an
# optional auth scheme ("Bearer ${RATINGS_TOKEN}"): it says where the secret is, not what.
_NAMES_ONLY = re.compile(r"(?:[A-Za-z][A-Za-z0-9_-]* )?(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")


def _database_url(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return REDACTED  # not a URL SQLAlchemy reads: show nothing of it


def shown_http_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***`` (how every admin answer and the audit
    log name an endpoint).

    >>> shown_http_url("http://app:pw@10.0.0.1:8001"), shown_http_url("http://10.0.0.1:8001")
    ('http://app:***@10.0.0.1:8001', 'http://10.0.0.1:8001')
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN_PASSWORD}@{host}"))


def _header_value(value: str) -> str:
    """A value that only names environment variables is shown as written (it holds no secret); any other is hidden."""
    return value if _NAMES_ONLY.fullmatch(value) else REDACTED


def config_view(config: StranglerConfig) -> dict[str, Any]:
    """Every setting of ``config`` as JSON data, secrets hidden (see the module docstring)."""
    view = config.model_dump(mode="json", exclude=set(LEFT_OUT))
    proxy = view["proxy"]
    proxy["admin_tokens"] = {name: REDACTED for name in proxy["admin_tokens"]}
    view["databases"] = {name: _database_url(url) for name, url in view["databases"].items()}
    view["store"]["url"] = _database_url(view["store"]["url"])
    for upstream in view["upstreams"].values():
        if upstream["url"] is not None:
            upstream["url"] = shown_http_url(upstream["url"])
        for endpoint in upstream["endpoints"]:
            endpoint["url"] = shown_http_url(endpoint["url"])
        rules = upstream["headers"]
        rules["set"] = {name: _header_value(value) for name, value in rules["set"].items()}
    return view
