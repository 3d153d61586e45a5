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

import httpx

from strangler_proxy.cli.proxy_commands import admin_target

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


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    return f"{response.status_code}: {message or response.text.strip()[:200] or response.reason_phrase}"


def admin_get(config_path: str, admin_url: str | None, token: str | None, path: str,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> AdminAnswer:
    """GET ``path`` of the admin API; never raises for a failure of the call."""
    url, tok = admin_target(config_path, admin_url, token)
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as client:
            response = client.get(path)
    except httpx.HTTPError as exc:
        return AdminAnswer(url, None, f"cannot reach the admin API at {url} ({exc.__class__.__name__})")
    if response.status_code >= 400:
        return AdminAnswer(url, None, f"the admin API at {url} answered {_error_message(response)}")
    try:
        return AdminAnswer(url, response.json())
    except ValueError:
        return AdminAnswer(url, None, f"the admin API at {url} answered {path} with something that is not JSON")
