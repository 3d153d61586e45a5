"""Asking a running proxy's admin API without giving up when it does not answer.

``strangler plan`` needs the answer (no proxy: no plan); ``strangler progress``
can do without it (it falls back to the file and the control database). Both
want the failure as one sentence instead of an exit, so they decide what it
means. The proxy is found as ``strangler routes`` finds it
(:func:`~strangler_proxy.cli.proxy_commands.admin_target`).

    >>> answer = AdminAnswer("http://127.0.0.1:9901", None, "401: send Authorization: Bearer <admin token>")
    >>> answer.ok
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strangler_proxy.cli.proxy_commands import AdminCallFailed, admin_call, admin_target

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class AdminAnswer:
    """The JSON body of a 2xx answer, or why there is none (``problem``)."""

    url: str
    body: Any
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def admin_get(config_path: str, admin_url: str | None, token: str | None, path: str,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> AdminAnswer:
    """GET ``path`` of the admin API; never raises for a failure of the call (``problem`` is the
    one line :func:`~strangler_proxy.cli.proxy_commands.admin_call` gives, as ``strangler routes``
    prints it)."""
    url, tok = admin_target(config_path, admin_url, token)
    try:
        return AdminAnswer(url, admin_call(url, tok, "GET", path, timeout_s=timeout_s))
    except AdminCallFailed as exc:
        return AdminAnswer(url, None, str(exc))
