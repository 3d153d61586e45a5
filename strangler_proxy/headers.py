"""The ``X-Strangler-*`` headers: the proxy's own protocol with the services.

Only the proxy sets them. Every header a client sends under
:data:`CONTROL_PREFIX` is removed before anything is forwarded (served
requests, mirrors, fallbacks, GraphQL backend fetches), so a client can never
pose as the proxy: a mirror carries exactly one :data:`SHADOW_HEADER` and, for
a write, exactly one :data:`DRY_RUN_HEADER`, and services accept a dry run only
as exactly that value.

    >>> b"x-strangler-dry-run".startswith(CONTROL_PREFIX)
    True
"""

from __future__ import annotations

CONTROL_PREFIX = b"x-strangler-"  # lower-case, as the forwarder compares raw header names
SHADOW_HEADER = ("X-Strangler-Shadow", "1")  # on every mirrored request
DRY_RUN_HEADER = ("X-Strangler-Dry-Run", "1")  # on every mirrored write: the service rolls it back
FALLBACK_HEADER = "X-Strangler-Fallback"  # on an answer legacy gave after the target failed
SERVED_BY_HEADER = "X-Strangler-Served-By"  # on an answer, naming its upstream (only when disclosure.py allows)
CELL_HEADER = "X-Strangler-Cell"  # the GraphQL gateway's loopback server -> the data plane: the cell that served
ADMIN_TOKEN_HEADER = "X-Strangler-Admin-Token"  # a client asking to be told who served it (read, never forwarded)
