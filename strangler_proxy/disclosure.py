"""Who may learn which backend answered.

Which upstream served a REST answer (the ``X-Strangler-Served-By`` response
header) and which backend resolved each GraphQL field
(``extensions.strangler.servedBy``, ``serviceName`` on a backend's errors) is
the system's inner layout: it is shown only when ``graphql.expose_served_by``
is on, or to a request that carries a valid admin token in
``X-Strangler-Admin-Token`` -- never to an anonymous client by default.

The header is read here, before anything is forwarded; the forwarder drops it
with every other client-sent ``X-Strangler-*`` header, so no backend sees it.

    >>> matching_token({"ops": "s3cret"}, "s3cret")
    'ops'
    >>> matching_token({"ops": "s3cret"}, "guess") is None
    True
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from strangler_proxy.config import StranglerConfig
from strangler_proxy.headers import ADMIN_TOKEN_HEADER


def matching_token(tokens: Mapping[str, str], presented: str) -> str | None:
    """The name of the token ``presented`` is, or None.

    Compared with every token in constant time, so the answer's timing tells
    nothing about how much of a token was right, nor which one matched.
    """
    given = presented.encode()
    found: str | None = None
    for name, token in tokens.items():
        if hmac.compare_digest(token.encode(), given):
            found = name
    return found


def may_disclose(config: StranglerConfig, headers: Mapping[str, str]) -> bool:
    """Whether this request may be told which backend answered it.

    Cheap when it is not: one attribute and one header lookup; the tokens are
    read (``config.admin_tokens()``, so the environment's token counts too)
    only when the request presents one.
    """
    if config.graphql.expose_served_by:
        return True
    presented = headers.get(ADMIN_TOKEN_HEADER)
    if not presented:
        return False
    return matching_token(config.admin_tokens(), presented.strip()) is not None
