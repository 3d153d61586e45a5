"""The data plane: every client request, from the socket to the answer.

Follow a request top to bottom:

- ``listener``   the listening socket and client connections: an asyncio
                 protocol on httptools (raw head bytes, pipelining in order,
                 bodies streamed with backpressure, smuggling shapes refused,
                 head and idle timeouts, the connection cap, the proxy's own
                 error pages); :func:`~strangler_proxy.dataplane.listener.start_listener`
- ``handler``    :class:`~strangler_proxy.dataplane.handler.ProxyHandler`:
                 match (routing/) -> choose the side -> forward -> hand the
                 shadow off; :func:`~strangler_proxy.dataplane.handler.start_proxy`
- ``pool``       :class:`~strangler_proxy.dataplane.pool.Upstreams`: each
                 upstream's endpoints as one client (choose, retry within a
                 budget, eject failing endpoints)
- ``health``     :class:`~strangler_proxy.dataplane.health.EndpointBoard`:
                 every endpoint's health, load and switches, shared by all
                 pools (``runtime.endpoints``); the active health checks
- ``upstream``   the served path's endpoint connections: asyncio protocols on
                 httptools' response parser, pooled keep-alive per endpoint
- ``forwarder``  the header rules (hop-by-hop, ``X-Forwarded-*``, client
                 ``X-Strangler-*`` dropped), error translation, and the aiohttp
                 endpoint client the shadow path and the GraphQL gateway use
- ``shadow``     the mirror: a bounded queue and workers, never on the hot path;
                 results go to the diff engine (diff/)
- ``runtime``    the live route table, counters and metrics a handler reads
- ``accesslog``  one JSON line per request (secret query values redacted)
"""
