"""strangler: migrate a monolith to services one REST route or GraphQL field at a time.

The map of the package (docs/architecture.md has the long version), in the
order a request meets it:

- ``config``      strangler.yaml, validated once and frozen
- ``router``      the immutable route table (raw-path matching, precedence)
- ``canary``      sticky percentage split by a partition key
- ``proxy_app``   the request handler: match -> choose side -> forward -> shadow hand-off
- ``connections`` client connections: head/idle timeouts, the connection cap, the proxy's own pages
- ``forwarder``   the streaming upstream call (aiohttp client, hop-by-hop, X-Forwarded-*)
- ``shadow``      bounded queue + workers mirroring requests off the hot path
- ``comparator``  a ShadowPair in, a ShadowResult out (``lifter``, ``differ``,
                  ``rules``/``jsonpath``, ``noise``, ``redact``)
- ``store``       results written in batches; ``report`` and ``readiness`` read them
- ``flips``, ``state_store``, ``admin``, ``reload``, ``guardrails``: the control plane
- ``graphql``     the gateway: compose, plan, execute, shape, shadow fields
- ``server``      assembles one running proxy replica; ``cli`` is the ``strangler`` command

Errors are all :class:`~strangler_proxy.errors.StranglerError` subclasses.
"""

from strangler_proxy.config import StranglerConfig, load_config
from strangler_proxy.errors import StranglerError

__all__ = ["StranglerConfig", "StranglerError", "load_config"]
