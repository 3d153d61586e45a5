"""The decisions: pure functions over immutable tables, no I/O.

- ``router``  :class:`~strangler_proxy.routing.router.RouteTable` -- which
              route a request is (raw-path templates, methods, headers,
              precedence); built, validated and swapped whole on a flip or reload
- ``canary``  which side serves a partition key at a percent
              (:func:`~strangler_proxy.routing.canary.serves_target`), the same
              for every route and GraphQL field split by the same key
- ``methods`` which methods are safe to send twice (mirror, noise sample, recheck, retry)
- ``endpoints`` which endpoint of an upstream serves a request
              (:func:`~strangler_proxy.routing.endpoints.choose_endpoint`:
              priorities, failover threshold, panic, drain, zone pin)

The data plane, the GraphQL executor and the tests all call these.
"""
