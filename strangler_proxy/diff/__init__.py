"""The diff engine: two answers in, one verdict and its differences out.

- ``exchange``    what was observed: one side's request and answer, a shadow pair
- ``lifter``      an answer into a canonical form (JSON, text, bytes)
- ``differ``      two lifted forms into typed differences flattened to paths
- ``rules``       a ``compare:`` config compiled once (ignore, tolerances,
                  unordered lists, list keys, normalisers); path syntax in ``strangler_proxy.jsonpath``
- ``noise``       what legacy disagrees with itself about, learned and subtracted
- ``redaction``   secrets (headers, JSON paths, query values) never leave in clear,
                  and the store applies the same rules again
- ``comparator``  the :class:`~strangler_proxy.diff.comparator.Comparator`
                  protocol and :class:`~strangler_proxy.diff.comparator.DiffComparator`
- ``recheck``     :class:`~strangler_proxy.diff.recheck.Rechecker`: a mismatch on a read
                  asked again on both sides -- ``transient`` (replication lag) or a mismatch;
                  bounded, off the client's path (the shadow paths hand it the re-ask)
- ``result``      :class:`~strangler_proxy.diff.result.ShadowResult` and its verdicts
- ``keys``        what a result key names (a route, or ``graphql:Type.field``)
"""
